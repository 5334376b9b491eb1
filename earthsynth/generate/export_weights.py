"""Export a training run's EMA weights as the shipped default model (float16 safetensors + config.json).

    python -m earthsynth.generate.export_weights runs/metaearth_default            # -> earthsynth/weights/metaearth
    python -m earthsynth.generate.export_weights runs/metaearth_default --status   # step, recent loss, checkpoints

The newest complete checkpoint (`checkpoints/latest`) is used; its EMA state is cast to float16 (half the bytes;
`MetaEarthDenoiser.from_pretrained` casts back to float32 on load) and written in the `save_pretrained` layout,
with a "training" entry in config.json (step, run folder, dtype). Both files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from earthsynth.errors import EarthsynthError, InputFileError
from earthsynth.generate.config import DenoiserConfig
from earthsynth.generate.model import _FORMAT, CONFIG_NAME, WEIGHTS_NAME, MetaEarthDenoiser
from earthsynth.generate.train import find_checkpoint
from earthsynth.io.atomic import atomic_path

_LOSS = re.compile(r"(\d+)/\d+ \[[^\]]*loss=([0-9.eE+-]+)")


def export_weights(run_dir: str | Path, out_dir: str | Path | None = None, *,
                   dtype: torch.dtype = torch.float16) -> dict:
    """Write the EMA weights of the run's latest checkpoint to `out_dir` (default: the shipped weights folder).

    Returns {"step", "checkpoint", "out_dir", "parameters", "bytes"}."""
    from earthsynth.generate.weights import DEFAULT_WEIGHTS_DIR
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else DEFAULT_WEIGHTS_DIR
    checkpoint = find_checkpoint(run_dir)
    if checkpoint is None:
        raise InputFileError("no complete checkpoint in this run folder yet", path=run_dir / "checkpoints",
                             hint="let the training run until its first checkpoint (see train.log), then retry")
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
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    step = int(state["step"])
    meta = {"format": _FORMAT, "denoiser": config.to_dict(),
            "training": {"step": step, "run_dir": str(run_dir), "checkpoint": checkpoint.name,
                         "dtype": str(dtype).replace("torch.", ""), "recipe": "earthsynth/weights/metaearth/RECIPE.md"}}
    with atomic_path(out_dir / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    with atomic_path(out_dir / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": _FORMAT, "step": str(step)})
        os.chmod(tmp, 0o644)
    return {"step": step, "checkpoint": str(checkpoint), "out_dir": str(out_dir),
            "parameters": model.num_parameters(), "bytes": (out_dir / WEIGHTS_NAME).stat().st_size}


def run_status(run_dir: str | Path, *, window: int = 200) -> dict:
    """Progress of a run from its train.log (tqdm lines) and checkpoints: step, mean loss of the first and the
    last `window` logged steps."""
    run_dir = Path(run_dir)
    log = run_dir / "train.log"
    losses: dict[int, float] = {}
    if log.is_file():
        for match in _LOSS.finditer(log.read_text(errors="replace")):
            losses[int(match.group(1))] = float(match.group(2))
    steps = sorted(losses)
    first, last = steps[:window], steps[-window:]
    checkpoint = find_checkpoint(run_dir)
    return {"step": steps[-1] if steps else 0,
            "loss_first": sum(losses[s] for s in first) / len(first) if first else None,
            "loss_recent": sum(losses[s] for s in last) / len(last) if last else None,
            "checkpoint": checkpoint.name if checkpoint else None,
            "checkpoints": sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export a MetaEarth run's EMA weights in float16.")
    parser.add_argument("run_dir", type=Path, help="training run folder (with checkpoints/)")
    parser.add_argument("--out", type=Path, help="weights folder (default: earthsynth/weights/metaearth)")
    parser.add_argument("--status", action="store_true", help="only report the run's progress")
    args = parser.parse_args(argv)
    try:
        result = run_status(args.run_dir) if args.status else export_weights(args.run_dir, args.out)
    except EarthsynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
