"""Benchmark: MetaEarth's seam ablation (naive tiling, overlap, noise constraint, both) on the same model and maps.

One JSON line per method: {"method", "seam_ratio", "seam_ratio_window_grid", "periodicity", "seam", "interior", ...}.
- periodicity: correlation of the high-passed image with itself one window stride away (~0 when the texture does
  not repeat; the paper's same-x_T-everywhere layout, "overlap+noise_periodic", repeats it every stride);
- seam_ratio: mean |gradient| across the method's own window edges (every W px for naive / noise, every W / 2 px
  with overlap: every place where a window's content starts or ends) over the same statistic elsewhere
  (earthsynth.metrics.seams; ~1 = seams invisible);
- seam_ratio_window_grid: the same at every W px for every method (the naive seams), for a like-for-like line set.
Averaged over `--maps` condition maps cut from the procedural landscape (MetaEarth averages 750 images). The model
is the shipped default (or a fixed tiny random one when the weights are absent); the JSON says which.

    python benchmarks/seams.py [--maps 3] [--cond-px 32] [--cond-m 16] [--steps 20] [--quick] [--model auto]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from earthsynth.generate.tiles import TileConfig, generate_array, make_grid
from earthsynth.generate.weights import load_default_or_tiny
from earthsynth.metrics.seams import seam_ratio
from earthsynth.world.landscape import landscape_tile

# name -> (overlap, shared noise, noise layout); "periodic" is the paper's same x_T in every window (tiles.py)
METHODS = {"naive": (False, False, "field"), "noise": (False, True, "field"), "overlap": (True, False, "field"),
           "overlap+noise": (True, True, "field"), "overlap+noise_periodic": (True, True, "periodic")}


def periodicity(image_hwc: np.ndarray, period: int) -> float:
    """Correlation of the image's high-pass texture with itself shifted by one window stride, along x and y
    (mean of both): ~0 for texture that does not repeat, up to 1 where shared noise repeats every stride."""
    from scipy import ndimage
    x = image_hwc.astype(np.float64).mean(axis=2)
    x = x - ndimage.uniform_filter(x, 5)
    corr = []
    for a, b in ((x[:, period:], x[:, :-period]), (x[period:], x[:-period])):
        a, b = a - a.mean(), b - b.mean()
        corr.append(float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-12)))
    return float(np.mean(corr))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=3)
    parser.add_argument("--cond-px", type=int, default=32, help="condition side (px); output is 4x")
    parser.add_argument("--cond-m", type=float, default=16.0, help="condition GSD (m/px); output is 4x finer")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps (MetaEarth: 50)")
    parser.add_argument("--quick", action="store_true", help="1 map, 10 steps")
    parser.add_argument("--model", default="auto", choices=("auto", "default", "tiny"))
    args = parser.parse_args()
    maps, steps = (1, 10) if args.quick else (args.maps, args.steps)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model, model_name = load_default_or_tiny(args.model)
    conditions = [landscape_tile(7, x0=20_000.0 * k - 30_000.0, y0=15_000.0 * k, width_px=args.cond_px,
                                 height_px=args.cond_px, gsd=args.cond_m)[0] for k in range(maps)]
    for method, (overlap, shared, layout) in METHODS.items():
        config = TileConfig(overlap=overlap, shared_noise=shared, noise_layout=layout, steps=steps)
        grid = make_grid(model, args.cond_px, args.cond_px, config)
        own, fixed, images, started = [], [], [], time.perf_counter()
        for k, cond in enumerate(conditions):
            image = np.moveaxis(generate_array(model, cond, args.cond_m / 4, seed=k, config=config), 0, -1)
            images.append(image)
            own.append(seam_ratio(image, grid.stride))
            fixed.append(seam_ratio(image, grid.window))
        print(json.dumps({
            "method": method, "seam_ratio": float(np.mean([r["ratio"] for r in own])),
            "seam_ratio_window_grid": float(np.mean([r["ratio"] for r in fixed])),
            "periodicity": float(np.mean([periodicity(image_k, grid.stride) for image_k in images])),
            "seam": float(np.mean([r["seam"] for r in own])), "interior": float(np.mean([r["interior"] for r in own])),
            "maps": maps, "output_px": args.cond_px * 4, "window_px": grid.window, "ddim_steps": steps,
            "model": model_name, "seconds": round(time.perf_counter() - started, 2)}), flush=True)


if __name__ == "__main__":
    main()
