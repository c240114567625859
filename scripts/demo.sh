#!/usr/bin/env bash
# `make demo`: replay a GDTM-like recording through the full ROS graph with the shipped weights,
# a simulated power profile stepping the budget down and up, and one camera blinded for a while.
# Run inside `. scripts/env.sh` (the Makefile does). RATE=<factor> sets the replay speed
# (default 1.0: real time; the deadline loop lowers the budget until the graph keeps up, and
# samples that could only be localised late are dropped as `stale`).
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${DEMO_DIR:-runs/demo}
FRAMES=${FRAMES:-450}
RATE=${RATE:-1.0}
mkdir -p "$DEMO"
if [ ! -f models/admn_demo.pt ]; then
  echo "demo: no default weights in models/ (models/admn_demo.pt). Get them with \`make train\`." >&2
  exit 1
fi
if [ ! -f "$DEMO/recording/metadata.json" ]; then
  rm -rf "$DEMO/recording"
  admn generate "$DEMO/recording" --frames "$FRAMES" --seed 7
fi
if [ ! -f "$DEMO/recording.mcap" ]; then
  admn bag from-gdtm "$DEMO/recording" "$DEMO/recording.mcap"
fi
admn run --bag "$DEMO/recording.mcap" --out "$DEMO/out" --rate "$RATE" \
  --budget-profile config/power/demo_steps.yaml --inject config/inject/demo_blind_rgb.yaml
echo "demo: replayed at ${RATE}x real time; summary and plots above (in $DEMO/out)"
