"""Training of the quality-conditioned rectified-flow model on the synthetic world's render pairs.

    python -m earthsynth.refine.flow_train --out runs/flow_refiner [--steps N]      # train / resume
    python -m earthsynth.refine.flow_train --out runs/flow_refiner --status         # step, losses, validation
    python -m earthsynth.refine.flow_train --out runs/flow_refiner --export [DIR]   # EMA -> float16 weights

Data: `refine.pairs` renders of several synthetic worlds (reduced LoD = degraded, full LoD = clean), cached as
`pairs/world_<seed>.npz` in the run folder; one more world is held out for validation. Each training sample is
a random crop (with a random horizontal flip) of either the degraded image with label 0 or the clean image with
label 1; the loss is the rectified-flow velocity MSE with SD3's logit-normal t sampling.

Every random draw of optimiser step k comes from a generator seeded by (seed, k), and checkpoints hold the model,
its EMA, the AdamW state and the step: a killed run resumed from its last checkpoint continues with the same
batches and, on the same machine, bit-identical weights. Checkpoints are written atomically to
checkpoints/step_XXXXXX (`latest` names the newest); log.jsonl and val.jsonl record losses.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from earthsynth.errors import ConfigError
from earthsynth.io.atomic import atomic_path, remove_stale_temps
from earthsynth.io.training import add_run_arguments, exit_on_user_error, read_config_file, require_checkpoint
from earthsynth.refine import flow_checkpoint as ckpt
from earthsynth.refine.flow_model import DEFAULT_WEIGHTS_DIR, FlowModelConfig, QualityFlowModel

T_SAMPLINGS = ("logit_normal", "uniform")
VAL_T = (0.1, 0.2, 0.35, 0.6)     # validation noise levels: the FlowEdit window (t <= 0.36) and one above


@dataclass(frozen=True)
class FlowTrainConfig:
    model: FlowModelConfig = field(default_factory=FlowModelConfig)
    train_world_seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    val_world_seed: int = 100         # held out: never seen in training
    pairs_per_world: int = 48
    val_pairs: int = 32
    pair_size_px: int = 128
    crop_px: int = 48
    batch_size: int = 8
    steps: int = 100_000              # planned; the shipped weights are exported whenever training is stopped
    learning_rate: float = 3e-4
    warmup_steps: int = 200
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999
    t_sampling: str = "logit_normal"  # SD3 / FLUX training: t = sigmoid(N(mean, std))
    logit_mean: float = 0.0           # SD3: m = 0
    logit_std: float = 1.0            # SD3: s = 1
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 25
    val_every: int = 500
    val_images: int = 12
    seed: int = 0

    def __post_init__(self):
        for name in ("pairs_per_world", "val_pairs", "batch_size", "steps", "checkpoint_every", "keep_checkpoints",
                     "log_every", "val_every", "val_images"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"FlowTrainConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.train_world_seeds or self.val_world_seed in self.train_world_seeds:
            raise ConfigError("train_world_seeds must be non-empty and must not contain val_world_seed")
        if self.crop_px % self.model.multiple or not self.model.multiple <= self.crop_px <= self.pair_size_px:
            raise ConfigError(f"crop_px must be a multiple of {self.model.multiple} and <= pair_size_px, "
                              f"got {self.crop_px}")
        if self.t_sampling not in T_SAMPLINGS:
            raise ConfigError(f"t_sampling must be one of {T_SAMPLINGS}, got {self.t_sampling!r}")
        if not (self.learning_rate > 0 and 0 <= self.ema_decay < 1 and self.max_grad_norm >= 0):
            raise ConfigError("need learning_rate > 0, 0 <= ema_decay < 1, max_grad_norm >= 0")

    def to_dict(self) -> dict:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        out["model"] = self.model.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> FlowTrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names) if isinstance(data, dict) else ["<not an object>"]
        if unknown:
            raise ConfigError(f"flow training config: unknown keys {unknown}", hint=f"valid keys: {sorted(names)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "model"}
        if "model" in data:
            kwargs["model"] = FlowModelConfig.from_dict(data["model"])
        return cls(**kwargs)

    @classmethod
    def tiny(cls) -> FlowTrainConfig:
        """For tests: a ~40 k parameter model on 32 px crops."""
        return cls(model=FlowModelConfig.tiny(), pairs_per_world=4, val_pairs=4, pair_size_px=32, crop_px=16,
                   batch_size=4, steps=4, checkpoint_every=2, log_every=1, val_every=1000, val_images=2,
                   train_world_seeds=(0,), warmup_steps=0)


# -------------------------------------------------------------------------------------------------------------
# data: rendered pairs cached in the run folder
# -------------------------------------------------------------------------------------------------------------

def world_pairs(world_seed: int, count: int, size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(degraded_bhw3, clean_bhw3) uint8 of `count` pair views of world `world_seed` (views seeded by it)."""
    from earthsynth.refine.pairs import PairConfig, pair_views, render_pairs
    from earthsynth.world.build import WorldConfig, build_world
    world = build_world(WorldConfig(seed=int(world_seed)))
    config = PairConfig(size_px=int(size_px))
    return render_pairs(world, pair_views(world, int(count), config, seed=int(world_seed)), config)


def cached_pairs(cache_dir: Path, world_seed: int, count: int, size_px: int, *, progress: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """`world_pairs`, rendered once and kept as cache_dir/world_<seed>_<count>x<size>.npz."""
    path = Path(cache_dir) / f"world_{world_seed:04d}_{count}x{size_px}.npz"
    if path.is_file():
        try:
            with np.load(path) as data:
                return data["degraded"], data["clean"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: render it again
    if progress:
        print(f"rendering {count} pairs of world {world_seed} ({size_px} px) -> {path}", file=sys.stderr, flush=True)
    degraded, clean = world_pairs(world_seed, count, size_px)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, degraded=degraded, clean=clean)
    return degraded, clean


def load_training_data(config: FlowTrainConfig, out_dir: Path, *, progress: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images_nhw3 uint8 tensor, labels_n) of all training images: degraded ones label 0, clean ones 1."""
    cache = Path(out_dir) / "pairs"
    degraded, clean = zip(*(cached_pairs(cache, s, config.pairs_per_world, config.pair_size_px, progress=progress)
                            for s in config.train_world_seeds))
    images = torch.from_numpy(np.concatenate(list(degraded) + list(clean)))
    labels = torch.cat([torch.zeros(sum(len(d) for d in degraded), dtype=torch.long),
                        torch.ones(sum(len(c) for c in clean), dtype=torch.long)])
    return images, labels


def load_validation_pairs(config: FlowTrainConfig, out_dir: Path, *, progress: bool = True
                          ) -> tuple[np.ndarray, np.ndarray]:
    return cached_pairs(Path(out_dir) / "pairs", config.val_world_seed, config.val_pairs, config.pair_size_px,
                        progress=progress)


def step_batch(config: FlowTrainConfig, step: int, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """The batch of optimiser step `step`: x0 (B, 3, c, c) in [-1, 1], labels, noise, t; a pure function of
    (config.seed, step)."""
    g = torch.Generator().manual_seed(ckpt.step_seed(config.seed, step))
    b, c, size = config.batch_size, config.crop_px, config.pair_size_px
    idx = torch.randint(0, len(images), (b,), generator=g)
    offsets = torch.randint(0, size - c + 1, (b, 2), generator=g)
    flips = torch.rand(b, generator=g) < 0.5     # horizontal only: oblique views keep the sky on top
    crops = []
    for i in range(b):
        y, x = int(offsets[i, 0]), int(offsets[i, 1])
        crop = images[int(idx[i]), y: y + c, x: x + c]
        crops.append(crop.flip(1) if bool(flips[i]) else crop)
    x0 = torch.stack(crops).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    noise = torch.randn(x0.shape, generator=g)
    if config.t_sampling == "logit_normal":
        t = torch.sigmoid(config.logit_mean + config.logit_std * torch.randn(b, generator=g))
    else:
        t = torch.rand(b, generator=g)
    return {"x0": x0, "labels": labels[idx], "noise": noise, "t": t}


def flow_loss(model: QualityFlowModel, batch: dict) -> torch.Tensor:
    """Rectified-flow loss: || v_theta((1 - t) x0 + t n, t, label) - (n - x0) ||^2 (mean)."""
    t = batch["t"].view(-1, 1, 1, 1)
    x_t = (1.0 - t) * batch["x0"] + t * batch["noise"]
    v = model(x_t, batch["t"], batch["labels"])
    return ((v.float() - (batch["noise"] - batch["x0"])) ** 2).mean()


@torch.no_grad()
def validation_loss(model: QualityFlowModel, degraded: np.ndarray, clean: np.ndarray, count: int) -> dict:
    """Velocity MSE on held-out whole images at fixed noise levels VAL_T (fixed noise, seed 0)."""
    model.eval()
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, label, imgs in (("degraded", 0, degraded), ("clean", 1, clean)):
        x0 = torch.from_numpy(imgs[:count]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        for t in VAL_T:
            noise = torch.randn(x0.shape, generator=g)
            v = model((1 - t) * x0 + t * noise, t, label)
            out[f"{name}_t{t}"] = float(((v - (noise - x0)) ** 2).mean())
    out["mean"] = float(np.mean(list(out.values())))
    return out


# -------------------------------------------------------------------------------------------------------------
# the loop
# -------------------------------------------------------------------------------------------------------------

@dataclass
class FlowTrainResult:
    model_dir: Path
    step: int
    losses: list[float]


def _learning_rate(config: FlowTrainConfig, step: int) -> float:
    return config.learning_rate * min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else \
        config.learning_rate


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _optimizer_step(config, model, optimizer, images, labels, step: int) -> float:
    for group in optimizer.param_groups:
        group["lr"] = _learning_rate(config, step)
    loss = flow_loss(model, step_batch(config, step, images, labels))
    loss.backward()
    if config.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def train(config: FlowTrainConfig, out_dir: str | Path, *, resume: bool = True, progress: bool = True,
          data: tuple[torch.Tensor, torch.Tensor] | None = None) -> FlowTrainResult:
    """Train (or resume) until `config.steps` optimiser steps; the EMA model is saved to out_dir/model.

    data: (images_nhw3 uint8, labels_n) to use instead of rendering the configured worlds (tests)."""
    out_dir = Path(out_dir)
    remove_stale_temps(out_dir / "checkpoints")
    images, labels = data if data is not None else load_training_data(config, out_dir, progress=progress)
    if images.ndim != 4 or images.shape[1] != config.pair_size_px or images.shape[2] != config.pair_size_px:
        raise ConfigError(f"training images must be (N, {config.pair_size_px}, {config.pair_size_px}, 3), "
                          f"got {tuple(images.shape)}")
    val = None if data is not None else load_validation_pairs(config, out_dir, progress=progress)
    with atomic_path(out_dir / "config.json") as tmp:
        tmp.write_text(json.dumps(config.to_dict(), indent=2))
    torch.manual_seed(config.seed)  # the initial weights
    model = QualityFlowModel(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=config.adam_betas,
                                  weight_decay=config.weight_decay)
    ema = ckpt.EMA(model, config.ema_decay)
    step = ckpt.resume(out_dir, config, model, ema, optimizer) if resume else 0
    model.train()
    losses: list[float] = []
    from tqdm.auto import tqdm
    bar = tqdm(total=config.steps, initial=step, desc="flow", disable=not progress, mininterval=5.0)
    while step < config.steps:
        losses.append(_optimizer_step(config, model, optimizer, images, labels, step))
        step += 1
        ema.update(model, step)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if step % config.log_every == 0:
            _append_jsonl(out_dir / "log.jsonl", {"step": step, "loss": float(np.mean(losses[-config.log_every:]))})
        if val is not None and step % config.val_every == 0:
            _append_jsonl(out_dir / "val.jsonl", {"step": step, **validation_loss(ema.model_copy(model), *val,
                                                                                  config.val_images)})
        if step % config.checkpoint_every == 0 or step == config.steps:
            ckpt.save(out_dir, step, model, ema, optimizer, config)
    bar.close()
    ema.model_copy(model).save_pretrained(out_dir / "model")
    return FlowTrainResult(model_dir=out_dir / "model", step=step, losses=losses)


def export_weights(run_dir: str | Path, out_dir: str | Path | None = None) -> dict:
    """The EMA weights of the run's newest checkpoint -> `out_dir` (default earthsynth/weights/flowedit) in
    float16, with a "training" entry (step, checkpoint) in config.json."""
    run_dir, out_dir = Path(run_dir), Path(out_dir) if out_dir is not None else DEFAULT_WEIGHTS_DIR
    checkpoint = require_checkpoint(run_dir, "let the training run until its first checkpoint, then retry")
    config, step, model = ckpt.load_ema_model(checkpoint)
    training = {"step": step, "checkpoint": checkpoint.name, "dtype": "float16",
                "train_world_seeds": list(config.train_world_seeds), "val_world_seed": config.val_world_seed,
                "recipe": "earthsynth/weights/flowedit/RECIPE.md"}
    model.save_pretrained(out_dir, dtype=torch.float16, extra={"training": training})
    return {"step": step, "checkpoint": str(checkpoint), "out_dir": str(out_dir),
            "parameters": model.num_parameters(), "bytes": (out_dir / "model.safetensors").stat().st_size}


def run_status(run_dir: str | Path, *, window: int = 8) -> dict:
    """Step, mean training loss of the first and last `window` log records, validation history."""
    run_dir = Path(run_dir)
    logs = ckpt.read_jsonl(run_dir / "log.jsonl")
    vals = ckpt.read_jsonl(run_dir / "val.jsonl")
    checkpoint = ckpt.find(run_dir)
    mean = (lambda rs: float(np.mean([r["loss"] for r in rs])) if rs else None)  # noqa: E731
    return {"step": logs[-1]["step"] if logs else 0, "loss_first": mean(logs[:window]),
            "loss_recent": mean(logs[-window:]), "checkpoint": checkpoint.name if checkpoint else None,
            "val": [{"step": r["step"], "mean": round(r["mean"], 5)} for r in vals]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the quality-conditioned flow model behind FlowEdit.")
    add_run_arguments(parser, config_help="FlowTrainConfig JSON (default: FlowTrainConfig())")
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--status", action="store_true", help="only report the run's progress")
    parser.add_argument("--export", nargs="?", const="", metavar="DIR",
                        help="export the newest checkpoint's EMA (float16) to DIR (default: shipped weights)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if args.status:
            print(json.dumps(run_status(args.out)))
            return
        if args.export is not None:
            print(json.dumps(export_weights(args.out, args.export or None)))
            return
        config = FlowTrainConfig()
        if args.config is not None:
            config = read_config_file(args.config, FlowTrainConfig.from_dict)
        if args.steps is not None:
            config = replace(config, steps=args.steps)
        result = train(config, args.out, resume=not args.no_resume)
    print(json.dumps({"model_dir": str(result.model_dir), "step": result.step,
                      "last_loss": result.losses[-1] if result.losses else None,
                      "nan": any(math.isnan(v) for v in result.losses)}))


if __name__ == "__main__":
    main()
