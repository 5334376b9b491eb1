"""Training of the MetaEarth denoiser: P2-weighted epsilon loss, HF accelerate, EMA, atomic checkpoints, resume.

    train(TrainConfig.cpu_default(), "runs/metaearth")                       # one process
    accelerate launch --multi_gpu --num_processes 2 -m earthsynth.generate.train --config c.json --out runs/x

(`--multi_gpu` is accelerate's torchrun launcher; on a machine without accelerator, or with ACCELERATE_USE_CPU=1,
the processes run data-parallel on CPUs over gloo. accelerate's own `--cpu` flag starts a single process.)

Every random draw of optimiser step k (data crops, degradations, noise, timesteps, dropout) comes from
generators seeded by (seed, k, micro-batch, process), so the RNG state of a run is a function of its step:
a checkpoint (model, EMA, optimiser, step) resumes a killed run with the same step count, the same data order
and, on the same machine, bit-identical weights. Checkpoints are written to a temporary folder and renamed to
out_dir/checkpoints/step_XXXXXX; `latest` names the newest. The final EMA weights go to out_dir/model
(`MetaEarthDenoiser.save_pretrained`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.generate.config import DenoiserConfig, config_from_json, config_to_dict, config_to_json
from earthsynth.generate.data import (REAL_DATASETS, LandscapeSource, TripletDataset, procedural_source,
                                      real_sources, sample_seed)
from earthsynth.generate.degrade import DegradationConfig
from earthsynth.generate.model import MetaEarthDenoiser, diffusion_target, to_model_range
from earthsynth.generate.schedule import P2_GAMMA, P2_K, ScheduleConfig, ddpm_scheduler, p2_weights
from earthsynth.io.atomic import atomic_path, remove_stale_temps
from earthsynth.io.training import EMA, changed_settings, find_checkpoint, read_checkpoint, write_checkpoint

SOURCE_KINDS = ("landscape", "real", "procedural")
_NOISE_STREAM, _DROPOUT_STREAM = 1, 2


@dataclass(frozen=True)
class DataConfig:
    sources: tuple[str, ...] = ("landscape", "real")   # any of SOURCE_KINDS
    real_data_root: str | None = None                   # None: ../shared/data/real beside the repo
    real_datasets: tuple[str, ...] = tuple(REAL_DATASETS)
    zoom_factors: tuple[int, ...] = (1, 2, 4)           # mixed resolution levels cut from each real image
    landscape_seed: int = 0
    landscape_gsd_levels_m: tuple[float, ...] = (0.5, 2.0, 8.0, 32.0)
    procedural_seed: int = 0

    def __post_init__(self) -> None:
        bad = [s for s in self.sources if s not in SOURCE_KINDS]
        if not self.sources or bad:
            raise ConfigError(f"data.sources must be a non-empty list of {SOURCE_KINDS}, got {self.sources}")


@dataclass(frozen=True)
class TrainConfig:
    """Field defaults are MetaEarth's training settings; `cpu_default()` / `paper()` are complete presets."""

    model: DenoiserConfig = field(default_factory=DenoiserConfig.cpu_default)
    schedule: ScheduleConfig = ScheduleConfig()
    degradation: DegradationConfig = DegradationConfig()
    data: DataConfig = DataConfig()
    steps: int = 100_000                      # optimiser steps (MetaEarth: 30 epochs of ~585 k tiles)
    batch_size: int = 1                       # MetaEarth: 1 per GPU
    gradient_accumulation_steps: int = 8      # MetaEarth: 8
    learning_rate: float = 2e-6               # MetaEarth: AdamW, initial learning rate 2e-6
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01                # not given by MetaEarth: torch's AdamW default
    max_grad_norm: float = 1.0                # not given by MetaEarth: usual diffusion practice (0 = off)
    ema_decay: float = 0.9999                 # not given by MetaEarth: DDPM's EMA
    p2_k: float = P2_K                        # MetaEarth uses P2 weighting; P2's k and gamma
    p2_gamma: float = P2_GAMMA
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    seed: int = 0
    mixed_precision: str = "no"               # accelerate: "no", "fp16", "bf16"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "gradient_accumulation_steps", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if not (self.learning_rate > 0 and 0 <= self.ema_decay < 1 and self.max_grad_norm >= 0):
            raise ConfigError("need learning_rate > 0, 0 <= ema_decay < 1, max_grad_norm >= 0")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ConfigError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")

    @classmethod
    def paper(cls) -> TrainConfig:
        """MetaEarth's full model and settings (GPU scale)."""
        return cls(model=DenoiserConfig.paper())

    @classmethod
    def cpu_default(cls) -> TrainConfig:
        """The ~7 M parameter model with CPU-friendly steps: larger lr, no accumulation, shorter EMA."""
        return cls(model=DenoiserConfig.cpu_default(), steps=20_000, batch_size=4, gradient_accumulation_steps=1,
                   learning_rate=1e-4, ema_decay=0.999, checkpoint_every=500)

    def to_json(self) -> str:
        return config_to_json(self)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return config_from_json(cls, text, where="TrainConfig")


@dataclass
class TrainResult:
    model_dir: Path
    step: int
    losses: list[float]          # mean P2 loss of each optimiser step run by this call
    num_processes: int = 1


# -------------------------------------------------------------------------------------------------------------
# loss
# -------------------------------------------------------------------------------------------------------------

def p2_loss(model, batch: dict, noise: torch.Tensor, timesteps: torch.Tensor, scheduler,
            weights_t: torch.Tensor) -> torch.Tensor:
    """MetaEarth loss: mean_b lambda_t * ||eps - eps_theta(x_t, t, lr, r)||^2 (mean over pixels)."""
    condition_m = to_model_range(batch["lr"])
    config = getattr(model, "module", model).config     # accelerate may wrap the model (DDP)
    x0 = diffusion_target(config, to_model_range(batch["hr"]), condition_m)
    x_t = scheduler.add_noise(x0, noise, timesteps)
    eps = model(x_t, timesteps, condition_m, batch["resolution_m"])
    per_image = ((eps.float() - noise) ** 2).mean(dim=(1, 2, 3))
    return (weights_t.to(per_image.device)[timesteps] * per_image).mean()


def draw_noise(seed: int, step: int, micro: int, rank: int, shape, num_timesteps: int):
    """(noise, timesteps) of one micro-batch, on the CPU, a pure function of its keys."""
    g = torch.Generator().manual_seed(sample_seed(seed, step, micro, rank, _NOISE_STREAM))
    noise = torch.randn(shape, generator=g)
    return noise, torch.randint(0, num_timesteps, (shape[0],), generator=g)


def build_sources(data: DataConfig) -> list:
    sources: list = []
    for kind in data.sources:
        if kind == "real":
            sources += real_sources(data.real_data_root, names=data.real_datasets, zoom_factors=data.zoom_factors)
        elif kind == "landscape":
            sources.append(LandscapeSource(data.landscape_seed, gsd_levels_m=data.landscape_gsd_levels_m))
        else:
            sources.append(procedural_source(data.procedural_seed, zoom_factors=data.zoom_factors))
    return sources


# -------------------------------------------------------------------------------------------------------------
# checkpoints (the folder layout, EMA and optimiser files are earthsynth.io.training's)
# -------------------------------------------------------------------------------------------------------------

def save_checkpoint(out_dir: Path, step: int, model, ema: EMA, optimizer, config: TrainConfig) -> Path:
    rng = {"scheme": "per-step generators seeded by (seed, step, micro, rank)", "seed": config.seed}
    return write_checkpoint(out_dir, step, keep=config.keep_checkpoints, model=model, ema=ema, optimizer=optimizer,
                            state={"rng": rng, "config": config_to_dict(config)})


def load_checkpoint(path: Path, model, ema: EMA, optimizer) -> int:
    state, _ = read_checkpoint(path, model, ema, optimizer,
                               hint="delete it (the previous one is used) or train with resume=False")
    return int(state["step"])


# -------------------------------------------------------------------------------------------------------------
# the loop
# -------------------------------------------------------------------------------------------------------------

_RESUMABLE_CHANGES = ("steps", "checkpoint_every", "keep_checkpoints")


def _check_same_run(path: Path, config: TrainConfig) -> None:
    # parsed back into a TrainConfig first: a field added since the run started takes its default on both sides
    saved = config_to_dict(TrainConfig.from_json(json.dumps(json.loads((path / "state.json").read_text())["config"])))
    differ = changed_settings(saved, config_to_dict(config), _RESUMABLE_CHANGES)
    if differ:
        raise ConfigError(f"the run in {path.parent.parent} was trained with a different {', '.join(differ)}",
                          hint="use another out_dir, or resume=False to start this folder over")


def _make_accelerator(config: TrainConfig, device):
    from accelerate import Accelerator
    if device is None:   # no accelerator at all: say so, so that a multi-process launch uses gloo on CPUs
        cpu = torch.accelerator.current_accelerator() is None
    else:
        cpu = torch.device(device).type == "cpu"
    accelerator = Accelerator(cpu=cpu, mixed_precision=config.mixed_precision)
    if device is not None and torch.device(device).type != accelerator.device.type:
        raise ConfigError(f"device {device} asked for, but accelerate runs on {accelerator.device}",
                          hint="launch with the matching accelerate settings, or pass device=None")
    return accelerator


def _setup(config: TrainConfig, out_dir: Path, resume: bool, accelerator):
    torch.manual_seed(config.seed)  # identical initial weights on every process and every run
    model = MetaEarthDenoiser(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=config.adam_betas,
                                  weight_decay=config.weight_decay)
    ema = EMA(model, config.ema_decay)
    step = 0
    checkpoint = find_checkpoint(out_dir) if resume else None
    if checkpoint is not None:
        _check_same_run(checkpoint, config)
        step = load_checkpoint(checkpoint, model, ema, optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema.to(accelerator.device)
    return model, optimizer, ema, step


def _optimizer_step(config, accelerator, model, optimizer, dataset, scheduler, weights_t, step) -> float:
    rank, accum = accelerator.process_index, config.gradient_accumulation_steps
    torch.manual_seed(sample_seed(config.seed, step, rank, _DROPOUT_STREAM))
    total = 0.0
    for micro in range(accum):
        batch = dataset.batch(config.seed, step, config.batch_size, micro=micro, rank=rank,
                              device=accelerator.device)
        noise, t = draw_noise(config.seed, step, micro, rank, batch["hr"].shape, config.schedule.num_train_timesteps)
        sync = accelerator.no_sync(model) if micro < accum - 1 else contextlib.nullcontext()
        with sync:
            with accelerator.autocast():
                loss = p2_loss(model, batch, noise.to(accelerator.device), t.to(accelerator.device), scheduler,
                               weights_t) / accum
            accelerator.backward(loss)
        total += float(loss.detach())
    if config.max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    mean = accelerator.reduce(torch.tensor(total, device=accelerator.device), reduction="mean")
    return float(mean)


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = True, device: torch.device | str | None = None,
          sources: list | None = None, progress: bool = True) -> TrainResult:
    """Train (or resume training) until `config.steps` optimiser steps; return where the EMA model is.

    sources: data sources to use instead of the ones `config.data` names (tests, custom data)."""
    out_dir = Path(out_dir)
    accelerator = _make_accelerator(config, device)
    if accelerator.is_main_process:
        remove_stale_temps(out_dir / "checkpoints")   # half-written checkpoints of a killed run
        with atomic_path(out_dir / "config.json") as tmp:
            tmp.write_text(config.to_json())
    dataset = TripletDataset(sources if sources is not None else build_sources(config.data),
                             crop_px=config.model.sample_size, scale=config.model.scale,
                             degradation=config.degradation)
    scheduler = ddpm_scheduler(config.schedule)
    weights_t = p2_weights(config.schedule, k=config.p2_k, gamma=config.p2_gamma)
    model, optimizer, ema, step = _setup(config, out_dir, resume, accelerator)
    model.train()
    losses: list[float] = []
    from tqdm.auto import tqdm
    bar = tqdm(total=config.steps, initial=step, desc="train", disable=not (progress and accelerator.is_main_process))
    while step < config.steps:
        loss = _optimizer_step(config, accelerator, model, optimizer, dataset, scheduler, weights_t, step)
        step += 1
        ema.update(accelerator.unwrap_model(model), step)
        losses.append(loss)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            if accelerator.is_main_process:
                save_checkpoint(out_dir, step, accelerator.unwrap_model(model), ema, optimizer, config)
            accelerator.wait_for_everyone()
    bar.close()
    model_dir = out_dir / "model"
    if accelerator.is_main_process:
        final = MetaEarthDenoiser(config.model)
        final.load_state_dict({k: v.detach().cpu() for k, v in ema.shadow.items()}, strict=False)
        final.save_pretrained(model_dir)
    accelerator.wait_for_everyone()
    return TrainResult(model_dir=model_dir, step=step, losses=losses, num_processes=accelerator.num_processes)


def main(argv: list[str] | None = None) -> None:
    """`python -m earthsynth.generate.train --config c.json --out dir` (also under `accelerate launch`)."""
    parser = argparse.ArgumentParser(description="Train the MetaEarth denoiser.")
    parser.add_argument("--config", type=Path, help="TrainConfig JSON (default: TrainConfig.cpu_default())")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--steps", type=int, help="override config.steps")
    args = parser.parse_args(argv)
    if args.config is not None:
        if not args.config.is_file():
            raise InputFileError("no such config file", path=args.config)
        config = TrainConfig.from_json(args.config.read_text())
    else:
        config = TrainConfig.cpu_default()
    if args.steps is not None:
        config = replace(config, steps=args.steps)
    result = train(config, args.out, resume=not args.no_resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"model_dir": str(result.model_dir), "step": result.step,
                          "num_processes": result.num_processes,
                          "last_loss": result.losses[-1] if result.losses else None}))


if __name__ == "__main__":
    main()
