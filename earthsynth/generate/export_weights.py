"""Export a training run's EMA weights as the shipped default model (float16 safetensors + config.json).

    python -m earthsynth.generate.export_weights runs/metaearth_default            # -> earthsynth/weights/metaearth
    python -m earthsynth.generate.export_weights runs/metaearth_default --status   # step, recent loss, checkpoints

The newest complete checkpoint (`checkpoints/latest`) is used; its EMA state is cast to float16 (half the bytes;
`MetaEarthDenoiser.from_pretrained` casts back to float32 on load) and written in the `save_pretrained` layout,
with a "training" entry in config.json (step, run folder, dtype). Both files are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from earthsynth.errors import InputFileError
from earthsynth.generate.config import DenoiserConfig
from earthsynth.generate.model import _FORMAT, WEIGHTS_NAME, MetaEarthDenoiser
from earthsynth.io.training import (cpu_state, find_checkpoint, logged_losses, loss_progress, require_checkpoint,
                                    run_export_cli, write_model_folder)


def export_weights(run_dir: str | Path, out_dir: str | Path | None = None, *,
                   dtype: torch.dtype = torch.float16) -> dict:
    """Write the EMA weights of the run's latest checkpoint to `out_dir` (default: the shipped weights folder).

    Returns {"step", "checkpoint", "out_dir", "parameters", "bytes"}."""
    from earthsynth.generate.weights import DEFAULT_WEIGHTS_DIR
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else DEFAULT_WEIGHTS_DIR
    checkpoint = require_checkpoint(run_dir,
                                    "let the training run until its first checkpoint (see train.log), then retry")
    try:
        state = json.loads((checkpoint / "state.json").read_text())
        config = DenoiserConfig.from_dict(state["config"]["model"])
        ema = load_file(str(checkpoint / "ema.safetensors"))
    except (OSError, ValueError, KeyError) as exc:
        raise InputFileError(f"unreadable checkpoint ({exc})", path=checkpoint,
                             hint="delete it; the previous checkpoint is then used") from None
    model = MetaEarthDenoiser(config)
    missing, unexpected = model.load_state_dict(ema, strict=False)
    if missing or unexpected:
        raise InputFileError(f"EMA state does not match its config (missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]})", path=checkpoint)
    step = int(state["step"])
    meta = {"format": _FORMAT, "denoiser": config.to_dict(),
            "training": {"step": step, "run_dir": str(run_dir), "checkpoint": checkpoint.name,
                         "dtype": str(dtype).replace("torch.", ""), "recipe": "earthsynth/weights/metaearth/RECIPE.md"}}
    write_model_folder(out_dir, meta, cpu_state(model, dtype), metadata={"format": _FORMAT, "step": str(step)})
    return {"step": step, "checkpoint": str(checkpoint), "out_dir": str(out_dir),
            "parameters": model.num_parameters(), "bytes": (out_dir / WEIGHTS_NAME).stat().st_size}


def run_status(run_dir: str | Path, *, window: int = 200) -> dict:
    """Progress of a run from its train.log (tqdm lines) and checkpoints: step, mean loss of the first and the
    last `window` logged steps."""
    run_dir = Path(run_dir)
    checkpoint = find_checkpoint(run_dir)
    return {**loss_progress(logged_losses(run_dir / "train.log"), window),
            "checkpoint": checkpoint.name if checkpoint else None,
            "checkpoints": sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))}


def main(argv: list[str] | None = None) -> None:
    run_export_cli(argv, description="Export a MetaEarth run's EMA weights in float16.",
                   out_help="weights folder (default: earthsynth/weights/metaearth)",
                   export=export_weights, status=run_status)


if __name__ == "__main__":
    main()
