"""Benchmark: CPU Gaussian-splat rasterisation, forward and backward, ours vs two plain-torch peers.

Ours is earthsynth.render.splat.rasterize_gaussians (on the CPU: numba projection and tiles, analytic backwards).
The peers are plain PyTorch: our torch-autograd projection (`project_gaussians(..., fused=False)`, the path ours
takes on other devices) and torch autograd for the backward, with gsplat's per-pixel rules (alpha = min(0.999,
o exp(-sigma)), dropped below 1/255, a pixel stops before T would fall to 1e-4):
  * "dense" ("dense_reference" in the default rows): every pixel against every Gaussian, sorted by depth, a
    cumulative product down the Gaussian axis; it needs N x pixels memory, so it runs only at small sizes;
  * "sort_scatter": the (pixel, Gaussian) pairs inside each Gaussian's opacity-aware box (the box ours bins by,
    see earthsynth/render/splat.py), sorted by (pixel, depth), transmittance by a segmented cumulative sum of
    log(1 - alpha) per pixel, colour * alpha * T scattered into the image.
Every run checks first that the peers agree with ours (max abs colour difference, "max_diff").

Default rows, best of --repeats after a warm-up (JIT compilation excluded), on a cloud of anisotropic Gaussians
sized by the point spacing: {"n", "size", "backend", "forward_s", "backward_s", "forward_cpu_s", ...}
("*_cpu_s": CPU seconds of the process, all threads, since on a shared machine wall time counts others' work).

--issue: the issue's rows: n in {20000, 100000} random Gaussians (SH degree 0, about 1 px sigma) at 256^2,
"seconds" = forward + backward, median of --repeats after one warm-up, then a summary row with ours' speed-up over
sort_scatter and whether it reaches the 3x goal; an agreement row (colours and gradients vs dense, 2k at 64^2)
comes first. --quick shrinks either mode to a smoke run. Threads: torch.set_num_threads(--threads) drives all.

    python benchmarks/splat_raster.py [--threads 2] [--repeats 3] [--quick] [--issue]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import time

import torch

from earthsynth.render.splat import rasterize_gaussians
from earthsynth.render.splat_project import SH_C0, project_gaussians, sh_colors

ALPHA_THRESHOLD, MAX_ALPHA, TRANSMITTANCE_THRESHOLD = 1 / 255, 0.999, 1e-4  # gsplat's rules, as ours
ISSUE_CASES, ISSUE_QUICK_CASES, ISSUE_SIZE = (20_000, 100_000), (2_000, 5_000), 256
DENSE_BUDGET_BYTES = 2 * 1024 ** 3  # the dense peer holds ~12 float32 [N, pixels] tensors with autograd


def scene(n: int, size: int, seed: int = 0):
    """N Gaussians in a 4 m cube, 6 m in front of one camera with a 60 degree field of view."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * 4.0 + torch.tensor([0.0, 0.0, 6.0])
    spacing = 4.0 / n ** (1 / 3)
    scales = spacing * torch.exp(torch.randn(n, 3, generator=g) * 0.5 - 1.0)
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.rand(n, generator=g) * 0.9 + 0.05
    colors = torch.rand(n, 3, generator=g)
    return means, quats, scales, opacities, colors, torch.eye(4)[None], _intrinsics(size)


def issue_scene(n: int, size: int, seed: int = 0, sigma_px: float = 1.0):
    """N Gaussians spread over the whole view at 5-7 m, world scales set so each is about sigma_px pixels (one
    standard deviation) on screen, colours as SH degree-0 coefficients [N, 1, 3] giving RGB in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    half_fov = math.tan(math.radians(30.0))
    z = 5.0 + 2.0 * torch.rand(n, generator=g)
    xy = (2.0 * torch.rand(n, 2, generator=g) - 1.0) * half_fov * z[:, None]
    means = torch.cat([xy, z[:, None]], dim=-1)
    focal = 0.5 * size / half_fov
    scales = (sigma_px * z / focal)[:, None] * torch.exp(0.2 * torch.randn(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.rand(n, generator=g) * 0.9 + 0.05
    sh0 = (torch.rand(n, 1, 3, generator=g) - 0.5) / SH_C0
    return means, quats, scales, opacities, sh0, torch.eye(4)[None], _intrinsics(size)


def _intrinsics(size: int) -> torch.Tensor:
    f = 0.5 * size / math.tan(math.radians(30.0))
    return torch.tensor([[[f, 0.0, (size - 1) / 2], [0.0, f, (size - 1) / 2], [0.0, 0.0, 1.0]]])


def _project(means, quats, scales, opacities, colors, viewmats, ks, size, sh_degree):
    """Our torch-autograd projection (`fused=False`: plain PyTorch, and independent of the numba projection ours
    runs on the CPU) in gsplat's pixel convention, and RGB [N, 3] (from SH when sh_degree is set)."""
    ks = ks.clone()
    ks[:, :2, 2] += 0.5
    proj = project_gaussians(means, quats, scales, opacities, viewmats, ks, size, size, near_plane=0.01,
                             far_plane=1e10, radius_clip=0.0, eps2d=0.3, antialiased=False, fused=False)
    rgb = colors if sh_degree is None else sh_colors(sh_degree, colors, means, viewmats)[0]
    return proj, rgb


def dense_reference(means, quats, scales, opacities, colors, viewmats, ks, size, sh_degree=None):
    """Every pixel against every Gaussian, in torch, with gsplat's alpha rules."""
    proj, rgb = _project(means, quats, scales, opacities, colors, viewmats, ks, size, sh_degree)
    keep = (proj.radii_cn2[0] > 0).all(dim=-1)
    order = torch.nonzero(keep).reshape(-1)
    order = order[torch.argsort(proj.depths_cn[0, order], stable=True)]
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    d = proj.means2d_cn2[0, order][:, None, :] - torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)[None]
    a, b, c = proj.conics_cn3[0, order].unbind(-1)
    sigma = 0.5 * (a[:, None] * d[..., 0] ** 2 + c[:, None] * d[..., 1] ** 2) + b[:, None] * d[..., 0] * d[..., 1]
    alpha = torch.clamp_max(proj.opacities_cn[0, order][:, None] * torch.exp(-sigma), MAX_ALPHA)
    ok = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
    t_after = torch.cumprod(1 - torch.where(ok, alpha, torch.zeros_like(alpha)), dim=0)
    t_before = torch.cat([torch.ones_like(t_after[:1]), t_after[:-1]])
    weight = torch.where(ok & (t_after > TRANSMITTANCE_THRESHOLD), alpha * t_before, torch.zeros_like(alpha))
    image = (weight.T @ rgb[order]).reshape(1, size, size, 3)
    return image, weight.sum(0).reshape(1, size, size, 1)


def _box_pairs(means2d_n2, radii_n2, size):
    """(pixel, Gaussian) pairs for every pixel whose centre (x + 0.5, y + 0.5) lies in a Gaussian's box: flat
    pixel index y * size + x [M], (x, y) [M, 2] and visible-Gaussian index [M]."""
    with torch.no_grad():
        lo = torch.ceil(means2d_n2 - radii_n2 - 0.5).clamp(0, size - 1).long()
        hi = torch.floor(means2d_n2 + radii_n2 - 0.5).clamp(0, size - 1).long()
        widths = (hi - lo + 1).clamp_min(0)
        counts = widths[:, 0] * widths[:, 1]
        gid = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        # index_select on 1D tensors: torch's general advanced indexing is several times slower on CPU
        k = torch.arange(len(gid), device=gid.device) - (torch.cumsum(counts, 0) - counts).index_select(0, gid)
        width = widths[:, 0].contiguous().index_select(0, gid)
        row = torch.div(k, width, rounding_mode="floor")
        px = lo[:, 0].contiguous().index_select(0, gid) + k - row * width
        py = lo[:, 1].contiguous().index_select(0, gid) + row
    return py * size + px, torch.stack([px, py], dim=-1), gid


def _pair_alpha(rows_mk, centres_m2):
    """sigma and alpha = min(0.999, o exp(-sigma)) of each (pixel, Gaussian) pair from the Gaussian's row."""
    d = rows_mk[:, :2] - centres_m2
    a, b, c, opacity = rows_mk[:, 2:6].unbind(-1)
    sigma = 0.5 * (a * d[:, 0] ** 2 + c * d[:, 1] ** 2) + b * d[:, 0] * d[:, 1]
    return sigma, torch.clamp_max(opacity * torch.exp(-sigma), MAX_ALPHA)


def sort_scatter_rasterize(means, quats, scales, opacities, colors, viewmats, ks, size, sh_degree=None):
    """Per-pixel (pixel, Gaussian) pairs sorted by (pixel, depth), composited and scattered, in torch autograd.
    Pairs with alpha < 1/255 are dropped before the sort and the autograd pass, which only speeds the peer up."""
    proj, rgb = _project(means, quats, scales, opacities, colors, viewmats, ks, size, sh_degree)
    visible = torch.nonzero((proj.radii_cn2[0] > 0).all(dim=-1)).reshape(-1)
    depth_rank = torch.empty_like(visible)
    depth_rank[torch.argsort(proj.depths_cn[0, visible].detach(), stable=True)] = torch.arange(
        len(visible), device=visible.device)
    # one row per visible Gaussian (mean x, y, conic a, b, c, opacity, colour): one gather per pair, not seven
    params = torch.cat([proj.means2d_cn2[0], proj.conics_cn3[0], proj.opacities_cn[0, :, None], rgb],
                       dim=-1)[visible]
    pix, pixel_xy, gid = _box_pairs(params[:, :2].detach(), proj.radii_cn2[0, visible].float(), size)
    centres = pixel_xy.to(means.dtype) + 0.5
    with torch.no_grad():  # which pairs count, then sort only those (the rest carry no weight)
        sigma, alpha = _pair_alpha(params.index_select(0, gid), centres)
        keep = torch.nonzero((sigma >= 0) & (alpha >= ALPHA_THRESHOLD)).reshape(-1)
        keys = pix.index_select(0, keep) * len(visible) + depth_rank.index_select(0, gid.index_select(0, keep))
        order = keep.index_select(0, torch.argsort(keys))
    pix, gid = pix.index_select(0, order), gid.index_select(0, order)
    rows = params.index_select(0, gid)
    _, alpha = _pair_alpha(rows, centres.index_select(0, order))
    # Segmented exclusive cumulative sum of log(1 - alpha) per pixel, in float64: the running sum over all pairs
    # grows large, and subtracting its value at each pixel's first pair must not eat float32's digits.
    log_keep = torch.log1p(-alpha.double())
    running = torch.cumsum(log_keep, 0)
    before = running - log_keep
    first = torch.ones_like(pix, dtype=torch.bool)
    first[1:] = pix[1:] != pix[:-1]
    start = torch.cummax(torch.where(first, torch.arange(len(pix), device=pix.device), 0), 0).values
    before_start = before.index_select(0, start)
    log_t_before = before - before_start
    contributes = (running - before_start).detach() > math.log(TRANSMITTANCE_THRESHOLD)
    weight = torch.where(contributes, alpha * torch.exp(log_t_before).to(alpha.dtype), torch.zeros_like(alpha))
    image = torch.zeros(size * size, rgb.shape[-1], dtype=rgb.dtype, device=rgb.device)
    image = image.scatter_add(0, pix[:, None].expand(-1, rgb.shape[-1]), weight[:, None] * rows[:, 6:])
    alphas = torch.zeros(size * size, dtype=weight.dtype, device=weight.device).scatter_add(0, pix, weight)
    return image.reshape(1, size, size, -1), alphas.reshape(1, size, size, 1)


def ours(means, quats, scales, opacities, colors, viewmats, ks, size, sh_degree=None):
    out, alphas, _ = rasterize_gaussians(means, quats, scales, opacities, colors, viewmats, ks, size, size,
                                         sh_degree=sh_degree)
    return out, alphas


def timed_rounds(render, inputs, size, repeats: int) -> list[dict]:
    """Forward and backward (the loss touches colours and alphas) wall and process-CPU seconds of each round after
    one warm-up round."""
    rounds = []
    for r in range(repeats + 1):
        leaves = [t.clone().requires_grad_(i < 5) for i, t in enumerate(inputs)]
        start, start_cpu = time.perf_counter(), time.process_time()
        out, alphas = render(*leaves, size)
        mid, mid_cpu = time.perf_counter(), time.process_time()
        (out.sum() + alphas.sum()).backward()
        end, end_cpu = time.perf_counter(), time.process_time()
        if r:
            rounds.append({"forward_s": mid - start, "backward_s": end - mid, "forward_cpu_s": mid_cpu - start_cpu,
                           "backward_cpu_s": end_cpu - mid_cpu})
    return rounds


def time_one(render, inputs, size, repeats: int) -> dict:
    """Best of the rounds, per phase."""
    rounds = timed_rounds(render, inputs, size, repeats)
    return {k: round(min(r[k] for r in rounds), 4) for k in rounds[0]}


def time_median(render, inputs, size, repeats: int) -> dict:
    """Median forward + backward wall seconds ("seconds"), and the median of each phase."""
    rounds = timed_rounds(render, inputs, size, repeats)
    out = {"seconds": statistics.median(r["forward_s"] + r["backward_s"] for r in rounds)}
    out.update({k: statistics.median(r[k] for r in rounds) for k in rounds[0]})
    return {k: round(v, 4) for k, v in out.items()}


def gradients(render, inputs, size) -> list[torch.Tensor]:
    leaves = [t.clone().requires_grad_(i < 5) for i, t in enumerate(inputs)]
    out, alphas = render(*leaves, size)
    (out.sum() + alphas.sum()).backward()
    return [t.grad for t in leaves[:5]]


def agreement(n: int = 2000, size: int = 64) -> dict:
    """Colour max abs difference vs ours, and each gradient's max abs difference vs dense relative to the dense
    gradient's largest entry, on the issue's kind of scene at a size the dense peer fits."""
    inputs = issue_scene(n, size, seed=1)
    renders = {"ours": ours, "dense": dense_reference, "sort_scatter": sort_scatter_rasterize}
    renders = {k: functools.partial(v, sh_degree=0) for k, v in renders.items()}
    with torch.no_grad():
        images = {k: r(*inputs, size)[0] for k, r in renders.items()}
    grads = {k: gradients(r, inputs, size) for k, r in renders.items()}
    names = ("means", "quats", "scales", "opacities", "colors")
    row = {"check": "agreement", "n": n, "size": size}
    for k in ("dense", "sort_scatter"):
        row[f"max_diff_{k}_vs_ours"] = float((images[k] - images["ours"]).abs().max())
    for k in ("ours", "sort_scatter"):
        row[f"grad_rel_diff_{k}_vs_dense"] = {
            name: float((g - ref).abs().max() / ref.abs().max())
            for name, g, ref in zip(names, grads[k], grads["dense"])}
    return row


def issue_rows(cases, threads: int, repeats: int) -> list[dict]:
    """The issue's rows: ours, dense (or why it was skipped) and sort_scatter at each n, then the summary."""
    rows, speedups, load_before = [], {}, os.getloadavg()[0]
    for n in cases:
        inputs = issue_scene(n, ISSUE_SIZE)
        base = {"n": n, "size": ISSUE_SIZE, "sh_degree": 0, "threads": threads}
        with torch.no_grad():
            img, alphas = ours(*inputs, ISSUE_SIZE, sh_degree=0)
            peer_img, _ = sort_scatter_rasterize(*inputs, ISSUE_SIZE, sh_degree=0)
        backends = [("ours", ours, {"coverage": round(float(alphas.mean()), 4)}),
                    ("sort_scatter", sort_scatter_rasterize, {"max_diff": float((peer_img - img).abs().max())})]
        if n * ISSUE_SIZE ** 2 * 4 * 12 <= DENSE_BUDGET_BYTES:
            backends.insert(1, ("dense", dense_reference, {}))
        else:
            rows.append({"backend": "dense", **base, "skipped": "memory"})
        seconds = {}
        for name, render, extra in backends:
            times = time_median(functools.partial(render, sh_degree=0), inputs, ISSUE_SIZE, repeats)
            seconds[name] = times["seconds"]
            rows.append({"backend": name, **base, **times, **extra})
        speedups[str(n)] = round(seconds["sort_scatter"] / seconds["ours"], 2)
    rows.append({"summary": f"forward + backward seconds at {ISSUE_SIZE}^2, SH degree 0, ~1 px sigma, median of "
                            f"{repeats} after one warm-up, --threads {threads}",
                 "speedup_vs_sort_scatter": speedups, "goal_3x": all(s >= 3.0 for s in speedups.values()),
                 # torch's thread pool slows down far more than numba's when other processes hold the cores
                 "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
                 "cpu_count": os.cpu_count()})
    return rows


def default_rows(quick: bool, threads: int, repeats: int):
    peer_cases = [(1000, 64), (2000, 128)]
    cases = peer_cases + ([] if quick else [(10_000, 256), (50_000, 256), (10_000, 512), (100_000, 512)])
    for n, size in cases:
        inputs = scene(n, size)
        with torch.no_grad():
            img, alphas = ours(*inputs, size)
        extra = {"coverage": round(float(alphas.mean()), 4), "threads": threads}
        backends = [("ours", ours, {})]
        if (n, size) in peer_cases:
            for name, render in (("dense_reference", dense_reference), ("sort_scatter", sort_scatter_rasterize)):
                with torch.no_grad():
                    peer_img, _ = render(*inputs, size)
                backends.append((name, render, {"max_diff": float((img - peer_img).abs().max())}))
        for name, render, peer_extra in backends:
            yield {"n": n, "size": size, "backend": name, **time_one(render, inputs, size, repeats), **extra,
                   **peer_extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--issue", action="store_true", help="the issue's rows: 20k / 100k Gaussians at 256^2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.issue:
        for row in default_rows(args.quick, args.threads, args.repeats):
            print(json.dumps(row), flush=True)
        return
    check = agreement()
    print(json.dumps(check), flush=True)
    if max(check["max_diff_dense_vs_ours"], check["max_diff_sort_scatter_vs_ours"]) > 1e-3:
        raise SystemExit("the peers disagree with ours by more than 1e-3: not timing them")
    for row in issue_rows(ISSUE_QUICK_CASES if args.quick else ISSUE_CASES, args.threads, args.repeats):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
