#!/usr/bin/env bash
# Installs the app into .venv (first run: about two minutes) and starts it on the shipped
# sample scene and default model. Extra arguments go to ssjdn-explorer.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/ssjdn-explorer "$@"
