#!/usr/bin/env bash
# Installs everything the tests need into .venv (first run: about two minutes) and runs them.
# pytest's exit code 5 ("no tests ran") is a failure here too.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
export QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
