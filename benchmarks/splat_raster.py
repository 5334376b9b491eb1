"""Benchmark: CPU Gaussian-splat rasterisation, forward and backward, ours vs a dense torch reference.

Prints one JSON line per measurement: {"n", "size", "backend", "forward_s", "backward_s", ...} (wall seconds;
"*_cpu_s": CPU seconds of the process, all threads). Ours is
earthsynth.render.splat.rasterize_gaussians (numba tiles + analytic backward, projection in torch autograd). The
peer, "dense_reference", is the straightforward torch formulation (every pixel against every Gaussian, sorted by
depth, composited with a cumulative product, autograd for the backward): it needs N x pixels memory, so it runs
only at the small sizes. Both render the same random scene (a cloud of anisotropic Gaussians seen from a few
metres away, sizes set by the point spacing so that the image is covered several times over); the benchmark
checks that they agree (max abs colour difference, "max_diff") before timing. Warm-up first (JIT compilation is
excluded), best of --repeats. Threads: torch.set_num_threads(--threads) drives ours and the peer alike.

    python benchmarks/splat_raster.py [--threads 2] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from earthsynth.render.splat import rasterize_gaussians


def scene(n: int, size: int, seed: int = 0):
    """N Gaussians in a 4 m cube, 6 m in front of one camera with a 60 degree field of view."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * 4.0 + torch.tensor([0.0, 0.0, 6.0])
    spacing = 4.0 / n ** (1 / 3)
    scales = spacing * torch.exp(torch.randn(n, 3, generator=g) * 0.5 - 1.0)
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.rand(n, generator=g) * 0.9 + 0.05
    colors = torch.rand(n, 3, generator=g)
    f = 0.5 * size / math.tan(math.radians(30.0))
    ks = torch.tensor([[[f, 0.0, (size - 1) / 2], [0.0, f, (size - 1) / 2], [0.0, 0.0, 1.0]]])
    return means, quats, scales, opacities, colors, torch.eye(4)[None], ks


def dense_reference(means, quats, scales, opacities, colors, viewmats, ks, size, **_):
    """Every pixel against every Gaussian, in torch, with gsplat's alpha rules (projection: ours, in torch)."""
    from earthsynth.render.splat_project import project_gaussians

    ks = ks.clone()
    ks[:, :2, 2] += 0.5
    proj = project_gaussians(means, quats, scales, opacities, viewmats, ks, size, size, near_plane=0.01,
                             far_plane=1e10, radius_clip=0.0, eps2d=0.3, antialiased=False)
    keep = (proj.radii_cn2[0] > 0).all(dim=-1)
    order = torch.nonzero(keep).reshape(-1)
    order = order[torch.argsort(proj.depths_cn[0, order], stable=True)]
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    d = proj.means2d_cn2[0, order][:, None, :] - torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)[None]
    a, b, c = proj.conics_cn3[0, order].unbind(-1)
    sigma = 0.5 * (a[:, None] * d[..., 0] ** 2 + c[:, None] * d[..., 1] ** 2) + b[:, None] * d[..., 0] * d[..., 1]
    alpha = torch.clamp_max(proj.opacities_cn[0, order][:, None] * torch.exp(-sigma), 0.999)
    ok = (sigma >= 0) & (alpha >= 1 / 255)
    t_after = torch.cumprod(1 - torch.where(ok, alpha, torch.zeros_like(alpha)), dim=0)
    t_before = torch.cat([torch.ones_like(t_after[:1]), t_after[:-1]])
    weight = torch.where(ok & (t_after > 1e-4), alpha * t_before, torch.zeros_like(alpha))
    image = (weight.T @ colors[order]).reshape(1, size, size, 3)
    return image, weight.sum(0).reshape(1, size, size, 1)


def ours(means, quats, scales, opacities, colors, viewmats, ks, size):
    out, alphas, _ = rasterize_gaussians(means, quats, scales, opacities, colors, viewmats, ks, size, size)
    return out, alphas


def time_one(render, inputs, size, repeats: int) -> dict:
    """Best forward and backward wall times (the loss touches colours and alphas), and the process CPU seconds of
    those same rounds (on a shared machine the wall time also counts other people's work)."""
    best = {"forward_s": math.inf, "backward_s": math.inf, "forward_cpu_s": math.inf, "backward_cpu_s": math.inf}
    for _ in range(repeats + 1):  # first round: warm-up
        leaves = [t.clone().requires_grad_(i < 5) for i, t in enumerate(inputs)]
        start, start_cpu = time.perf_counter(), time.process_time()
        out, alphas = render(*leaves, size)
        mid, mid_cpu = time.perf_counter(), time.process_time()
        (out.sum() + alphas.sum()).backward()
        end, end_cpu = time.perf_counter(), time.process_time()
        for key, value in (("forward_s", mid - start), ("backward_s", end - mid),
                           ("forward_cpu_s", mid_cpu - start_cpu), ("backward_cpu_s", end_cpu - mid_cpu)):
            best[key] = min(best[key], value)
    return {k: round(v, 4) for k, v in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peer_cases = [(1000, 64), (2000, 128)]
    cases = peer_cases + ([] if args.quick else [(10_000, 256), (50_000, 256), (10_000, 512), (100_000, 512)])
    for n, size in cases:
        inputs = scene(n, size)
        with torch.no_grad():
            img, alphas = ours(*inputs, size)
        extra = {"coverage": round(float(alphas.mean()), 4), "threads": args.threads}
        backends = [("ours", ours)]
        if (n, size) in peer_cases:
            with torch.no_grad():
                ref_img, _ = dense_reference(*inputs, size)
            extra["max_diff"] = float((img - ref_img).abs().max())
            backends.append(("dense_reference", dense_reference))
        for name, render in backends:
            times = time_one(render, inputs, size, args.repeats)
            print(json.dumps({"n": n, "size": size, "backend": name, **times, **extra}), flush=True)


if __name__ == "__main__":
    main()
