"""Training of the restorer: Charbonnier + random-feature perceptual + SSIM loss, AdamW, EMA, exact resume.

    python -m earthsynth.refine.restorer_train --out runs/restorer [--steps N] [--resume]
    train(RestorerTrainConfig(), "runs/restorer")

The pairs are rendered once into the run folder (refine/restorer_data.py). Every random draw of optimiser step
k (crops, flips, input augmentation) comes from a generator seeded by (seed, k), and the learning rate is a
function of k, so a checkpoint (model, EMA, AdamW state, step, torch's global RNG state, validation history)
resumes a killed run (kill -9 included) to bit-identical weights on the same machine, provided MKL runs in
its alignment-independent mode (environment MKL_CBWR=AUTO,STRICT, which scripts/train_restorer.sh sets; without it
a resumed process differs from the uninterrupted one in the last float bits, we measured). Checkpoints are written
to a temporary folder and renamed to out/checkpoints/step_XXXXXX; `latest` names the newest. Each checkpoint
first validates the EMA net on the held-out world (PSNR / SSIM of restored and of degraded vs clean), kept in
state.json and out/metrics.jsonl. Export the weights with earthsynth.refine.restorer_export.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from earthsynth.errors import ConfigError
from earthsynth.io.atomic import atomic_path, remove_stale_temps
from earthsynth.io.training import (EMA, add_run_arguments, changed_settings, exit_on_user_error, find_checkpoint,
                                    read_checkpoint, read_config_file, write_checkpoint)
from earthsynth.refine.mesh_pairs import MeshPairDataConfig, build_mesh_pair_cache
from earthsynth.refine.restorer import RestorerConfig, RestorerNet
from earthsynth.refine.restorer_data import AugmentConfig, PairDataConfig, PairSet, build_pair_cache
from earthsynth.refine.restorer_losses import RandomFeatureLoss, restorer_loss

_SUB_CONFIGS = {"model": RestorerConfig, "data": PairDataConfig, "augment": AugmentConfig}
_RNG_KEY = "torch_rng_state"   # torch's global RNG state, kept in optimizer.safetensors


@dataclass(frozen=True)
class RestorerTrainConfig:
    model: RestorerConfig = RestorerConfig()
    # world LoD / full-detail pairs (training from scratch) or pairs of the pipeline's own reconstructions
    # (MeshPairDataConfig: fine-tuning, with init_weights)
    data: PairDataConfig | MeshPairDataConfig = PairDataConfig()
    augment: AugmentConfig = AugmentConfig()
    steps: int = 20_000                  # planned; training is stopped and exported when validation flattens
    batch_size: int = 8                  # Orbit to Ground: 96
    crop_px: int = 96
    learning_rate: float = 5e-4          # not given by Orbit to Ground (a from-scratch CPU net needs a large one)
    lr_schedule: str = "constant"        # "constant" (after warm-up) or "cosine" (to 0 at `steps`)
    warmup_steps: int = 100
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0           # 0 = off
    charbonnier_weight: float = 1.0      # Orbit to Ground: lambda_CHAR = 1
    charbonnier_eps: float = 1e-3        # Orbit to Ground (Charbonnier loss)
    random_feature_weight: float = 0.2   # stands in for LPIPS (weight 1 in the paper); not LPIPS, see losses
    ssim_weight: float = 0.1             # 1 - SSIM, the other offline perceptual stand-in
    random_feature_seed: int = 0
    ema_decay: float = 0.999             # 0 = no EMA
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    seed: int = 0
    init_weights: str | None = None      # a restorer weights folder to start from (fine-tuning); None: random

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "crop_px", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"RestorerTrainConfig.{name} must be a positive integer, got {value!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        if not (self.learning_rate > 0 and 0 <= self.ema_decay < 1 and self.max_grad_norm >= 0
                and self.warmup_steps >= 0):
            raise ConfigError("need learning_rate > 0, 0 <= ema_decay < 1, max_grad_norm >= 0, warmup_steps >= 0")
        if min(self.charbonnier_weight, self.random_feature_weight, self.ssim_weight) < 0:
            raise ConfigError("loss weights must be >= 0")
        if self.crop_px % self.model.multiple or self.crop_px > self.data.size_px:
            raise ConfigError(f"crop_px {self.crop_px} must be a multiple of {self.model.multiple} and at most "
                              f"the pair size {self.data.size_px}")
        if self.ssim_weight > 0 and self.crop_px < 11:
            raise ConfigError("the SSIM term needs crops of at least 11 px (its window)")

    @classmethod
    def tiny(cls, **changes) -> RestorerTrainConfig:
        """For tests: tiny net, 32 px crops, checkpoints every 2 steps."""
        base = cls(model=RestorerConfig.tiny(), batch_size=2, crop_px=32, warmup_steps=0, learning_rate=2e-3,
                   checkpoint_every=2, steps=4, ema_decay=0.9)
        return replace(base, **changes)

    @classmethod
    def mesh_finetune(cls, train_runs, val_runs, init_weights: str, **changes) -> RestorerTrainConfig:
        """The fine-tuning recipe (earthsynth/weights/restorer/RECIPE.md): from trained weights, on pairs of the
        pipeline's own reconstructions (refine/mesh_pairs.py), 128 px crops of 256 px views, a 5x lower lr with a
        cosine decay, no synthetic input degradation (the inputs are real reconstruction renders)."""
        data = MeshPairDataConfig(train_runs=tuple(map(str, train_runs)), val_runs=tuple(map(str, val_runs)))
        base = cls(data=data, init_weights=str(init_weights), crop_px=128, learning_rate=1e-4, warmup_steps=0,
                   lr_schedule="cosine", steps=1500, augment=AugmentConfig(probability=0.0), checkpoint_every=250,
                   keep_checkpoints=10)
        return replace(base, **changes)

    def to_dict(self) -> dict:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
               if k not in _SUB_CONFIGS}
        out.update({k: getattr(self, k).to_dict() if k != "augment" else asdict(self.augment)
                    for k in _SUB_CONFIGS})
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RestorerTrainConfig:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict):
            raise ConfigError(f"a restorer train config must be a JSON object, got {type(data).__name__}")
        if set(data) - names:
            raise ConfigError(f"restorer train config: unknown keys {sorted(set(data) - names)}",
                              hint=f"valid keys are {sorted(names)}")
        kwargs = {}
        try:
            for key, value in data.items():
                sub = _SUB_CONFIGS.get(key)
                if sub is AugmentConfig:
                    kwargs[key] = AugmentConfig(**value)
                elif key == "data" and isinstance(value, dict) and "train_runs" in value:
                    kwargs[key] = MeshPairDataConfig.from_dict(value)
                elif sub is not None:
                    kwargs[key] = sub.from_dict(value)
                else:
                    kwargs[key] = tuple(value) if isinstance(value, list) else value
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"restorer train config: {exc}") from None


@dataclass
class TrainResult:
    model_dir: Path
    step: int
    losses: list[float] = field(default_factory=list)     # loss of each step run by this call
    history: list[dict] = field(default_factory=list)     # validation at every checkpoint of the run


def learning_rate_at(config: RestorerTrainConfig, step: int) -> float:
    """Linear warm-up, then constant or cosine; a pure function of the step (nothing to checkpoint)."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.learning_rate
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# -------------------------------------------------------------------------------------------------------------
# validation and checkpoints
# -------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_pairs(net: RestorerNet, degraded_b3hw: torch.Tensor, clean_b3hw: torch.Tensor, *,
                   chunk: int = 8) -> dict:
    """Mean per-image PSNR (dB) and SSIM of restored vs clean and of degraded vs clean."""
    from earthsynth.metrics.image import psnr, ssim
    net.eval()
    restored = torch.cat([net(degraded_b3hw[i:i + chunk]) for i in range(0, len(degraded_b3hw), chunk)])
    d, r, c = (t.permute(0, 2, 3, 1).double() for t in (degraded_b3hw, restored, clean_b3hw))
    return {"psnr_degraded": float(psnr(d, c).mean()), "psnr_restored": float(psnr(r, c).mean()),
            "ssim_degraded": float(ssim(d, c).mean()), "ssim_restored": float(ssim(r, c).mean()),
            "images": int(len(d))}


def ema_net(config: RestorerTrainConfig, model: RestorerNet, ema: EMA | None) -> RestorerNet:
    if ema is None:
        return model
    net = RestorerNet(config.model).to(next(model.parameters()).device)
    net.load_state_dict(ema.shadow)
    return net


def save_checkpoint(out_dir: Path, step: int, model, ema: EMA | None, optimizer, config: RestorerTrainConfig,
                    history: list[dict]) -> Path:
    rng = {"scheme": "batches drawn by generators seeded by (seed, step)", "seed": config.seed}
    final = write_checkpoint(out_dir, step, keep=config.keep_checkpoints, model=model, ema=ema, optimizer=optimizer,
                             state={"rng": rng, "config": config.to_dict(), "history": history}, state_indent=1,
                             extra_optimizer_tensors={_RNG_KEY: torch.get_rng_state()})
    with atomic_path(out_dir / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    return final


def load_checkpoint(path: Path, model, ema: EMA | None, optimizer) -> tuple[int, list[dict]]:
    state, extras = read_checkpoint(path, model, ema, optimizer, extra_optimizer_keys=(_RNG_KEY,),
                                    hint="delete it (the previous one is then used) or start another run folder")
    torch.set_rng_state(extras[_RNG_KEY])
    return int(state["step"]), list(state.get("history", []))


# -------------------------------------------------------------------------------------------------------------
# the loop
# -------------------------------------------------------------------------------------------------------------

_RESUMABLE_CHANGES = ("steps", "checkpoint_every", "keep_checkpoints")


def _setup(config: RestorerTrainConfig, out_dir: Path, resume: bool, device: torch.device):
    torch.manual_seed(config.seed)   # the initial weights (drawn on the CPU: the same on every device)
    model = RestorerNet(config.model)
    checkpoint = find_checkpoint(out_dir)
    if config.init_weights is not None and checkpoint is None:
        model.load_state_dict(_init_state(config))
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=config.adam_betas,
                                  weight_decay=config.weight_decay)
    # the restorer's EMA (and its ema.safetensors) holds the whole state dict, not only its floating-point part
    ema = EMA(model, config.ema_decay, floating_only=False) if config.ema_decay > 0 else None
    if checkpoint is None:
        return model, optimizer, ema, 0, []
    if not resume:
        raise ConfigError(f"{out_dir} already holds checkpoints of a run",
                          hint="pass --resume (resume=True) to continue it, or choose another run folder")
    saved = json.loads((checkpoint / "state.json").read_text())["config"]
    differ = changed_settings(saved, config.to_dict(), _RESUMABLE_CHANGES)
    if differ:
        raise ConfigError(f"the run in {out_dir} was trained with a different {', '.join(differ)}",
                          hint="use another run folder for another recipe")
    step, history = load_checkpoint(checkpoint, model, ema, optimizer)   # the EMA stays on `device`
    return model, optimizer, ema, step, history


def _init_state(config: RestorerTrainConfig) -> dict:
    """The state dict of config.init_weights, checked against config.model."""
    net = RestorerNet.from_pretrained(config.init_weights)
    if net.config != config.model:
        raise ConfigError(f"init_weights {config.init_weights} hold a {net.config}, not the configured "
                          f"{config.model}", hint="set model to the init weights' config (their config.json)")
    return net.state_dict()


def _train_step(config, model, optimizer, random_features, train_set: PairSet, step: int) -> float:
    degraded, clean = train_set.batch(config.seed, step, config.batch_size, config.crop_px, config.augment)
    device = next(model.parameters()).device     # batches are drawn on the CPU (seeded), trained where the net is
    degraded, clean = degraded.to(device), clean.to(device)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate_at(config, step)
    model.train()
    loss, _ = restorer_loss(model(degraded, clamp=False), clean, random_features=random_features,
                            charbonnier_weight=config.charbonnier_weight, charbonnier_eps=config.charbonnier_eps,
                            random_feature_weight=config.random_feature_weight, ssim_weight=config.ssim_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    return float(loss.detach())


def _usable_device(name) -> torch.device:
    """torch.device(name), checked by allocating on it: a bad name or a missing GPU is one clear error before
    any pair is loaded, not a torch traceback later."""
    if name is None:
        return torch.device("cpu")
    try:
        device = torch.device(name)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, TypeError) as exc:    # torch raises AssertionError for "no CUDA build"
        raise ConfigError(f"cannot train on device {name!r} ({str(exc).splitlines()[0]})",
                          hint="pass --device cpu, or a device this machine has (e.g. cuda with a CUDA torch)") from None
    return device


def train(config: RestorerTrainConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
          pairs: tuple[PairSet, PairSet] | None = None, device=None) -> TrainResult:
    """Train (or, with resume, continue) until `config.steps`; the final EMA net goes to out_dir/model.

    pairs: (train, val) pair sets to use instead of the cache of `config.data` (tests, custom data).
    device: where the net trains (default CPU); batches are drawn on the CPU either way, so a run can move
    between devices at a checkpoint (the numbers then differ in the last bits, not the batches)."""
    device = _usable_device(device)
    out_dir = Path(out_dir)
    remove_stale_temps(out_dir / "checkpoints")   # half-written checkpoints of a killed run
    if pairs is None:
        build = build_mesh_pair_cache if isinstance(config.data, MeshPairDataConfig) else build_pair_cache
        pairs = build(config.data, out_dir, progress=progress)
    train_set, val_set = pairs
    model, optimizer, ema, step, history = _setup(config, out_dir, resume, device)
    with atomic_path(out_dir / "config.json") as tmp:
        tmp.write_text(json.dumps(config.to_dict(), indent=1))
    random_features = RandomFeatureLoss(seed=config.random_feature_seed).to(device)
    val_degraded, val_clean = (t.to(device) for t in val_set.all())
    losses: list[float] = []
    from tqdm.auto import tqdm
    bar = tqdm(total=config.steps, initial=step, desc="train", disable=not progress, mininterval=5.0)
    while step < config.steps:
        loss = _train_step(config, model, optimizer, random_features, train_set, step)
        step += 1
        if ema is not None:
            ema.update(model, step)
        losses.append(loss)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if step % config.checkpoint_every == 0 or step == config.steps:
            history.append({"step": step, **evaluate_pairs(ema_net(config, model, ema), val_degraded, val_clean)})
            save_checkpoint(out_dir, step, model, ema, optimizer, config, history)
            if progress:
                bar.write(json.dumps(history[-1]))
    bar.close()
    final = ema_net(config, model, ema)
    final.save_pretrained(out_dir / "model", training={"step": step, "run_dir": str(out_dir)})
    return TrainResult(model_dir=out_dir / "model", step=step, losses=losses, history=history)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the one-step restorer (Orbit to Ground) on render pairs.")
    add_run_arguments(parser, config_help="RestorerTrainConfig JSON (default: the shipped recipe)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--device", default=None, help="torch device to train on (default cpu), e.g. cuda")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        config = RestorerTrainConfig()
        if args.config is not None:
            config = read_config_file(args.config, RestorerTrainConfig.from_dict)
        if args.steps is not None:
            config = replace(config, steps=args.steps)
        result = train(config, args.out, resume=args.resume, device=args.device)
    print(json.dumps({"model_dir": str(result.model_dir), "step": result.step,
                      "validation": result.history[-1] if result.history else None}))


if __name__ == "__main__":
    main()
