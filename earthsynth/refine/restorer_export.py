"""Export a restorer training run as the shipped default weights (float16 safetensors + config.json).

    python -m earthsynth.refine.restorer_export runs/restorer_default            # -> earthsynth/weights/restorer
    python -m earthsynth.refine.restorer_export runs/restorer_default --status   # step, loss, validation

The newest complete checkpoint is used: its EMA weights (the raw weights when the run has no EMA) are cast to
float16 and written with `RestorerNet.save_pretrained`, with a "training" entry in config.json (step,
checkpoint, dtype, the validation of that checkpoint). `Restorer.from_dir` casts back to float32 on load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from earthsynth.errors import EarthsynthError, InputFileError
from earthsynth.io.training import (checkpoint_root, find_checkpoint, logged_losses, loss_progress, require_checkpoint,
                                    run_export_cli)
from earthsynth.refine.restorer import DEFAULT_WEIGHTS_DIR, WEIGHTS_NAME, RestorerNet
from earthsynth.refine.restorer_train import RestorerTrainConfig


def export_restorer(run_dir: str | Path, out_dir: str | Path | None = None, *,
                    dtype: torch.dtype = torch.float16, checkpoint: str | None = None) -> dict:
    """Write the run's latest checkpoint (or the one named, e.g. "step_004000": the best on validation) to
    `out_dir` (default earthsynth/weights/restorer); returns a summary."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else DEFAULT_WEIGHTS_DIR
    if checkpoint == "best":
        checkpoint = best_checkpoint(run_dir)
    if checkpoint is not None:
        checkpoint = checkpoint_root(run_dir) / checkpoint
        if not (checkpoint / "state.json").is_file():
            raise InputFileError("no such complete checkpoint", path=checkpoint,
                                 hint="name one of the step_* folders under checkpoints/")
    else:
        checkpoint = require_checkpoint(run_dir, "let the training reach its first checkpoint (see train.log), "
                                                 "then retry")
    try:
        state = json.loads((checkpoint / "state.json").read_text())
        config = RestorerTrainConfig.from_dict(state["config"])
        ema_path = checkpoint / "ema.safetensors"
        weights = load_file(str(ema_path if ema_path.is_file() else checkpoint / "model.safetensors"))
        net = RestorerNet(config.model)
        net.load_state_dict(weights)
    except (OSError, ValueError, KeyError, RuntimeError, EarthsynthError) as exc:
        raise InputFileError(f"unreadable checkpoint ({str(exc).splitlines()[0]})", path=checkpoint,
                             hint="delete it; the previous checkpoint is then used") from None
    step = int(state["step"])
    validation = state.get("history", [])[-1] if state.get("history") else None
    training = {"step": step, "run_dir": str(run_dir), "checkpoint": checkpoint.name,
                "dtype": str(dtype).replace("torch.", ""), "validation": validation,
                "recipe": "earthsynth/weights/restorer/RECIPE.md", "init_weights": config.init_weights}
    net.save_pretrained(out_dir, dtype=dtype, training=training)
    return {"step": step, "checkpoint": str(checkpoint), "out_dir": str(out_dir),
            "parameters": net.num_parameters(), "bytes": (out_dir / WEIGHTS_NAME).stat().st_size,
            "validation": validation}


def best_checkpoint(run_dir: Path) -> str:
    """The name of the kept checkpoint with the highest validation PSNR of the restored images."""
    metrics = run_dir / "metrics.jsonl"
    try:
        history = [json.loads(line) for line in metrics.read_text().splitlines() if line]
    except (OSError, ValueError) as exc:
        raise InputFileError(f"no readable validation history ({exc})", path=metrics,
                             hint="let the run reach a checkpoint, or name one with --checkpoint step_XXXXXX") from None
    kept = [h for h in history if (checkpoint_root(run_dir) / f"step_{h['step']:06d}" / "state.json").is_file()]
    if not kept:
        raise InputFileError("none of the validated checkpoints is kept", path=checkpoint_root(run_dir),
                             hint="export the latest one (leave out --checkpoint)")
    return f"step_{max(kept, key=lambda h: h['psnr_restored'])['step']:06d}"


def run_status(run_dir: str | Path, *, window: int = 100) -> dict:
    """Progress of a run: last logged step, mean loss of the first / last `window` logged steps, and the
    validation of every checkpoint (metrics.jsonl)."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    history = [json.loads(line) for line in metrics.read_text().splitlines() if line] if metrics.is_file() else []
    checkpoint = find_checkpoint(run_dir)
    return {**loss_progress(logged_losses(run_dir / "train.log"), window),
            "checkpoint": checkpoint.name if checkpoint else None, "validation": history}


def main(argv: list[str] | None = None) -> None:
    run_export_cli(argv, description="Export a restorer run's weights in float16.",
                   out_help="weights folder (default: earthsynth/weights/restorer)",
                   export=export_restorer, status=run_status, status_indent=1,
                   checkpoint_help="step_XXXXXX, or best (highest validation PSNR); default: the latest")


if __name__ == "__main__":
    main()
