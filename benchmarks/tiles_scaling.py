"""Benchmark: time and peak memory of unbounded generation (tiles -> COG) against the output size.

One JSON line per size: {"size": n, "seconds": t, "cpu_seconds": c, "peak_rss_mb": m, "windows", "ddim_steps",
"model", ...}.
Each size runs in its own subprocess, so `peak_rss_mb` (ru_maxrss of that process) is its own; the condition is a
procedural-landscape GeoTIFF of n/4 px written beforehand, read by the child as the CLI would. Overlap + shared
noise, windows of the model's sample size. Memory should stay nearly flat with the size (one band of windows is
held, plus the condition at 1/16 of the output's pixels); time grows with the number of windows. "cpu_seconds"
(user + system time of the generation) is the figure to read for linearity on a shared machine, where wall time
also counts other processes' work.

    python benchmarks/tiles_scaling.py                     # 1024, 2048, 4096 px; 2 DDIM steps
    python benchmarks/tiles_scaling.py --quick             # 256, 512, 1024 px; 1 DDIM step (a few minutes)
    python benchmarks/tiles_scaling.py --sizes 1024 --steps 50 --model default
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(size: int, steps: int, model_kind: str, workdir: Path) -> None:
    import torch

    from earthsynth.generate.tiles import TileConfig, generate_tiles
    from earthsynth.generate.weights import load_default_or_tiny
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model, model_name = load_default_or_tiny(model_kind)
    started = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_started = usage.ru_utime + usage.ru_stime
    result = generate_tiles(model, workdir / f"cond_{size}.tif", workdir / f"out_{size}.tif",
                            config=TileConfig(steps=steps, batch_windows=8), seed=0)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = usage.ru_utime + usage.ru_stime - cpu_started
    peak_mb = usage.ru_maxrss / 1024.0   # KiB on Linux
    print(json.dumps({"size": size, "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
                      "peak_rss_mb": round(peak_mb, 1),
                      "windows": result.windows, "ddim_steps": steps, "output_mb_uint8": round(3 * size * size / 2**20, 1),
                      "model": model_name}), flush=True)


def write_condition(size: int, workdir: Path) -> None:
    import numpy as np
    from affine import Affine

    from earthsynth.io.raster import write_raster
    from earthsynth.world.landscape import landscape_tile
    n = size // 4
    rgb, _ = landscape_tile(3, x0=10_000.0, y0=40_000.0, width_px=n, height_px=n, gsd=16.0)
    write_raster(workdir / f"cond_{size}.tif", np.moveaxis(rgb, -1, 0), crs="EPSG:32633",
                 transform=Affine(16.0, 0.0, 400_000.0, 0.0, -16.0, 5_000_000.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--quick", action="store_true", help="256, 512, 1024 px and 1 DDIM step")
    parser.add_argument("--model", default="auto", choices=("auto", "default", "tiny"))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.model, args.workdir)
        return
    sizes = args.sizes or ([256, 512, 1024] if args.quick else [1024, 2048, 4096])
    steps = args.steps or (1 if args.quick else 2)
    with tempfile.TemporaryDirectory(prefix="tiles_scaling_") as tmp:
        workdir = Path(tmp)
        for size in sizes:
            write_condition(size, workdir)
            subprocess.run([sys.executable, __file__, "--child", str(size), "--steps", str(steps), "--model",
                            args.model, "--workdir", str(workdir)], check=True)
            for path in workdir.glob(f"*_{size}.tif"):
                path.unlink()


if __name__ == "__main__":
    main()
