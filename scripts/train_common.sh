# Sourced by scripts/train_*.sh: the background-run plumbing the three training scripts share.
#
# The sourcing script has cd'ed to the repository root, run `set -euo pipefail`, and set:
#   RUN_DIR       the run folder (train.log and train.pid live there)
#   TRAIN_ARGS    python arguments of the training process, e.g. (-m earthsynth.refine.flow_train --out "$RUN_DIR")
#   STATUS_ARGS   python arguments that print the run's progress
#   EXPORT_ARGS   python arguments that export its weights (the script's own arguments after `export` follow)
#   TRAIN_ENV     optional: more VAR=value settings for the training process
# then calls `train_dispatch "$@"` (start | status | export | stop; start is the default).
# PYTHON (default .venv/bin/python) may be overridden by the caller's environment.

PYTHON="${PYTHON:-.venv/bin/python}"
PID_FILE="$RUN_DIR/train.pid"

running() { [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

train_dispatch() {
  case "${1:-start}" in
    start)
      mkdir -p "$RUN_DIR"
      if running; then echo "already running (pid $(cat "$PID_FILE"))"; exit 0; fi
      # one torch thread, lowest priority: the machine stays usable while a run goes on for days. `env`, nohup
      # and nice each exec the next, so $! is the pid of the python process itself and `stop` reaches it.
      env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ${TRAIN_ENV[@]+"${TRAIN_ENV[@]}"} nohup nice -n 19 "$PYTHON" \
        "${TRAIN_ARGS[@]}" >> "$RUN_DIR/train.log" 2>&1 &
      echo $! > "$PID_FILE"
      echo "training in the background (pid $!), log: $RUN_DIR/train.log"
      ;;
    status)
      if running; then echo "running (pid $(cat "$PID_FILE"))"; else echo "not running"; fi
      "$PYTHON" "${STATUS_ARGS[@]}"
      ;;
    export)
      "$PYTHON" "${EXPORT_ARGS[@]}" "${@:2}"
      ;;
    stop)
      if running; then kill "$(cat "$PID_FILE")"; echo "stopped"; else echo "not running"; fi
      ;;
    *)
      echo "usage: $0 [start|status|export|stop]" >&2; exit 2
      ;;
  esac
}
