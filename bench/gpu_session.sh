#!/usr/bin/env bash
# The whole GPU job in one device call (docs/gpu.md). Every call of a session runs this same
# command; each carries one part staged by bench/gpu_stage.py (.gpu_stage/partN). The parts are
# kept in $SSJDN_STAGE on the machine; once all are there, the bundle is assembled, its wheels
# installed, and bench/gpu_session.py trains and measures, writing into $OUT as it goes.
#
#   bash bench/gpu_session.sh            # on the device, OUT set by the tool
#   OUT=/tmp/out bash bench/gpu_session.sh --tiny   # the CPU dry run (tests/test_gpu_session.py)
set -u -o pipefail
: "${OUT:?set OUT to the folder whose files come back}"
mkdir -p "$OUT"
if [ -z "${SSJDN_SESSION_TEED:-}" ]; then
  # Everything, this script's own lines too, goes to $OUT/log as well; the pipe (not a
  # background tee) makes sure the log is complete when the command returns.
  export SSJDN_SESSION_TEED=1
  bash "$0" "$@" 2>&1 | tee -a "$OUT/log"
  exit "${PIPESTATUS[0]}"
fi
STARTED=$(date +%s)
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python3}
STAGE=${SSJDN_STAGE:-/tmp/ssjdn_stage}
PARTS_FROM=${SSJDN_PARTS_FROM:-$REPO/.gpu_stage}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "== gpu_session.sh $(date -u +%FT%TZ) on $(hostname), python $($PY -c 'import sys; print(sys.version.split()[0])')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# 1. collect this call's part; assemble and install once all parts are here (exit 0 with a
#    note naming the parts still missing, so the next call knows what to carry).
$PY bench/gpu_session.py assemble --stage "$STAGE" --parts-from "$PARTS_FROM" || exit $?
[ -f "$STAGE/READY" ] || exit 0

# 2. the project from the repository, with the device's own torch: a folder `ssjdn` whose
#    packages are links to core/, training/, resources/ (pyproject's package-dir, without pip).
mkdir -p "$STAGE/pkg/ssjdn"
for part in core training resources; do ln -sfn "$REPO/$part" "$STAGE/pkg/ssjdn/$part"; done
export PYTHONPATH="$STAGE/pkg:$STAGE/site${PYTHONPATH:+:$PYTHONPATH}"
export SSJDN_WEIGHTS_DIR="$STAGE/bundle/weights"
echo "== assembled in $(( $(date +%s) - STARTED )) s; running the session"
$PY bench/gpu_session.py run --bundle "$STAGE/bundle" --out "$OUT" --started "$STARTED" "$@"
