"""Checkpoints of the flow model's training: EMA, atomic step folders, exact resume.

A checkpoint is run/checkpoints/step_XXXXXX/ with model.safetensors, ema.safetensors, optimizer.safetensors +
optimizer.json (AdamW moments and step counts; hyper-parameters) and state.json (step, training config);
`latest` names the newest. Together with per-step seeding of every random draw (`step_seed`) this makes a
resumed run continue exactly where the killed one was. The layout and the EMA are earthsynth.io.training's,
shared with the MetaEarth and restorer trainers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.io import training
from earthsynth.io.training import find_checkpoint as find
from earthsynth.refine.flow_model import QualityFlowModel

__all__ = ["EMA", "find", "load_ema_model", "read_jsonl", "resume", "save", "step_seed"]

# changing these does not change what the run computes up to the current step
_RESUMABLE_CHANGES = ("steps", "checkpoint_every", "keep_checkpoints", "log_every", "val_every", "val_images")


def step_seed(*keys: int) -> int:
    """A 63-bit seed that is a pure function of the integer keys (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0]) >> 1


class EMA(training.EMA):
    """The shared EMA (floating-point state only), plus a copy of the model that holds the averages."""

    def model_copy(self, model: QualityFlowModel) -> QualityFlowModel:
        """A new model (eval mode) holding the EMA weights."""
        copy = QualityFlowModel(model.config)
        copy.load_state_dict({**model.state_dict(), **self.shadow})
        return copy.eval()


def save(out_dir: Path, step: int, model, ema: EMA, optimizer, config) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it, keep the newest `config.keep_checkpoints`."""
    return training.write_checkpoint(out_dir, step, keep=config.keep_checkpoints, model=model, ema=ema,
                                     optimizer=optimizer, state={"config": config.to_dict()})


def resume(out_dir: Path, config, model, ema: EMA, optimizer) -> int:
    """Load the newest checkpoint of `out_dir` into model / EMA / optimiser; return its step (0 if none)."""
    path = find(out_dir)
    if path is None:
        return 0
    try:
        saved = json.loads((path / training.STATE_NAME).read_text())["config"]
    except training.CHECKPOINT_ERRORS as exc:
        raise InputFileError(f"cannot resume from this checkpoint ({exc})", path=path,
                             hint="delete it (the previous one is used) or train with --no-resume") from None
    differ = training.changed_settings(saved, config.to_dict(), _RESUMABLE_CHANGES)
    if differ:
        raise ConfigError(f"the run in {out_dir} was trained with a different {', '.join(differ)}",
                          hint="use another run folder, or --no-resume to start this one over")
    state, _ = training.read_checkpoint(path, model, ema, optimizer,
                                        hint="delete it (the previous one is used) or train with --no-resume")
    return int(state["step"])


def load_ema_model(path: Path):
    """(FlowTrainConfig, step, QualityFlowModel with the EMA weights) of checkpoint folder `path`."""
    from earthsynth.refine.flow_train import FlowTrainConfig
    try:
        state = json.loads((Path(path) / "state.json").read_text())
        config = FlowTrainConfig.from_dict(state["config"])
        model = QualityFlowModel(config.model)
        model.load_state_dict({**model.state_dict(), **load_file(str(Path(path) / "ema.safetensors"))})
    except training.CHECKPOINT_ERRORS as exc:
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
