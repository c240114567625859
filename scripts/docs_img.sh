#!/usr/bin/env bash
# `make docs-img`: the README's pictures are the plots of a `make demo` run, never drawn by hand.
# Runs the demo, then copies its trajectory and allocation plots (and its summary.json, the
# figures of that run) to docs/img/. FROM=<admn run output dir> copies a finished run instead.
# Run inside `. scripts/env.sh` (the Makefile does). IMG_DIR moves the copies (tests).
set -euo pipefail
cd "$(dirname "$0")/.."
IMG=${IMG_DIR:-docs/img}
SRC=${FROM:-}
if [ -z "$SRC" ]; then
  bash scripts/demo.sh
  SRC=${DEMO_DIR:-runs/demo}/out
fi
for f in trajectory.png allocation.png summary.json; do
  if [ ! -f "$SRC/$f" ]; then
    echo "docs-img: $SRC/$f not found: give FROM an \`admn run\` output dir with plots" >&2
    exit 1
  fi
done
mkdir -p "$IMG"
cp "$SRC/trajectory.png" "$IMG/demo_trajectory.png"
cp "$SRC/allocation.png" "$IMG/demo_allocation.png"
cp "$SRC/summary.json" "$IMG/demo_summary.json"
echo "docs-img: $IMG/demo_trajectory.png, $IMG/demo_allocation.png, $IMG/demo_summary.json (from $SRC)"
