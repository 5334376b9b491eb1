#!/usr/bin/env bash
# Train the shipped FlowEdit model (quality-conditioned rectified flow) in the background, resumably, and export
# its EMA weights (float16).
#
#   scripts/train_flow_refiner.sh start     # nohup, nice 19, one torch thread; resumes from the last checkpoint
#   scripts/train_flow_refiner.sh status    # step, mean loss of the first / last log records, validation losses
#   scripts/train_flow_refiner.sh export    # latest checkpoint's EMA -> earthsynth/weights/flowedit/ (float16)
#   scripts/train_flow_refiner.sh stop      # stop the background run (a checkpoint every 250 steps is kept)
#
# RUN_DIR (default runs/flow_refiner, gitignored) and PYTHON (default .venv/bin/python) may be overridden.
# The recipe (model, data, optimiser) is FlowTrainConfig() in earthsynth/refine/flow_train.py; see
# earthsynth/weights/flowedit/RECIPE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR="${RUN_DIR:-runs/flow_refiner}"
PYTHON="${PYTHON:-.venv/bin/python}"
PID_FILE="$RUN_DIR/train.pid"

running() { [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

case "${1:-start}" in
  start)
    mkdir -p "$RUN_DIR"
    if running; then echo "already running (pid $(cat "$PID_FILE"))"; exit 0; fi
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nohup nice -n 19 "$PYTHON" -m earthsynth.refine.flow_train \
      --out "$RUN_DIR" "${@:2}" >> "$RUN_DIR/train.log" 2>&1 &
    echo $! > "$PID_FILE"
    echo "training in the background (pid $!), log: $RUN_DIR/train.log"
    ;;
  status)
    if running; then echo "running (pid $(cat "$PID_FILE"))"; else echo "not running"; fi
    "$PYTHON" -m earthsynth.refine.flow_train --out "$RUN_DIR" --status
    ;;
  export)
    "$PYTHON" -m earthsynth.refine.flow_train --out "$RUN_DIR" --export "${@:2}"
    ;;
  stop)
    if running; then kill "$(cat "$PID_FILE")"; echo "stopped"; else echo "not running"; fi
    ;;
  *)
    echo "usage: $0 [start|status|export|stop]" >&2; exit 2
    ;;
esac
