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
# RUN_DIR (default runs/restorer_default, gitignored), PYTHON (default .venv/bin/python), STEPS (default: the
# recipe's) and DEVICE (default cpu; the shipped weights: DEVICE=cuda RUN_DIR=runs/restorer_gpu) may be overridden.
# The recipe is RestorerTrainConfig(); see earthsynth/weights/restorer/RECIPE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR="${RUN_DIR:-runs/restorer_default}"
TRAIN_ENV=(NUMBA_NUM_THREADS=1 MKL_CBWR=AUTO,STRICT)
TRAIN_ARGS=(-m earthsynth.refine.restorer_train --out "$RUN_DIR" --resume ${STEPS:+--steps "$STEPS"} ${DEVICE:+--device "$DEVICE"})
STATUS_ARGS=(-m earthsynth.refine.restorer_export "$RUN_DIR" --status)
EXPORT_ARGS=(-m earthsynth.refine.restorer_export "$RUN_DIR")
source scripts/train_common.sh
train_dispatch "$@"
