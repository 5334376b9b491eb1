"""The shipped MetaEarth model: its architecture, its training settings and its data recipe.

    python -m earthsynth.generate.presets --out runs/metaearth_default        # train (resumes), see RECIPE.md

`shipped_config()` is sized for the project's weight budget: MetaEarth may use <= 10 MB of the 25 MB of shipped
weights, stored as float16, so <= ~5 M parameters; this one has ~4.4 M (8.8 MB in float16). It keeps the MetaEarth
layout of `DenoiserConfig.cpu_default()` (4 UNet levels, attention at the two deepest, RRDB condition encoder,
scale-shift resolution embedding) with one ResBlock per level and a narrower third level, which also makes a
training step on a 2-core CPU ~2x cheaper than `cpu_default()`. It diffuses the residual over the bicubic
up-sampled condition (`DenoiserConfig.residual`): trained image-space for 2,250 steps on the CPU, the same model
still drifted in colour and ignored its condition at high noise; the residual form gets the low frequencies from
the condition by construction.

Data (`shipped_sources()`): ten procedural landscape worlds (seeds 0-9) at MetaEarth's 64 / 16 / 4 m/px levels
plus 1 m, and the real natural-colour rasters of ../shared/data/real (NAIP 5 m, Landsat-7 RGB 300 m, WorldView-3
0.3 m, Pleiades 0.5 m, each also at x2 and x4 coarser). Each batch item picks a source uniformly, so the ten
landscape worlds give ~45 % of the items. The Landsat SWIR/NIR false-colour series is left out: its colours are
not what a user means by an RGB map.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from earthsynth.generate.config import DenoiserConfig
from earthsynth.generate.train import DataConfig, TrainConfig

LANDSCAPE_SEEDS = tuple(range(10))
LANDSCAPE_GSD_LEVELS_M = (1.0, 4.0, 16.0, 64.0)    # MetaEarth's 64 / 16 / 4 m pyramid, plus 1 m
REAL_DATASETS = ("naip", "rasterio_rgb", "jax", "pleiades")


def shipped_config() -> DenoiserConfig:
    """~4.4 M parameters, 64 px windows: the architecture of the default weights."""
    return DenoiserConfig(sample_size=64, block_out_channels=(32, 64, 96, 128), layers_per_block=1,
                          attention_levels=(False, False, True, True), mid_block_attention=True, residual=True)


def shipped_train_config() -> TrainConfig:
    """CPU training of `shipped_config()`: batch 4, AdamW 2e-4, EMA 0.999, a checkpoint every 250 steps.

    `data` records the recipe of `shipped_sources()` (the landscape seeds are listed there, not here: DataConfig
    holds one landscape seed)."""
    data = DataConfig(sources=("landscape", "real"), real_datasets=REAL_DATASETS, zoom_factors=(1, 2, 4),
                      landscape_seed=LANDSCAPE_SEEDS[0], landscape_gsd_levels_m=LANDSCAPE_GSD_LEVELS_M)
    return TrainConfig(model=shipped_config(), data=data, steps=100_000, batch_size=4,
                       gradient_accumulation_steps=1, learning_rate=2e-4, ema_decay=0.999,
                       checkpoint_every=250, keep_checkpoints=2, seed=0)


def shipped_sources(real_data_root: str | Path | None = None) -> list:
    """The training sources of the default weights (see the module docstring)."""
    from earthsynth.generate.data import LandscapeSource, real_sources
    sources: list = [LandscapeSource(seed, gsd_levels_m=LANDSCAPE_GSD_LEVELS_M, name=f"landscape-{seed}")
                     for seed in LANDSCAPE_SEEDS]
    return sources + real_sources(real_data_root, names=REAL_DATASETS, zoom_factors=(1, 2, 4))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the shipped MetaEarth model (resumes from checkpoints).")
    parser.add_argument("--out", type=Path, required=True, help="run folder, e.g. runs/metaearth_default")
    parser.add_argument("--steps", type=int, help="stop after this many optimiser steps (default 100000)")
    parser.add_argument("--real-data-root", type=Path, help="default: ../shared/data/real beside the repo")
    args = parser.parse_args(argv)
    from earthsynth.generate.train import train
    config = shipped_train_config()
    if args.steps is not None:
        config = replace(config, steps=args.steps)
    result = train(config, args.out, sources=shipped_sources(args.real_data_root), progress=True)
    print(json.dumps({"model_dir": str(result.model_dir), "step": result.step,
                      "last_loss": result.losses[-1] if result.losses else None}))


if __name__ == "__main__":
    main()
