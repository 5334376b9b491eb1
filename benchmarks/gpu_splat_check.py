"""GPU check (run on a machine with a GPU and gsplat installed): our CPU splat backend against gsplat.

What it does, on one random scene (a cloud of anisotropic Gaussians with SH degree-3 colours, a few cameras
around it, coloured backgrounds, render_mode "RGB+D"):

1. renders it with our CPU backend (`backend="cpu"`, tensors on the CPU) and with gsplat (`backend="gsplat"`,
   the same tensors moved to the GPU), both through `earthsynth.render.splat.rasterize_gaussians`, so the
   pixel-convention shift (cx, cy + 0.5) and the meta normalisation are exercised as well;
2. back-propagates the same weighted loss through both and compares the gradients of means, quats, scales,
   opacities, SH coefficients and means2d (relative L2 error);
3. times a few Adam steps (render + backward + step) of a fit to a target image on the GPU with gsplat, and one
   step of ours on the CPU for scale.

Prints one JSON line per comparison / timing and exits 1 if a tolerance is exceeded:
    colours / alphas: max abs diff <= 1e-3, except for at most max(3, 1e-5 * pixels) pixels (a float32 alpha
        that lands on the 1/255 threshold or T on 1e-4 flips one Gaussian's contribution, ~0.004 at most),
        and never above 2e-2;
    depth channel: the same relative to the mean depth;
    gradients: relative L2 error <= 2e-2 (float32 on both sides, different summation orders).
Agreement needs gsplat >= 1.5 (opacity-aware tight boxes; older gsplat renders faint 3-3.3 sigma fringes
depending on the tiling). Exit code 2: no GPU or no gsplat (nothing was checked).

    python benchmarks/gpu_splat_check.py [--n 20000] [--size 256] [--cameras 2] [--steps 20] [--device DEV]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time

import torch

from earthsynth.render.splat import rasterize_gaussians

COLOUR_TOL, OUTLIER_TOL, GRAD_TOL = 1e-3, 2e-2, 2e-2
SH_DEGREE = 3


def make_scene(n: int, size: int, n_cameras: int, seed: int = 0) -> dict:
    """CPU float32 leaves: a 4 m cloud of Gaussians, cameras on a ring 7 m away looking at its centre."""
    g = torch.Generator().manual_seed(seed)
    spacing = 4.0 / n ** (1 / 3)
    scene = {
        "means": (torch.rand(n, 3, generator=g) - 0.5) * 4.0,
        "quats": torch.randn(n, 4, generator=g),
        "scales": spacing * torch.exp(torch.randn(n, 3, generator=g) * 0.5 - 1.0),
        "opacities": torch.rand(n, generator=g) * 0.9 + 0.05,
        "sh": torch.randn(n, (SH_DEGREE + 1) ** 2, 3, generator=g) * 0.3,
    }
    viewmats = []
    for k in range(n_cameras):
        a = 2 * math.pi * k / n_cameras
        eye = torch.tensor([7 * math.cos(a), 7 * math.sin(a), 2.0])
        fwd = -eye / eye.norm()
        right = torch.linalg.cross(fwd, torch.tensor([0.0, 0.0, 1.0]))
        right = right / right.norm()
        rot = torch.stack([right, torch.linalg.cross(fwd, right), fwd])
        vm = torch.eye(4)
        vm[:3, :3], vm[:3, 3] = rot, -rot @ eye
        viewmats.append(vm)
    f = 0.5 * size / math.tan(math.radians(30.0))
    k = torch.tensor([[f, 0.0, (size - 1) / 2 + 0.3], [0.0, f, (size - 1) / 2 - 0.2], [0.0, 0.0, 1.0]])
    scene["viewmats"] = torch.stack(viewmats)
    scene["Ks"] = k.expand(n_cameras, 3, 3).clone()
    scene["backgrounds"] = torch.rand(n_cameras, 3, generator=g)
    scene["weights"] = torch.randn(n_cameras, size, size, 5, generator=g)
    return scene


def render_and_grads(scene: dict, size: int, device: torch.device, backend: str) -> dict:
    """Images, meta and gradients of sum(weights * [colour, depth, alpha]) for one backend."""
    names = ("means", "quats", "scales", "opacities", "sh")
    leaves = {k: scene[k].to(device, copy=True).requires_grad_(True) for k in names}
    out, alphas, meta = rasterize_gaussians(
        leaves["means"], leaves["quats"], leaves["scales"], leaves["opacities"], leaves["sh"],
        scene["viewmats"].to(device), scene["Ks"].to(device), size, size, sh_degree=SH_DEGREE,
        backgrounds_c3=scene["backgrounds"].to(device), render_mode="RGB+D", backend=backend)
    meta["means2d"].retain_grad()
    (torch.cat([out, alphas], dim=-1) * scene["weights"].to(device)).sum().backward()
    grads = {k: v.grad.detach().cpu() for k, v in leaves.items()}
    grads["means2d"] = meta["means2d"].grad.detach().cpu()
    return {"colours": out[..., :3].detach().cpu(), "depth": out[..., 3].detach().cpu(),
            "alphas": alphas.detach().cpu(), "radii": meta["radii"].detach().cpu(),
            "means2d": meta["means2d"].detach().cpu(), "grads": grads}


def image_check(name: str, ours: torch.Tensor, theirs: torch.Tensor, scale: float = 1.0) -> bool:
    diff = (ours - theirs).abs() / scale
    n_over = int((diff > COLOUR_TOL).sum())
    allowed = max(3, int(1e-5 * diff.numel()))
    ok = n_over <= allowed and float(diff.max()) <= OUTLIER_TOL
    print(json.dumps({"check": name, "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                      "n_over_tol": n_over, "allowed": allowed, "ok": ok}), flush=True)
    return ok


def compare(ours: dict, theirs: dict) -> bool:
    ok = image_check("colours", ours["colours"], theirs["colours"])
    ok &= image_check("alphas", ours["alphas"], theirs["alphas"])
    ok &= image_check("depth_rel", ours["depth"], theirs["depth"], scale=float(ours["depth"].abs().mean()) + 1e-9)
    both = (ours["radii"] > 0) & (theirs["radii"] > 0)
    print(json.dumps({"check": "visibility", "ours": int((ours["radii"] > 0).sum()),
                      "gsplat": int((theirs["radii"] > 0).sum()), "both": int(both.sum()),
                      "radii_equal_frac": float((ours["radii"][both] == theirs["radii"][both]).float().mean()),
                      "means2d_max_diff_px": float((ours["means2d"] - theirs["means2d"])[both].abs().max())}))
    for key, g_ours in ours["grads"].items():
        g_theirs = theirs["grads"][key]
        rel = float((g_ours - g_theirs).norm() / g_theirs.norm().clamp_min(1e-20))
        good = rel <= GRAD_TOL
        ok &= good
        print(json.dumps({"check": f"grad_{key}", "rel_l2_err": rel, "max_abs_diff": float(
            (g_ours - g_theirs).abs().max()), "scale": float(g_theirs.abs().max()), "ok": good}), flush=True)
    return ok


def synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize()


def time_steps(scene: dict, size: int, device: torch.device, backend: str, steps: int) -> float:
    """Seconds per Adam step fitting the scene to its own render from perturbed parameters."""
    with torch.no_grad():
        target, _, _ = rasterize_gaussians(
            scene["means"].to(device), scene["quats"].to(device), scene["scales"].to(device),
            scene["opacities"].to(device), scene["sh"].to(device), scene["viewmats"].to(device),
            scene["Ks"].to(device), size, size, sh_degree=SH_DEGREE, backend=backend)
    g = torch.Generator().manual_seed(1)
    params = {k: (scene[k] + 0.01 * torch.randn(scene[k].shape, generator=g)).to(device, copy=True).requires_grad_()
              for k in ("means", "quats", "scales", "sh")}
    opacities = scene["opacities"].to(device)
    optimiser = torch.optim.Adam(params.values(), lr=1e-3)
    for step in range(steps + 1):
        if step == 1:  # the first step compiles / allocates
            synchronize(device)
            start = time.perf_counter()
        out, _, _ = rasterize_gaussians(params["means"], params["quats"], params["scales"].abs(), opacities,
                                        params["sh"], scene["viewmats"].to(device), scene["Ks"].to(device), size,
                                        size, sh_degree=SH_DEGREE, backend=backend)
        loss = (out - target).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    synchronize(device)
    return (time.perf_counter() - start) / max(steps, 1)


def pick_device(name: str | None) -> torch.device | None:
    if name:
        return torch.device(name)
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6; older: pass --device
    if accelerator is not None and accelerator.is_available():
        return accelerator.current_accelerator()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default=None, help="the GPU device (default: torch's current accelerator)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    try:
        gsplat = importlib.import_module("gsplat")
    except ImportError:
        print("gsplat is not installed: nothing to check (pip install gsplat)", file=sys.stderr)
        return 2
    if device is None:
        print("no GPU found: nothing to check (or pass --device)", file=sys.stderr)
        return 2
    print(json.dumps({"gsplat": getattr(gsplat, "__version__", "?"), "torch": torch.__version__,
                      "device": str(device), "n": args.n, "size": args.size, "cameras": args.cameras}))
    scene = make_scene(args.n, args.size, args.cameras)
    ours = render_and_grads(scene, args.size, torch.device("cpu"), "cpu")
    theirs = render_and_grads(scene, args.size, device, "gsplat")
    ok = compare(ours, theirs)
    gpu_step = time_steps(scene, args.size, device, "gsplat", args.steps)
    cpu_step = time_steps(scene, args.size, torch.device("cpu"), "cpu", 1)
    print(json.dumps({"timing": "adam_step", "gsplat_s": round(gpu_step, 5), "ours_cpu_s": round(cpu_step, 4),
                      "cpu_threads": torch.get_num_threads()}))
    print(json.dumps({"ok": bool(ok)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
