#!/usr/bin/env bash
# One-command GPU check: scripts/gpu_check.sh OUT_DIR [--dry-run]
# Versions, `eager` / `compile` (CUDA graphs) / `tensorrt` (when installed) latency and start-up
# on the demo and vitb16 configs, fp16/bf16 error vs fp32; writes OUT_DIR/gpu_check.json and
# OUT_DIR/gpu_check.md. Needs only this checkout, Python 3.10+, torch and PyYAML: no network,
# no ROS, no venv (set PYTHON to pick the interpreter). Without CUDA, or with --dry-run: the
# tiny config on the CPU, in seconds. Under 8 minutes (the check keeps a 7-minute budget).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
    echo "usage: scripts/gpu_check.sh OUT_DIR [--dry-run]" >&2
    exit 2
fi
for mod in torch yaml; do
    if ! "$PY" -c "import $mod" 2>/dev/null; then
        echo "error: $PY cannot import $mod (the check uses the Python and torch already here;" \
             "set PYTHON=/path/to/python)" >&2
        exit 2
    fi
done
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 470 "$PY" -m admn_ros.engine.gpu_check "$@"
