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
TRAIN_ARGS=(-m earthsynth.refine.flow_train --out "$RUN_DIR" "${@:2}")
STATUS_ARGS=(-m earthsynth.refine.flow_train --out "$RUN_DIR" --status)
EXPORT_ARGS=(-m earthsynth.refine.flow_train --out "$RUN_DIR" --export)
source scripts/train_common.sh
train_dispatch "$@"
