"""GPU check of Skyfall-GS training (run on a machine with a GPU): the same SplatTrainer steps on the CPU and
on the GPU must follow the same loss curve.

A small synthetic block (ground plane and three boxes, coloured by position) is rendered from four oblique
cameras by a "truth" model; a second model, initialised on the same points jittered by 0.3 m with grey colours,
is fitted to those views by `SplatTrainer.train_step` (per-image appearance embeddings, opacity entropy,
densification, Adam: everything the reconstruction stage runs but the depth prior) once on the CPU with our
backend and once on the GPU with `backend="auto"` (gsplat when it is installed, else our compositor on the
device; $EARTHSYNTH_SPLAT_BACKEND pins it). The GPU run is also saved, reloaded on the CPU and rendered there.

Prints JSON lines and exits 1 if a check fails:
    loss curves: the largest relative difference over the first 10 steps <= 2e-2 (different rasterisers /
        summation orders; densification draws can diverge later, so only the start is compared);
    the GPU run learns: mean loss of the last 5 steps <= 0.8 x the first 5;
    the reloaded state renders on the CPU what the GPU rendered: max abs diff <= 2e-2 (backend difference).
Exit code 2: no GPU (nothing was checked).

    python benchmarks/gpu_train_check.py [--steps 60] [--size 96] [--device DEV]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from earthsynth.geo.pinhole import Camera
from earthsynth.splat import init_from_points
from earthsynth.splat.trainer import LossWeights, SplatTrainer, scaled_strategy

CURVE_TOL, LEARN_RATIO, RELOAD_TOL = 2e-2, 0.8, 2e-2
N_VIEWS = 4


def block_points(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 40 m ground plane and three boxes sampled at ~0.5 m, colours a smooth function of position."""
    rng = np.random.default_rng(seed)
    ground = np.c_[rng.uniform(-20, 20, (6000, 2)), np.zeros(6000)]
    boxes = []
    for cx, cy, half, h in ((-8, -6, 4, 10), (7, 5, 5, 6), (6, -9, 3, 14)):
        top = np.c_[rng.uniform(-half, half, (600, 2)) + (cx, cy), np.full(600, h)]
        side_t = rng.uniform(-half, half, 1600)
        side_z = rng.uniform(0, h, 1600)
        face = rng.integers(0, 4, 1600)
        sx = np.where(face < 2, np.where(face == 0, -half, half), side_t)
        sy = np.where(face < 2, side_t, np.where(face == 2, -half, half))
        boxes += [top, np.c_[sx + cx, sy + cy, side_z]]
    points = np.concatenate([ground, *boxes])
    colours = np.clip(np.c_[0.5 + 0.4 * np.sin(points[:, 0] / 5), 0.5 + 0.4 * np.cos(points[:, 1] / 7),
                            0.3 + points[:, 2] / 20], 0, 1)
    return points, colours


def cameras(size: int) -> list[Camera]:
    return [Camera.orbit((0.0, 0.0, 3.0), elevation_deg=55.0, azimuth_deg=az, radius=55.0, width=size,
                         height=size, fov_x_deg=50.0) for az in np.linspace(0, 360, N_VIEWS, endpoint=False)]


def targets(size: int) -> list[torch.Tensor]:
    points, colours = block_points()
    truth = init_from_points(points, colours, sh_degree=1, init_opacity=0.9, seed=0)
    with torch.no_grad():
        colors, _, _ = truth.render(cameras(size))
    return [c.clamp(0, 1) for c in colors]


def train(device: torch.device, size: int, steps: int, views: list[torch.Tensor]) -> tuple[SplatTrainer, dict]:
    points, _ = block_points()
    jitter = np.random.default_rng(1).normal(0, 0.3, points.shape)
    model = init_from_points(points + jitter, None, sh_degree=1, init_opacity=0.5, seed=0).to(device)
    trainer = SplatTrainer.create(model, N_VIEWS, scaled_strategy(steps, refine_start_iter=20, refine_every=20),
                                  20.0, use_appearance=True, seed=0)
    cams, losses = cameras(size), []
    start = None
    for step in range(steps):
        if step == 1:                       # the first step builds kernels / allocates
            torch.accelerator.synchronize() if device.type != "cpu" else None
            start = time.perf_counter()
        k = step % N_VIEWS
        parts = trainer.train_step(cams[k], views[k].to(device), image_id=k, weights=LossWeights())
        losses.append(parts["total"])
    if device.type != "cpu":
        torch.accelerator.synchronize()
    return trainer, {"losses": losses, "num": trainer.model.num,
                     "s_per_step": (time.perf_counter() - start) / max(steps - 1, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    accelerator = getattr(torch, "accelerator", None)
    if args.device:
        device = torch.device(args.device)
    elif accelerator is not None and accelerator.is_available():
        device = accelerator.current_accelerator()
    else:
        print("no GPU found: nothing to check (or pass --device)", file=sys.stderr)
        return 2
    from earthsynth.render.splat import _choose_backend
    views = targets(args.size)
    _, cpu = train(torch.device("cpu"), args.size, args.steps, views)
    gpu_trainer, gpu = train(device, args.size, args.steps, views)
    rel = [abs(a - b) / max(abs(a), 1e-9) for a, b in zip(cpu["losses"][:10], gpu["losses"][:10])]
    curve_ok = max(rel) <= CURVE_TOL
    learn = float(np.mean(gpu["losses"][-5:]) / np.mean(gpu["losses"][:5]))
    print(json.dumps({"device": str(device), "backend": _choose_backend("auto", device), "steps": args.steps,
                      "loss_first": [round(x, 5) for x in gpu["losses"][:3]],
                      "loss_last_cpu": round(cpu["losses"][-1], 5), "loss_last_gpu": round(gpu["losses"][-1], 5),
                      "num_cpu": cpu["num"], "num_gpu": gpu["num"]}), flush=True)
    print(json.dumps({"check": "loss_curve_first10", "max_rel_diff": max(rel), "ok": curve_ok}), flush=True)
    print(json.dumps({"check": "gpu_learns", "last5_over_first5": learn, "ok": learn <= LEARN_RATIO}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        state = gpu_trainer.save(Path(tmp) / "state.pt")
        with torch.no_grad():
            on_gpu, _, _ = gpu_trainer.render(cameras(args.size)[:1], image_ids=[0])
        points, _ = block_points()
        cpu_trainer = SplatTrainer.create(init_from_points(points, None, sh_degree=1, seed=0), N_VIEWS,
                                          scaled_strategy(args.steps), 20.0, use_appearance=True, seed=0)
        cpu_trainer.load(state)
        with torch.no_grad():
            on_cpu, _, _ = cpu_trainer.render(cameras(args.size)[:1], image_ids=[0])
    reload_diff = float((on_gpu.cpu() - on_cpu).abs().max())
    print(json.dumps({"check": "reload_on_cpu", "max_abs_diff": reload_diff, "ok": reload_diff <= RELOAD_TOL}))
    print(json.dumps({"timing": "train_step", "gpu_s": round(gpu["s_per_step"], 5),
                      "cpu_s": round(cpu["s_per_step"], 5), "cpu_threads": torch.get_num_threads()}))
    ok = curve_ok and learn <= LEARN_RATIO and reload_diff <= RELOAD_TOL
    print(json.dumps({"ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
