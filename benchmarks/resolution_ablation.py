"""Benchmark: MetaEarth's resolution-guidance ablation (paper 001, the "w/o sr" rows of its ablation table).

Two denoisers are trained that differ ONLY in `DenoiserConfig.resolution_guidance` (True: the GSD r is
frequency-encoded and added to the timestep embedding; False: that embedding is zeros, so the UNet sees only t):
same seed, same data (a mix where resolution matters: `shipped_sources()`, ten landscape worlds at 1 / 4 / 16 /
64 m/px plus the real rasters at x1 / x2 / x4 of their GSD), same steps, same batch. Both are then evaluated on
one fixed held-out set: landscape worlds never seen in training (seeds HELDOUT_WORLD_SEEDS), `--per-level` crops at
each GSD level, degraded like the training pairs; DDIM with fixed seeds, the same initial noise for both models.

One JSON object per line:
- {"model": "with_resolution" | "without_resolution" | "bicubic_reference", "gsd_m": r | "all", "fid_proxy",
  "kid_proxy", "psnr_vs_hr", "n", "train_steps", "features"}: generated HR images against the held-out HR crops
  of the same level (`bicubic_reference`: the bicubic up-sampling of the condition, for scale);
- {"model": ..., "eval": "stated_resolution", "gsd_m": r, "stated_gsd_m": r', "mean_abs_diff", "max_abs_diff",
  "psnr_true_r", "psnr_stated_r", "n"}: the SAME conditions generated with the same noise at their true GSD and at
  another stated one (what the branch is for). Without the branch the two must be identical (diff exactly 0).

FID / KID here are computed on `ProxyFeatures` (fixed random convolutions, named in "features"), not on
Inception-v3: they rank the two models on the same held-out set and are NOT comparable with published FID values
(MetaEarth's table) or with each other across different --per-level / --size settings. With n images per level
and 134-D features the covariances are rank-deficient, so the per-level FID proxy is biased upward; compare the two
models at the same gsd_m, not one level with another.

Default budget (measured): 600 optimiser steps x batch 8 per model, 32 px crops, the ~0.8 M parameter
`bench_denoiser_config`; the whole script took 12.7 min (2 x ~330 s training, 30-45 s evaluation per model) with
OMP_NUM_THREADS=1 and nice -n 10 on a shared 2-core CPU. At this budget both models are still below the bicubic
reference in PSNR, so the ablation compares two under-trained models; use --steps to go further.

Run folders (`--out`/with_resolution, `--out`/without_resolution) resume: rerunning continues from the last
checkpoint, and a larger --steps trains further.

    OMP_NUM_THREADS=1 python benchmarks/resolution_ablation.py [--steps 600] [--size 32] [--out runs/bench/...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from earthsynth.generate.config import DenoiserConfig
from earthsynth.generate.data import LandscapeSource, procedural_source, sample_seed
from earthsynth.generate.degrade import DegradationConfig, degrade
from earthsynth.generate.model import MetaEarthDenoiser, condition_upsampled, from_model_range, to_model_range
from earthsynth.generate.presets import (LANDSCAPE_GSD_LEVELS_M, LANDSCAPE_SEEDS, shipped_sources,
                                         shipped_train_config)
from earthsynth.generate.sample import sample
from earthsynth.generate.train import DataConfig, TrainConfig, train
from earthsynth.metrics.distribution import ProxyFeatures, distribution_scores
from earthsynth.metrics.image import psnr

VARIANTS = {"with_resolution": True, "without_resolution": False}
HELDOUT_WORLD_SEEDS = (100, 101, 102, 103)      # landscape worlds the training mix (seeds 0-9) never sees
HELDOUT_SEED = 20_240_001                       # crop positions, degradations and sampling noise of the eval
DEFAULT_OUT = Path("runs/bench/resolution_ablation")


def bench_denoiser_config(size: int) -> DenoiserConfig:
    """~0.8 M parameters: between `DenoiserConfig.tiny()` and the shipped model, residual like the shipped one."""
    return DenoiserConfig(sample_size=size, block_out_channels=(16, 32, 64), layers_per_block=1,
                          attention_levels=(False, False, True), mid_block_attention=True, attention_head_dim=16,
                          norm_num_groups=8, rrdb_channels=16, rrdb_growth=8, rrdb_blocks=1, condition_channels=16,
                          resolution_frequencies=16, residual=True)


def tiny_denoiser_config(size: int) -> DenoiserConfig:
    return replace(DenoiserConfig.tiny(), sample_size=size, residual=True)


def training_data(kind: str) -> tuple[DataConfig, list]:
    """(the DataConfig that records the recipe, the sources train() uses)."""
    if kind == "shipped":
        return shipped_train_config().data, shipped_sources()
    if kind == "landscape":
        data = DataConfig(sources=("landscape",), landscape_gsd_levels_m=LANDSCAPE_GSD_LEVELS_M)
        return data, [LandscapeSource(s, gsd_levels_m=LANDSCAPE_GSD_LEVELS_M, name=f"landscape-{s}")
                      for s in LANDSCAPE_SEEDS]
    # procedural: cheap smooth noise at three zoom levels (tests and smoke runs only: no real resolution cues)
    return DataConfig(sources=("procedural",), zoom_factors=(1, 2, 4)), [procedural_source(0)]


def train_config(model: DenoiserConfig, data: DataConfig, *, steps: int, batch_size: int) -> TrainConfig:
    """A short CPU budget: larger learning rate than the shipped run and a shorter EMA, checkpoints often."""
    return TrainConfig(model=model, data=data, steps=steps, batch_size=batch_size, gradient_accumulation_steps=1,
                       learning_rate=5e-4, ema_decay=0.995, checkpoint_every=max(1, min(50, steps)),
                       keep_checkpoints=2, seed=0)


# -------------------------------------------------------------------------------------------------------------
# the held-out set
# -------------------------------------------------------------------------------------------------------------

def heldout_set(levels_m, per_level: int, size: int, scale: int) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """{GSD: (hr (n, 3, size, size), lr (n, 3, size/scale, size/scale))} in [0, 1], a pure function of its args."""
    worlds = [LandscapeSource(s, gsd_levels_m=tuple(levels_m)) for s in HELDOUT_WORLD_SEEDS]
    out = {}
    for li, gsd in enumerate(levels_m):
        hrs, lrs = [], []
        for k in range(per_level):
            g = torch.Generator().manual_seed(sample_seed(HELDOUT_SEED, li, k))
            crop = worlds[k % len(worlds)].crop(g, size, gsd)
            hr = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).contiguous()
            hrs.append(hr)
            lrs.append(degrade(hr, scale=scale, generator=g, config=DegradationConfig()))
        out[float(gsd)] = (torch.stack(hrs), torch.stack(lrs))
    return out


# -------------------------------------------------------------------------------------------------------------
# evaluation
# -------------------------------------------------------------------------------------------------------------

def _psnr_mean(images_nchw: torch.Tensor, hr_nchw: torch.Tensor) -> float:
    return float(psnr(images_nchw.permute(0, 2, 3, 1), hr_nchw.permute(0, 2, 3, 1)).mean())


def _scores_line(model_name: str, gsd, generated: torch.Tensor, hr: torch.Tensor, steps, extractor) -> dict:
    # one KID subset of the whole set: every subset of size n out of n is the same set
    scores = distribution_scores(list(hr), list(generated), extractor, kid_subset_size=len(hr), kid_subsets=1)
    return {"model": model_name, "gsd_m": gsd, "fid_proxy": round(scores["fid_proxy"], 5),
            "kid_proxy": round(scores["kid_proxy"], 6), "psnr_vs_hr": round(_psnr_mean(generated, hr), 3),
            "n": len(hr), "train_steps": steps, "features": scores["extractor"]}


def _generate(model, lr: torch.Tensor, gsd: float, seed: int, ddim_steps: int) -> torch.Tensor:
    return sample(model, lr, gsd, steps=ddim_steps, generator=seed)


def evaluate_model(model, name: str, heldout: dict, *, steps: int, ddim_steps: int, extractor) -> list[dict]:
    lines, all_gen, all_hr = [], [], []
    for li, (gsd, (hr, lr)) in enumerate(heldout.items()):
        generated = _generate(model, lr, gsd, sample_seed(HELDOUT_SEED, 1, li), ddim_steps)
        lines.append(_scores_line(name, gsd, generated, hr, steps, extractor))
        all_gen.append(generated)
        all_hr.append(hr)
    lines.append(_scores_line(name, "all", torch.cat(all_gen), torch.cat(all_hr), steps, extractor))
    return lines


def bicubic_lines(config: DenoiserConfig, heldout: dict, extractor) -> list[dict]:
    """The same scores for the bicubic up-sampling of the conditions: what a model adds over no model."""
    def up(lr):
        return from_model_range(condition_upsampled(config, to_model_range(lr)))
    lines = [_scores_line("bicubic_reference", gsd, up(lr), hr, 0, extractor) for gsd, (hr, lr) in heldout.items()]
    all_hr = torch.cat([hr for hr, _ in heldout.values()])
    all_up = torch.cat([up(lr) for _, lr in heldout.values()])
    return lines + [_scores_line("bicubic_reference", "all", all_up, all_hr, 0, extractor)]


def stated_resolution_lines(model, name: str, heldout: dict, *, count: int, ddim_steps: int) -> list[dict]:
    """Each level's first `count` conditions, generated at their true GSD and at the mirrored level's GSD
    (1 <-> 64, 4 <-> 16 m by default) with the same noise: how much the stated resolution changes the output."""
    levels = list(heldout)
    lines = []
    for li, gsd in enumerate(levels):
        stated = levels[len(levels) - 1 - li]
        if stated == gsd:
            continue
        hr, lr = (t[:count] for t in heldout[gsd])
        seed = sample_seed(HELDOUT_SEED, 2, li)
        at_true = _generate(model, lr, gsd, seed, ddim_steps)
        at_stated = _generate(model, lr, stated, seed, ddim_steps)
        diff = (at_true - at_stated).abs()
        lines.append({"model": name, "eval": "stated_resolution", "gsd_m": gsd, "stated_gsd_m": stated,
                      "mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max()),
                      "psnr_true_r": round(_psnr_mean(at_true, hr), 3),
                      "psnr_stated_r": round(_psnr_mean(at_stated, hr), 3), "n": len(hr)})
    return lines


# -------------------------------------------------------------------------------------------------------------
# main
# -------------------------------------------------------------------------------------------------------------

def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps per model (same for both)")
    parser.add_argument("--size", type=int, default=32, help="HR crop side (px); the condition is 4x smaller")
    parser.add_argument("--batch", type=int, default=8, help="training batch (same for both)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="parent of the two resumable run folders")
    parser.add_argument("--data", choices=("shipped", "landscape", "procedural"), default="shipped",
                        help="training mix: shipped_sources() (default), its landscape part only, or procedural "
                             "smooth noise (smoke tests)")
    parser.add_argument("--model-size", choices=("bench", "tiny"), default="bench")
    parser.add_argument("--levels", type=float, nargs="+", default=list(LANDSCAPE_GSD_LEVELS_M),
                        help="held-out GSD levels (m/px)")
    parser.add_argument("--per-level", type=int, default=32, help="held-out images per GSD level")
    parser.add_argument("--swap-count", type=int, default=8, help="images per level for the stated-resolution test")
    parser.add_argument("--ddim-steps", type=int, default=20, help="DDIM steps (MetaEarth: 50)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.per_level < 2 or args.swap_count < 1 or args.ddim_steps < 1:
        parser.error("need --steps, --batch, --swap-count, --ddim-steps >= 1 and --per-level >= 2")
    if any(not (math.isfinite(r) and r > 0) for r in args.levels):
        parser.error(f"--levels must be positive m/px values, got {args.levels}")
    return args


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> list[dict]:
    args = _parse(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    make_config = bench_denoiser_config if args.model_size == "bench" else tiny_denoiser_config
    base = make_config(args.size)   # validates --size against the UNet stride and the x4 scale
    data, sources = training_data(args.data)
    extractor = ProxyFeatures()
    heldout = heldout_set(args.levels, args.per_level, args.size, base.scale)
    lines = bicubic_lines(base, heldout, extractor)
    for line in lines:
        print(json.dumps(line), flush=True)
    for name, guidance in VARIANTS.items():
        config = train_config(replace(base, resolution_guidance=guidance), data, steps=args.steps,
                              batch_size=args.batch)
        started = time.perf_counter()
        result = train(config, args.out / name, sources=sources, progress=False)
        _log(f"{name}: step {result.step}, {len(result.losses)} steps trained in "
             f"{time.perf_counter() - started:.1f} s, last loss "
             f"{result.losses[-1] if result.losses else float('nan'):.4f}")
        model = MetaEarthDenoiser.from_pretrained(result.model_dir)
        started = time.perf_counter()
        model_lines = evaluate_model(model, name, heldout, steps=result.step, ddim_steps=args.ddim_steps,
                                     extractor=extractor)
        model_lines += stated_resolution_lines(model, name, heldout, count=min(args.swap_count, args.per_level),
                                               ddim_steps=args.ddim_steps)
        _log(f"{name}: evaluated in {time.perf_counter() - started:.1f} s")
        for line in model_lines:
            print(json.dumps(line), flush=True)
        lines += model_lines
    return lines


if __name__ == "__main__":
    main()
