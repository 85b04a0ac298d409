#!/usr/bin/env bash
# Installs the app into .venv (first run: about two minutes) and starts it on the shipped
# sample scene and default model. Extra arguments go to ssjdn-explorer.
# The install is skipped while .venv holds an install of this pyproject.toml (a stamp of its
# hash), so a later start takes about a second; a changed pyproject.toml installs again.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.ssjdn-installed
wanted="$( (sha256sum pyproject.toml 2>/dev/null || shasum -a 256 pyproject.toml) | cut -d' ' -f1)"   # Linux, macOS
if [ ! -x .venv/bin/ssjdn-explorer ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
  echo "$wanted" > "$stamp"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/ssjdn-explorer "$@"
