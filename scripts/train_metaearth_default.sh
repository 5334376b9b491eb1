#!/usr/bin/env bash
# Train the shipped MetaEarth model in the background, resumably, and export its EMA weights (float16).
#
#   scripts/train_metaearth_default.sh start     # nohup, nice 19, one torch thread; resumes from the last checkpoint
#   scripts/train_metaearth_default.sh status    # step, recent mean loss, checkpoints
#   scripts/train_metaearth_default.sh export    # latest checkpoint's EMA -> earthsynth/weights/metaearth/ (float16)
#   scripts/train_metaearth_default.sh stop      # stop the background run (a checkpoint every 250 steps is kept)
#
# RUN_DIR (default runs/metaearth_residual, gitignored) and PYTHON (default .venv/bin/python) may be overridden.
# The recipe (model, data, optimiser) is earthsynth/generate/presets.py; see earthsynth/weights/metaearth/RECIPE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR="${RUN_DIR:-runs/metaearth_residual}"
PYTHON="${PYTHON:-.venv/bin/python}"
PID_FILE="$RUN_DIR/train.pid"

running() { [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

case "${1:-start}" in
  start)
    mkdir -p "$RUN_DIR"
    if running; then echo "already running (pid $(cat "$PID_FILE"))"; exit 0; fi
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nohup nice -n 19 "$PYTHON" -m earthsynth.generate.presets \
      --out "$RUN_DIR" >> "$RUN_DIR/train.log" 2>&1 &
    echo $! > "$PID_FILE"
    echo "training in the background (pid $!), log: $RUN_DIR/train.log"
    ;;
  status)
    if running; then echo "running (pid $(cat "$PID_FILE"))"; else echo "not running"; fi
    "$PYTHON" -m earthsynth.generate.export_weights "$RUN_DIR" --status
    ;;
  export)
    "$PYTHON" -m earthsynth.generate.export_weights "$RUN_DIR" "${@:2}"
    ;;
  stop)
    if running; then kill "$(cat "$PID_FILE")"; echo "stopped"; else echo "not running"; fi
    ;;
  *)
    echo "usage: $0 [start|status|export|stop]" >&2; exit 2
    ;;
esac
