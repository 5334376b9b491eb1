"""Checkpoints of the flow model's training: EMA, atomic step folders, exact resume.

A checkpoint is run/checkpoints/step_XXXXXX/ with model.safetensors, ema.safetensors, optimizer.safetensors +
optimizer.json (AdamW moments and step counts; hyper-parameters) and state.json (step, training config);
`latest` names the newest. Together with per-step seeding of every random draw (`step_seed`) this makes a
resumed run continue exactly where the killed one was.

(The MetaEarth trainer in earthsynth.generate has the same scheme; refine/ sits below generate/ in the layering,
so it cannot import it.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.io.atomic import atomic_dir, atomic_path
from earthsynth.refine.flow_model import QualityFlowModel

# changing these does not change what the run computes up to the current step
_RESUMABLE_CHANGES = ("steps", "checkpoint_every", "keep_checkpoints", "log_every", "val_every", "val_images")


def step_seed(*keys: int) -> int:
    """A 63-bit seed that is a pure function of the integer keys (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0]) >> 1


class EMA:
    """Exponential moving average of the model's floating-point state, with the usual warm-up of the decay."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)

    def model_copy(self, model: QualityFlowModel) -> QualityFlowModel:
        """A new model (eval mode) holding the EMA weights."""
        copy = QualityFlowModel(model.config)
        copy.load_state_dict({**model.state_dict(), **self.shadow})
        return copy.eval()


def _optimizer_tensors(optimizer) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save(out_dir: Path, step: int, model, ema: EMA, optimizer, config) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it, keep the newest `config.keep_checkpoints`."""
    root = Path(out_dir) / "checkpoints"
    final = root / f"step_{step:06d}"
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    with atomic_dir(final) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"))
        save_file({k: v.cpu().contiguous() for k, v in ema.shadow.items()}, str(tmp / "ema.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
        (tmp / "state.json").write_text(json.dumps({"step": step, "config": config.to_dict()}))
    with atomic_path(root / "latest") as tmp:
        tmp.write_text(final.name + "\n")
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p != final)
    for path in old[: max(0, len(old) - (config.keep_checkpoints - 1))]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def find(out_dir: Path) -> Path | None:
    """The checkpoint `latest` names, else the newest complete step_* folder, else None."""
    root = Path(out_dir) / "checkpoints"
    latest = root / "latest"
    if latest.is_file():
        named = root / latest.read_text().strip()
        if (named / "state.json").is_file():
            return named
    complete = sorted(p for p in root.glob("step_*") if (p / "state.json").is_file())
    return complete[-1] if complete else None


def resume(out_dir: Path, config, model, ema: EMA, optimizer) -> int:
    """Load the newest checkpoint of `out_dir` into model / EMA / optimiser; return its step (0 if none)."""
    path = find(out_dir)
    if path is None:
        return 0
    try:
        state = json.loads((path / "state.json").read_text())
        saved, now = state["config"], config.to_dict()
        differ = sorted(k for k in now if k not in _RESUMABLE_CHANGES and saved.get(k) != now[k])
        if differ:
            raise ConfigError(f"the run in {out_dir} was trained with a different {', '.join(differ)}",
                              hint="use another run folder, or --no-resume to start this one over")
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        ema.shadow = load_file(str(path / "ema.safetensors"))
        meta = json.loads((path / "optimizer.json").read_text())
        optimizer.load_state_dict(_optimizer_state(load_file(str(path / "optimizer.safetensors")), meta))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputFileError(f"cannot resume from this checkpoint ({exc})", path=path,
                             hint="delete it (the previous one is used) or train with --no-resume") from None
    return int(state["step"])


def load_ema_model(path: Path):
    """(FlowTrainConfig, step, QualityFlowModel with the EMA weights) of checkpoint folder `path`."""
    from earthsynth.refine.flow_train import FlowTrainConfig
    try:
        state = json.loads((Path(path) / "state.json").read_text())
        config = FlowTrainConfig.from_dict(state["config"])
        model = QualityFlowModel(config.model)
        model.load_state_dict({**model.state_dict(), **load_file(str(Path(path) / "ema.safetensors"))})
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputFileError(f"unreadable checkpoint ({exc})", path=path,
                             hint="delete it; the previous checkpoint is then used") from None
    return config, int(state["step"]), model.eval()


def read_jsonl(path: Path) -> list[dict]:
    """Records of a log written by appending; a resumed run rewrites steps, the last record of a step wins."""
    records: dict[int, dict] = {}
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                record = json.loads(line)
                records[int(record["step"])] = record
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a kill
    return [records[s] for s in sorted(records)]
