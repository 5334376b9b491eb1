"""Training data of the restorer: LoD / full-detail render pairs of several synthetic worlds, cached once.

    data = PairDataConfig()                              # 8 training worlds, one held-out validation world
    train, val = build_pair_cache(data, "runs/restorer")  # -> runs/restorer/pairs_{train,val}.npz (uint8)
    degraded_b3hw, clean_b3hw = train.batch(seed=0, step=k, batch_size=8, crop_px=96)

Rendering is the slow part (~1 s per 128 px pair on one core), so each world is rendered into its own compressed
shard under pairs_parts/ first: a killed cache build resumes at the next unfinished world. When every shard is
there they are merged into pairs_train.npz / pairs_val.npz (with the data config inside) and the shards go.

A training batch is a pure function of (seed, step): random crops, horizontal flips and the optional
degradation augmentation of the input are drawn from a generator seeded by them, so a resumed run sees
exactly the batches the uninterrupted run would have seen. (Vertical flips and rotations are left out: the
oblique views have sky at the top and ground below, and so do the renders the restorer will see.)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.io.atomic import atomic_path

_BATCH_STREAM = 90210   # keeps the batch generators apart from any other (seed, step) stream


@dataclass(frozen=True)
class PairDataConfig:
    # Orbit to Ground: 100,000 aerial pairs of diverse 3D urban scenes; here a few synthetic worlds
    train_world_seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    train_world_sizes_m: tuple[float, ...] = (300.0, 300.0, 300.0, 300.0, 300.0, 300.0, 150.0, 150.0)
    val_world_seed: int = 1000            # held out: never a training world
    val_world_size_m: float = 300.0
    pairs_per_world: int = 100
    val_pairs: int = 40
    size_px: int = 128

    def __post_init__(self) -> None:
        if not self.train_world_seeds or len(self.train_world_sizes_m) != len(self.train_world_seeds):
            raise ConfigError("train_world_seeds must be non-empty and train_world_sizes_m must have one size "
                              f"per seed, got {len(self.train_world_seeds)} seeds and "
                              f"{len(self.train_world_sizes_m)} sizes")
        if self.val_world_seed in self.train_world_seeds:
            raise ConfigError(f"val_world_seed {self.val_world_seed} is also a training world",
                              hint="choose a validation seed outside train_world_seeds")
        if self.pairs_per_world < 1 or self.val_pairs < 1 or self.size_px < 16:
            raise ConfigError("pairs_per_world and val_pairs must be >= 1 and size_px >= 16")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> PairDataConfig:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict):
            raise ConfigError(f"a restorer data config must be a JSON object, got {type(data).__name__}")
        if set(data) - names:
            raise ConfigError(f"restorer data config: unknown keys {sorted(set(data) - names)}",
                              hint=f"valid keys are {sorted(names)}")
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
        except TypeError as exc:
            raise ConfigError(f"restorer data config: {exc}") from None


@dataclass(frozen=True)
class AugmentConfig:
    """Random LoD-like extra degradation of the input only (the target stays clean): the renders of a
    reconstructed mesh are blurrier and noisier than the world's reduced LoD, and the restorer should not
    overfit to one exact blur."""
    probability: float = 0.3
    max_blur_sigma_px: float = 0.8
    max_noise_std: float = 0.01

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 1 or self.max_blur_sigma_px < 0 or self.max_noise_std < 0:
            raise ConfigError("augment: probability in [0, 1], max_blur_sigma_px >= 0, max_noise_std >= 0")


class PairSet:
    """uint8 pairs (N, H, W, 3) in memory; `batch` cuts seeded crops as float (B, 3, h, w) tensors."""

    def __init__(self, degraded_nhw3: np.ndarray, clean_nhw3: np.ndarray):
        if degraded_nhw3.shape != clean_nhw3.shape or degraded_nhw3.ndim != 4 or degraded_nhw3.shape[-1] != 3:
            raise ConfigError(f"pairs must be two (N, H, W, 3) arrays of one shape, got {degraded_nhw3.shape} "
                              f"and {clean_nhw3.shape}")
        self.degraded = torch.from_numpy(np.ascontiguousarray(degraded_nhw3)).permute(0, 3, 1, 2)
        self.clean = torch.from_numpy(np.ascontiguousarray(clean_nhw3)).permute(0, 3, 1, 2)

    def __len__(self) -> int:
        return int(self.degraded.shape[0])

    def all(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(degraded, clean) float (N, 3, H, W) in [0, 1], whole images (validation)."""
        return self.degraded.float() / 255.0, self.clean.float() / 255.0

    def batch(self, seed: int, step: int, batch_size: int, crop_px: int,
              augment: AugmentConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = self.degraded.shape
        if crop_px > min(h, w):
            raise ConfigError(f"crop_px {crop_px} is larger than the cached pairs ({h}x{w})")
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, _BATCH_STREAM]).generate_state(1)[0]))
        index = torch.randint(0, n, (batch_size,), generator=g)
        top = torch.randint(0, h - crop_px + 1, (batch_size,), generator=g)
        left = torch.randint(0, w - crop_px + 1, (batch_size,), generator=g)
        flip = torch.rand(batch_size, generator=g) < 0.5
        degraded, clean = [], []
        for i in range(batch_size):
            window = (slice(None), slice(int(top[i]), int(top[i]) + crop_px),
                      slice(int(left[i]), int(left[i]) + crop_px))
            d, c = self.degraded[int(index[i])][window], self.clean[int(index[i])][window]
            if flip[i]:
                d, c = d.flip(-1), c.flip(-1)
            degraded.append(d)
            clean.append(c)
        degraded_b3hw = torch.stack(degraded).float() / 255.0
        clean_b3hw = torch.stack(clean).float() / 255.0
        if augment is not None and augment.probability > 0:
            degraded_b3hw = augment_inputs(degraded_b3hw, augment, g)
        return degraded_b3hw, clean_b3hw


def gaussian_blur(images_b3hw: torch.Tensor, sigma_b: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma (px) per image; sigma 0 leaves the image as it is."""
    radius = max(1, int(np.ceil(3 * float(sigma_b.max())))) if len(sigma_b) else 1
    x = torch.arange(-radius, radius + 1, dtype=images_b3hw.dtype)
    s = sigma_b.to(images_b3hw.dtype).clamp_min(1e-6)[:, None]
    k = torch.exp(-0.5 * (x[None] / s) ** 2)
    k = torch.where(sigma_b[:, None] > 1e-3, k, (x[None] == 0).to(k.dtype))
    k = k / k.sum(dim=1, keepdim=True)
    b, c, h, w = images_b3hw.shape
    flat = images_b3hw.reshape(1, b * c, h, w)
    kb = k.repeat_interleave(c, dim=0)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kb[:, None, None, :], groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kb[:, None, :, None], groups=b * c)
    return flat.reshape(b, c, h, w)


def augment_inputs(degraded_b3hw: torch.Tensor, augment: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    b = degraded_b3hw.shape[0]
    chosen = torch.rand(b, generator=g) < augment.probability
    sigma = torch.rand(b, generator=g) * augment.max_blur_sigma_px * chosen
    noise_std = torch.rand(b, generator=g) * augment.max_noise_std * chosen
    noise = torch.randn(degraded_b3hw.shape, generator=g)
    out = gaussian_blur(degraded_b3hw, sigma) + noise * noise_std[:, None, None, None]
    return out.clamp(0.0, 1.0)


# -------------------------------------------------------------------------------------------------------------
# the cache
# -------------------------------------------------------------------------------------------------------------

def render_world_pairs(seed: int, size_m: float, count: int, size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, clean) uint8 (count, size_px, size_px, 3) of `count` views of the world WorldConfig(seed, size_m);
    the views are drawn with the world's seed."""
    from earthsynth.refine.pairs import PairConfig, pair_views, render_pairs
    from earthsynth.world.build import WorldConfig, build_world
    world = build_world(WorldConfig(seed=int(seed), size_m=float(size_m)))
    config = PairConfig(size_px=int(size_px))
    return render_pairs(world, pair_views(world, int(count), config, seed=int(seed)), config)


def _shard_jobs(data: PairDataConfig) -> list[tuple[str, int, float, int]]:
    jobs = [(f"train_{s}", s, m, data.pairs_per_world) for s, m in zip(data.train_world_seeds,
                                                                       data.train_world_sizes_m)]
    return jobs + [(f"val_{data.val_world_seed}", data.val_world_seed, data.val_world_size_m, data.val_pairs)]


def load_pair_npz(path: Path, data) -> PairSet:
    """A pair cache written by `save_pair_npz` with the same data config (anything with `to_dict()`)."""
    try:
        with np.load(path) as npz:
            saved = json.loads(str(npz["config"]))
            degraded, clean = npz["degraded"], npz["clean"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputFileError(f"unreadable pair cache ({exc})", path=path,
                             hint="delete it; the next run renders the pairs again") from None
    if saved != data.to_dict():
        raise ConfigError("this pair cache was made with another data config", path=path,
                          hint="use another run folder, or delete the cache to render the pairs again")
    return PairSet(degraded, clean)


def save_pair_npz(path: Path, degraded: np.ndarray, clean: np.ndarray, data) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, degraded=degraded, clean=clean, config=json.dumps(data.to_dict()))


def build_pair_cache(data: PairDataConfig, run_dir: str | Path, *, progress: bool = True
                     ) -> tuple[PairSet, PairSet]:
    """(train, val) pair sets of `data`, rendered once into run_dir/pairs_{train,val}.npz and read back after."""
    run_dir = Path(run_dir)
    train_path, val_path = run_dir / "pairs_train.npz", run_dir / "pairs_val.npz"
    if train_path.is_file() and val_path.is_file():
        return load_pair_npz(train_path, data), load_pair_npz(val_path, data)
    parts = run_dir / "pairs_parts"
    jobs = _shard_jobs(data)
    from tqdm.auto import tqdm
    for name, seed, size_m, count in tqdm(jobs, desc="render pairs (worlds)", disable=not progress):
        shard = parts / f"{name}.npz"
        if shard.is_file():
            try:
                load_pair_npz(shard, data)
                continue
            except (InputFileError, ConfigError):
                shard.unlink()
        degraded, clean = render_world_pairs(seed, size_m, count, data.size_px)
        save_pair_npz(shard, degraded, clean, data)
    shards = {name: load_pair_npz(parts / f"{name}.npz", data) for name, *_ in jobs}
    train = [shards[name] for name, *_ in jobs[:-1]]
    save_pair_npz(train_path, np.concatenate([s.degraded.permute(0, 2, 3, 1).numpy() for s in train]),
              np.concatenate([s.clean.permute(0, 2, 3, 1).numpy() for s in train]), data)
    val = shards[jobs[-1][0]]
    save_pair_npz(val_path, val.degraded.permute(0, 2, 3, 1).numpy(), val.clean.permute(0, 2, 3, 1).numpy(), data)
    shutil.rmtree(parts, ignore_errors=True)
    return load_pair_npz(train_path, data), load_pair_npz(val_path, data)


def main(argv: list[str] | None = None) -> None:
    """`python -m earthsynth.refine.restorer_data --out runs/restorer`: only build the pair cache."""
    import argparse
    parser = argparse.ArgumentParser(description="Render and cache the restorer's training pairs.")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    args = parser.parse_args(argv)
    train, val = build_pair_cache(PairDataConfig(), args.out)
    print(json.dumps({"train_pairs": len(train), "val_pairs": len(val)}))


if __name__ == "__main__":
    main()
