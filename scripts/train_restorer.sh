#!/usr/bin/env bash
# Train the shipped one-step restorer (Orbit to Ground) in the background, resumably, and export it (float16).
#
#   scripts/train_restorer.sh start     # nohup, nice 19, one torch thread; renders the pair cache on first start,
#                                       # then trains, resuming from the last checkpoint when started again
#   scripts/train_restorer.sh status    # step, recent mean loss, validation (PSNR / SSIM) of every checkpoint
#   scripts/train_restorer.sh export    # latest checkpoint's EMA -> earthsynth/weights/restorer/ (float16)
#   scripts/train_restorer.sh stop      # stop the background run (a checkpoint every 200 steps is kept)
#
# MKL_CBWR=AUTO,STRICT makes MKL's results independent of memory alignment: without it a run resumed in a new
# process drifts from the uninterrupted one in the last float bits (measured), with it kill -9 + start is exact.
# RUN_DIR (default runs/restorer_default, gitignored), PYTHON (default .venv/bin/python) and STEPS (default: the
# recipe's) may be overridden. The recipe is RestorerTrainConfig(); see earthsynth/weights/restorer/RECIPE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR="${RUN_DIR:-runs/restorer_default}"
PYTHON="${PYTHON:-.venv/bin/python}"
PID_FILE="$RUN_DIR/train.pid"

running() { [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

case "${1:-start}" in
  start)
    mkdir -p "$RUN_DIR"
    if running; then echo "already running (pid $(cat "$PID_FILE"))"; exit 0; fi
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 MKL_CBWR=AUTO,STRICT nohup nice -n 19 "$PYTHON" \
      -m earthsynth.refine.restorer_train --out "$RUN_DIR" --resume ${STEPS:+--steps "$STEPS"} \
      >> "$RUN_DIR/train.log" 2>&1 &
    echo $! > "$PID_FILE"
    echo "training in the background (pid $!), log: $RUN_DIR/train.log"
    ;;
  status)
    if running; then echo "running (pid $(cat "$PID_FILE"))"; else echo "not running"; fi
    "$PYTHON" -m earthsynth.refine.restorer_export "$RUN_DIR" --status
    ;;
  export)
    "$PYTHON" -m earthsynth.refine.restorer_export "$RUN_DIR" "${@:2}"
    ;;
  stop)
    if running; then kill "$(cat "$PID_FILE")"; echo "stopped"; else echo "not running"; fi
    ;;
  *)
    echo "usage: $0 [start|status|export|stop]" >&2; exit 2
    ;;
esac
