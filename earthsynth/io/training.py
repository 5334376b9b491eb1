"""The training plumbing shared by the three trained models (MetaEarth, the flow refiner, the restorer).

    ema = EMA(model, decay=0.999); ema.update(model, step)
    write_checkpoint(out_dir, step, keep=2, model=model, ema=ema, optimizer=optimizer, state={"config": ...})
    path = find_checkpoint(out_dir); state, _ = read_checkpoint(path, model, ema, optimizer, hint="...")
    write_model_folder(directory, meta, cpu_state(model), metadata) / read_model_folder(directory, ...)
    python -m entry points: add_run_arguments, read_config_file, exit_on_user_error, run_export_cli

A checkpoint is out_dir/checkpoints/step_XXXXXX/ holding model.safetensors, ema.safetensors (absent when the run
has no EMA), optimizer.safetensors + optimizer.json (the optimiser state flattened: tensors keyed
"<param index>.<name>", the rest as JSON) and state.json ({"step": k, ...what the caller adds}). It is written to a
temporary folder and renamed, `latest` names the newest, and only the newest `keep` are kept, so a killed run
always finds a complete one. A model folder (weights shipped with the package, a run's final model) is
config.json + model.safetensors. No pickles anywhere: the files load without running code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from earthsynth.errors import EarthsynthError, InputFileError
from earthsynth.io.atomic import atomic_dir, atomic_path

CHECKPOINTS_DIR, LATEST_NAME, STATE_NAME = "checkpoints", "latest", "state.json"
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
# errors that mean "this checkpoint is unreadable" (missing file, bad JSON, torn safetensors, shape mismatch);
# SafetensorError derives from Exception only
CHECKPOINT_ERRORS = (OSError, ValueError, KeyError, RuntimeError, SafetensorError)


# -------------------------------------------------------------------------------------------------------------
# EMA
# -------------------------------------------------------------------------------------------------------------

def ema_decay_at(decay: float, step: int) -> float:
    """The decay used at `step`: min(decay, (1 + step) / (10 + step)); the warm-up forgets early weights fast."""
    return min(decay, (1 + step) / (10 + step))


class EMA:
    """Exponential moving average of a model's state, with the warm-up of the decay (`ema_decay_at`).

    floating_only: average only floating-point entries (integer buffers cannot be averaged); False averages
    every entry (the restorer's nets have floating-point state only, and its checkpoints hold all of it)."""

    def __init__(self, model: torch.nn.Module, decay: float, *, floating_only: bool = True):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()
                       if v.is_floating_point() or not floating_only}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = ema_decay_at(self.decay, step)
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)

    def load_shadow(self, tensors: dict[str, torch.Tensor]) -> None:
        """Replace the averages by `tensors` (as read from a checkpoint), on the device the averages were on."""
        device = next(iter(self.shadow.values())).device
        self.shadow = {k: v.to(device) for k, v in tensors.items()}

    def to(self, device: torch.device | str) -> EMA:
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self


# -------------------------------------------------------------------------------------------------------------
# optimiser state as safetensors + JSON
# -------------------------------------------------------------------------------------------------------------

def flatten_optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(tensors, meta): tensors keyed "<param index>.<name>" (CPU, contiguous) for safetensors; meta holds the
    param groups and the non-tensor entries ("<index>.<name>": value) for JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict, meta: dict) -> dict:
    """The optimiser `state_dict` that `flatten_optimizer_state` flattened."""
    state: dict = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# -------------------------------------------------------------------------------------------------------------
# checkpoint folders
# -------------------------------------------------------------------------------------------------------------

def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / CHECKPOINTS_DIR


def write_checkpoint(out_dir: str | Path, step: int, *, keep: int, model: torch.nn.Module, ema: EMA | None,
                     optimizer: torch.optim.Optimizer, state: dict, extra_optimizer_tensors: dict | None = None,
                     state_indent: int | None = None) -> Path:
    """Write checkpoints/step_<step> atomically, point `latest` at it, keep the newest `keep`; return it.

    state: what state.json holds besides the step (in this order, after it); extra_optimizer_tensors: more
    tensors stored in optimizer.safetensors (the restorer keeps torch's RNG state there)."""
    root = checkpoint_root(out_dir)
    final = root / f"step_{step:06d}"
    opt_tensors, opt_meta = flatten_optimizer_state(optimizer)
    with atomic_dir(final) as tmp:
        save_file(cpu_state(model), str(tmp / "model.safetensors"))
        if ema is not None:
            save_file({k: v.cpu().contiguous() for k, v in ema.shadow.items()}, str(tmp / "ema.safetensors"))
        save_file(opt_tensors | (extra_optimizer_tensors or {}), str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
        (tmp / STATE_NAME).write_text(json.dumps({"step": step, **state}, indent=state_indent))
    with atomic_path(root / LATEST_NAME) as tmp:
        tmp.write_text(final.name + "\n")
    rotate_checkpoints(root, keep, newest=final)
    return final


def rotate_checkpoints(root: Path, keep: int, *, newest: Path) -> None:
    """Delete the oldest step_* folders so that `keep` remain, `newest` among them."""
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p != newest)
    for path in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(path, ignore_errors=True)


def find_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint `latest` names, else the newest complete step_* folder (one with state.json), else None."""
    root = checkpoint_root(out_dir)
    latest = root / LATEST_NAME
    if latest.is_file():
        named = root / latest.read_text().strip()
        if (named / STATE_NAME).is_file():
            return named
    complete = sorted(p for p in root.glob("step_*") if (p / STATE_NAME).is_file())
    return complete[-1] if complete else None


def require_checkpoint(run_dir: str | Path, hint: str) -> Path:
    """`find_checkpoint(run_dir)`, or InputFileError naming run_dir/checkpoints (with `hint`) when there is none."""
    checkpoint = find_checkpoint(run_dir)
    if checkpoint is None:
        raise InputFileError("no complete checkpoint in this run folder yet", path=checkpoint_root(run_dir), hint=hint)
    return checkpoint


def read_checkpoint(path: Path, model: torch.nn.Module, ema: EMA | None, optimizer: torch.optim.Optimizer, *,
                    hint: str, extra_optimizer_keys: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Load checkpoint `path` into model / EMA / optimiser; return (state.json, the extra optimiser tensors).

    Any unreadable part raises InputFileError naming the folder, with `hint` saying what to do."""
    try:
        state = json.loads((path / STATE_NAME).read_text())
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        if ema is not None:
            ema.load_shadow(load_file(str(path / "ema.safetensors")))
        tensors = load_file(str(path / "optimizer.safetensors"))
        extras = {key: tensors.pop(key) for key in extra_optimizer_keys}
        meta = json.loads((path / "optimizer.json").read_text())
        optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta))
    except CHECKPOINT_ERRORS as exc:
        raise InputFileError(f"cannot resume from this checkpoint ({exc})", path=path, hint=hint) from None
    return state, extras


def changed_settings(saved: dict, now: dict, resumable: tuple[str, ...]) -> list[str]:
    """Top-level config keys (but `resumable` ones) whose value differs: a run may not resume under them."""
    return sorted(k for k in now if k not in resumable and saved.get(k) != now[k])


# -------------------------------------------------------------------------------------------------------------
# model folders: config.json + model.safetensors
# -------------------------------------------------------------------------------------------------------------

def cpu_state(model: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors, safetensors-ready; floating-point ones cast to `dtype`
    if given (integer buffers keep their type)."""
    return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in model.state_dict().items()}


def model_folder_exists(directory: str | Path) -> bool:
    directory = Path(directory)
    return (directory / CONFIG_NAME).is_file() and (directory / WEIGHTS_NAME).is_file()


def require_model_folder(directory: str | Path, message: str, hint: str) -> Path:
    """`directory` if it holds a model folder, else InputFileError(message, hint) naming it."""
    directory = Path(directory)
    if not model_folder_exists(directory):
        raise InputFileError(message, path=directory, hint=hint)
    return directory


def write_model_folder(directory: str | Path, meta: dict, tensors: dict, metadata: dict) -> Path:
    """config.json (`meta`, sorted keys) and model.safetensors (`tensors` with header `metadata`), each atomic."""
    directory = Path(directory)
    with atomic_path(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o644)  # safetensors creates owner-only files; weights are meant to be shared
    return directory


def read_model_folder(directory: str | Path, *, format_name: str, config_key: str, missing: str,
                      hint: str) -> tuple[dict, dict]:
    """(config.json, the CPU tensors of model.safetensors) of a folder whose config.json has
    "format": format_name and a `config_key` entry; InputFileError naming the file otherwise."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise InputFileError(missing, path=path, hint=hint)
    try:
        meta = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"not valid JSON ({exc})", path=config_path) from None
    if not isinstance(meta, dict) or meta.get("format") != format_name or config_key not in meta:
        raise InputFileError(f"not a {format_name} config", path=config_path, hint=hint)
    try:
        state = load_file(str(weights_path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for truncated / corrupt files
        raise InputFileError(f"cannot read the weights ({exc})", path=weights_path) from None
    return meta, state


# -------------------------------------------------------------------------------------------------------------
# progress of a background run, from its log
# -------------------------------------------------------------------------------------------------------------

_TQDM_LOSS = re.compile(r"(\d+)/\d+ \[[^\]]*loss=([0-9.eE+-]+)")


def logged_losses(log_path: str | Path) -> dict[int, float]:
    """{step: loss} of the tqdm lines in a training log (the last line of a step wins); {} without a log."""
    log_path, losses = Path(log_path), {}
    if log_path.is_file():
        for match in _TQDM_LOSS.finditer(log_path.read_text(errors="replace")):
            losses[int(match.group(1))] = float(match.group(2))
    return losses


def loss_progress(losses: dict[int, float], window: int) -> dict:
    """{"step", "loss_first", "loss_recent"}: the last logged step and the mean loss of the first / last
    `window` logged steps (None without any)."""
    steps = sorted(losses)
    first, last = steps[:window], steps[-window:]
    return {"step": steps[-1] if steps else 0,
            "loss_first": sum(losses[s] for s in first) / len(first) if first else None,
            "loss_recent": sum(losses[s] for s in last) / len(last) if last else None}


# -------------------------------------------------------------------------------------------------------------
# python -m entry points of the trainers and exporters
# -------------------------------------------------------------------------------------------------------------

@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """An EarthsynthError inside prints `error: <message>` to stderr and exits with status 2 (no traceback)."""
    try:
        yield
    except EarthsynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def add_run_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """--out (the run folder), --config (a training config JSON file), --steps (override config.steps)."""
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--config", type=Path, help=config_help)
    parser.add_argument("--steps", type=int, help="override config.steps")


def read_config_file(path: Path, from_dict: Callable[[dict], object]):
    """`from_dict` of the JSON object in `path`; InputFileError when it is missing or not JSON."""
    if not path.is_file():
        raise InputFileError("no such config file", path=path)
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise InputFileError(f"not a JSON config ({exc})", path=path) from None
    return from_dict(data)


def run_export_cli(argv: list[str] | None, *, description: str, out_help: str,
                   export: Callable[..., dict], status: Callable[[Path], dict],
                   status_indent: int | None = None, checkpoint_help: str | None = None) -> None:
    """`python -m <exporter> RUN_DIR [--out DIR] [--status]`: print export(RUN_DIR, DIR) or status(RUN_DIR)
    as one JSON document (the status indented by `status_indent`). With `checkpoint_help`, a `--checkpoint`
    option is passed on as export(..., checkpoint=NAME)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("run_dir", type=Path, help="training run folder (with checkpoints/)")
    parser.add_argument("--out", type=Path, help=out_help)
    parser.add_argument("--status", action="store_true", help="only report the run's progress")
    if checkpoint_help:
        parser.add_argument("--checkpoint", default=None, help=checkpoint_help)
    args = parser.parse_args(argv)
    with exit_on_user_error():
        chosen = {"checkpoint": args.checkpoint} if getattr(args, "checkpoint", None) else {}
        result = status(args.run_dir) if args.status else export(args.run_dir, args.out, **chosen)
    print(json.dumps(result, indent=status_indent if args.status else None))
