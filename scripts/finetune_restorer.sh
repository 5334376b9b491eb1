#!/usr/bin/env bash
# Fine-tune the restorer on the pipeline's own reconstructions (earthsynth/refine/mesh_pairs.py), resumably, and
# export the checkpoint with the best validation PSNR. The recipe: earthsynth/weights/restorer/RECIPE.md.
#
#   scripts/finetune_restorer.sh worlds    # synthesize the training / validation worlds and run `earthsynth mesh`
#                                          # on each (--refiner none: only the basic texture is needed); ~30 min
#                                          # per world on 2 cores; completed stages are reused when run again
#   scripts/finetune_restorer.sh pairs     # render the pair cache (mesh_pairs_{train,val}.npz) into RUN_DIR
#   scripts/finetune_restorer.sh start     # the pairs if missing, then train in the background (resumes)
#   scripts/finetune_restorer.sh status    # step, recent mean loss, validation of every checkpoint
#   scripts/finetune_restorer.sh export    # best checkpoint's EMA -> earthsynth/weights/restorer/ (float16)
#   scripts/finetune_restorer.sh stop
#
# The fine-tuning starts from the world-pair restorer (scripts/train_restorer.sh), taken from git at INIT_COMMIT
# so that running the recipe again after an export does not fine-tune the fine-tuned weights.
# Overridable: WORLDS_DIR (default runs/restorer_mesh_worlds), RUN_DIR (default runs/restorer_mesh), DEVICE
# (default cpu; the shipped weights: cuda), STEPS, PYTHON, INIT_COMMIT.
set -euo pipefail
cd "$(dirname "$0")/.."
WORLDS_DIR="${WORLDS_DIR:-runs/restorer_mesh_worlds}"
RUN_DIR="${RUN_DIR:-runs/restorer_mesh}"
INIT_COMMIT="${INIT_COMMIT:-f232c7a}"
TRAIN_WORLDS=(10:200 11:200 13:200 14:200)   # seed:size_m; never a scene the benchmarks score (seeds 0-2)
VAL_WORLDS=(12:150)
runs_of() { for w in "$@"; do echo "$WORLDS_DIR/run_${w%%:*}"; done; }
FT_ARGS=(-m earthsynth.refine.restorer_finetune --out "$RUN_DIR" --train-runs $(runs_of "${TRAIN_WORLDS[@]}")
         --val-runs $(runs_of "${VAL_WORLDS[@]}") --init "$RUN_DIR/init")
TRAIN_ENV=(NUMBA_NUM_THREADS=1 MKL_CBWR=AUTO,STRICT)
TRAIN_ARGS=("${FT_ARGS[@]}" --resume ${STEPS:+--steps "$STEPS"} ${DEVICE:+--device "$DEVICE"})
STATUS_ARGS=(-m earthsynth.refine.restorer_export "$RUN_DIR" --status)
EXPORT_ARGS=(-m earthsynth.refine.restorer_export "$RUN_DIR" --checkpoint best)
source scripts/train_common.sh

init_weights() {
  mkdir -p "$RUN_DIR/init"
  for f in config.json model.safetensors; do
    [[ -f "$RUN_DIR/init/$f" ]] || git show "$INIT_COMMIT:earthsynth/weights/restorer/$f" > "$RUN_DIR/init/$f"
  done
}

case "${1:-start}" in
  worlds)
    ES="${PYTHON:-.venv/bin/python} -m earthsynth.cli"
    for w in "${TRAIN_WORLDS[@]}" "${VAL_WORLDS[@]}"; do
      seed="${w%%:*}"; size="${w##*:}"; scene="$WORLDS_DIR/scene_$seed"
      [[ -f "$scene/scene.json" ]] || $ES scene synth --out "$scene" --seed "$seed" --size-m "$size"
      $ES cameras approx "$scene" > /dev/null
      $ES mesh "$scene" --out "$WORLDS_DIR/run_$seed" --refiner none --seed "$seed"
    done
    ;;
  pairs)
    init_weights
    "${PYTHON:-.venv/bin/python}" "${FT_ARGS[@]}" --pairs-only
    ;;
  start)
    init_weights
    train_dispatch start
    ;;
  *)
    train_dispatch "$@"
    ;;
esac
