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
TRAIN_ARGS=(-m earthsynth.generate.presets --out "$RUN_DIR")
STATUS_ARGS=(-m earthsynth.generate.export_weights "$RUN_DIR" --status)
EXPORT_ARGS=(-m earthsynth.generate.export_weights "$RUN_DIR")
source scripts/train_common.sh
train_dispatch "$@"
