"""Fine-tune a trained restorer on pairs of the pipeline's own reconstructions (refine/mesh_pairs.py).

    python -m earthsynth.refine.restorer_finetune --out runs/restorer_mesh \\
        --train-runs runs/mesh_worlds/run_10 runs/mesh_worlds/run_11 --val-runs runs/mesh_worlds/run_12 \\
        --init earthsynth/weights/restorer [--device cuda] [--steps N] [--pairs-only] [--resume]
    python -m earthsynth.refine.restorer_export runs/restorer_mesh --checkpoint best

The recipe is `RestorerTrainConfig.mesh_finetune` and scripts/finetune_restorer.sh runs all of it; the run folder
is an ordinary restorer training run (checkpoints, validation on the held-out runs, exact resume).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from earthsynth.io.training import exit_on_user_error


def main(argv: list[str] | None = None) -> None:
    from earthsynth.refine.mesh_pairs import build_mesh_pair_cache
    from earthsynth.refine.restorer_train import RestorerTrainConfig, train

    parser = argparse.ArgumentParser(description="Fine-tune the one-step restorer on reconstruction / truth pairs.")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--train-runs", nargs="+", required=True, help="earthsynth mesh run folders (training)")
    parser.add_argument("--val-runs", nargs="+", required=True, help="run folders of other worlds (validation)")
    parser.add_argument("--init", required=True, help="restorer weights folder to start from")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the recipe's)")
    parser.add_argument("--device", default=None, help="torch device to train on (default cpu), e.g. cuda")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--pairs-only", action="store_true", help="only render the pair cache")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        config = RestorerTrainConfig.mesh_finetune(args.train_runs, args.val_runs, args.init)
        if args.steps is not None:
            config = replace(config, steps=args.steps)
        if args.pairs_only:
            train_set, val_set = build_mesh_pair_cache(config.data, args.out)
            print(json.dumps({"train_pairs": len(train_set), "val_pairs": len(val_set)}))
            return
        result = train(config, args.out, resume=args.resume, device=args.device)
    print(json.dumps({"model_dir": str(result.model_dir), "step": result.step,
                      "validation": result.history[-1] if result.history else None}))


if __name__ == "__main__":
    main()
