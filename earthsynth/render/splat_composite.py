"""The compositing stage of the CPU splat backend as a `torch.autograd.Function`: numba forward, analytic backward.

Everything before this stage (projection, spherical harmonics, opacity compensation) stays in torch autograd;
this Function takes the projected 2D quantities and returns the images, and its backward returns the gradients
w.r.t. means2d, conics, colours and opacities, so `meta["means2d"].retain_grad()` sees the view-space positional
gradient that densification reads.

Why not plain torch: a vectorised torch compositor keeps every (pixel, Gaussian) pair alive for autograd, gigabytes
at 100k Gaussians; the kernels here keep only the final transmittance and the last contributor per pixel.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from earthsynth.render import splat_kernel as kern

TILES_PER_TASK = 4  # small tasks so that threads balance uneven tiles; outputs are per tile, so order is free


@dataclass(frozen=True)
class TileBins:
    """Gaussians binned to tiles: tile k (camera * tiles_w * tiles_h + tile) holds ids[offsets[k]:offsets[k+1]],
    flat Gaussian ids (camera * N + gaussian) front to back."""

    offsets: np.ndarray
    ids: np.ndarray
    tile_size: int
    tiles_w: int
    tiles_h: int
    width: int
    height: int
    n_cameras: int

    @property
    def n_isects(self) -> int:
        return int(self.ids.size)

    @property
    def max_len(self) -> int:
        return int(np.diff(self.offsets).max()) if self.offsets.size > 1 else 0


def bin_gaussians(means2d_cn2: torch.Tensor, radii_cn2: torch.Tensor, depths_cn: torch.Tensor, *, width: int,
                  height: int, tile_size: int) -> TileBins:
    """Visible Gaussians (radii > 0) sorted by depth per camera (stable: ties keep index order, as gsplat's radix
    sort of (tile, depth) keys does), then dealt to the tiles their box touches."""
    n_cameras, n = radii_cn2.shape[:2]
    tiles_w, tiles_h = -(-width // tile_size), -(-height // tile_size)
    radii = radii_cn2.detach().cpu().numpy().astype(np.float64).reshape(-1, 2)
    visible_cn = (radii_cn2 > 0).all(dim=-1).cpu().numpy()
    depths = depths_cn.detach().cpu().numpy()
    orders = []
    for cam in range(n_cameras):
        idx = np.flatnonzero(visible_cn[cam])
        orders.append(idx[np.argsort(depths[cam, idx], kind="stable")] + cam * n)
    order = np.concatenate(orders).astype(np.int64) if orders else np.zeros(0, np.int64)
    means2d = means2d_cn2.detach().cpu().numpy().astype(np.float64).reshape(-1, 2)
    offsets, ids = kern.bin_to_tiles(order, max(n, 1), means2d, radii, tile_size, tiles_w, tiles_h, n_cameras)
    return TileBins(offsets, ids, tile_size, tiles_w, tiles_h, width, height, n_cameras)


def _pack(means2d_cn2, conics_cn3, opacities_cn, colors_cnd) -> np.ndarray:
    """The kernels' per-Gaussian rows (see splat_kernel): float64 whatever the input precision."""
    with torch.no_grad():
        opac = opacities_cn.detach().to(torch.float64)
        cut = torch.log(opac.clamp_min(1e-30) / kern.ALPHA_THRESHOLD) + kern.SIGMA_SLACK
        a, b, c = conics_cn3.detach().to(torch.float64).unbind(-1)
        # half extent in y of {0.5 d^T Q d <= cut}: sqrt(2 cut (Q^-1)_yy) (the kernels add a row of margin)
        det = a * c - b * b
        scale = 2.0 * cut.clamp_min(0.0) / torch.where(det > 0, det, torch.ones_like(det))
        extent_y = torch.sqrt(scale * a.clamp_min(0.0))
        parts = [means2d_cn2, conics_cn3, opac, cut, extent_y, colors_cnd]
        parts = [p.detach().to(torch.float64).cpu() for p in parts]
        packed = torch.cat([p if p.dim() == 3 else p[..., None] for p in parts], dim=-1)
    return packed.reshape(-1, packed.shape[-1]).numpy()


def _run_tiles(kernel, bins: TileBins, n_threads: int, *args) -> None:
    """Run `kernel(tile_list, ...)` over the non-empty tiles, on `n_threads` threads (the kernels release the GIL)."""
    counts = np.diff(bins.offsets)
    tiles = np.flatnonzero(counts).astype(np.int64)
    if tiles.size == 0:
        return
    common = (bins.offsets, bins.ids) + args[:1] + (bins.tiles_w, bins.tile_size, bins.width, bins.height,
                                                    bins.max_len) + args[1:]
    if n_threads <= 1 or tiles.size <= TILES_PER_TASK:
        kernel(tiles, *common)
        return
    # biggest tiles first so that the last tasks are short
    tiles = tiles[np.argsort(-counts[tiles], kind="stable")]
    n_chunks = max(1, tiles.size // TILES_PER_TASK)
    # contiguous copies: a strided view would make numba compile a second specialisation of the kernel
    chunks = [np.ascontiguousarray(tiles[i::n_chunks]) for i in range(n_chunks)]
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for future in [pool.submit(kernel, chunk, *common) for chunk in chunks]:
            future.result()


def _reduce(ids, grad_isect, n_flat: int, n_threads: int) -> np.ndarray:
    """Per-Gaussian gradient rows: the intersections' rows summed per flat id, one id range per thread."""
    out = np.zeros((n_flat, grad_isect.shape[1]))
    bounds = np.linspace(0, n_flat, max(1, min(n_threads, n_flat)) + 1).astype(np.int64)
    if bounds.size <= 2:
        kern.reduce_intersections(ids, grad_isect, 0, n_flat, out)
        return out
    with ThreadPoolExecutor(max_workers=bounds.size - 1) as pool:
        for future in [pool.submit(kern.reduce_intersections, ids, grad_isect, int(lo), int(hi), out)
                       for lo, hi in itertools.pairwise(bounds)]:
            future.result()
    return out


class CompositeGaussians(torch.autograd.Function):
    """(means2d [C,N,2], conics [C,N,3], colors [C,N,D], opacities [C,N], bins) -> colours [C,H,W,D], alphas
    [C,H,W,1], both without background."""

    @staticmethod
    def forward(ctx, means2d_cn2, conics_cn3, colors_cnd, opacities_cn, bins: TileBins, n_threads: int):
        n_cameras, n, n_ch = colors_cnd.shape
        n_pix = n_cameras * bins.height * bins.width
        params = _pack(means2d_cn2, conics_cn3, opacities_cn, colors_cnd)
        color_pd = np.zeros((n_pix, n_ch))
        t_p = np.ones(n_pix)
        last_p = np.full(n_pix, -1, np.int64)
        _run_tiles(kern.forward_tiles, bins, n_threads, params, color_pd, t_p, last_p)
        ctx.saved = (params, bins, t_p, last_p, n_threads, (n_cameras, n, n_ch))
        dtype, device = colors_cnd.dtype, colors_cnd.device
        shape = (n_cameras, bins.height, bins.width)
        colors_out = torch.from_numpy(color_pd).reshape(*shape, n_ch).to(device=device, dtype=dtype)
        alphas_out = torch.from_numpy(1.0 - t_p).reshape(*shape, 1).to(device=device, dtype=dtype)
        return colors_out, alphas_out

    @staticmethod
    def backward(ctx, v_colors, v_alphas):
        params, bins, t_p, last_p, n_threads, (n_cameras, n, n_ch) = ctx.saved
        device, dtype = v_colors.device, v_colors.dtype
        v_color_pd = v_colors.detach().to(torch.float64).cpu().reshape(-1, n_ch).contiguous().numpy()
        v_alpha_p = v_alphas.detach().to(torch.float64).cpu().reshape(-1).contiguous().numpy()
        grad_isect = np.zeros((bins.n_isects, kern.G_COLOR + n_ch))
        _run_tiles(kern.backward_tiles, bins, n_threads, params, t_p, last_p, v_color_pd, v_alpha_p, grad_isect)
        grads = _reduce(bins.ids, grad_isect, n_cameras * n, n_threads)
        grads = torch.from_numpy(grads).reshape(n_cameras, n, kern.G_COLOR + n_ch).to(device=device, dtype=dtype)
        v_means2d, v_conics = grads[..., kern.G_MX:kern.G_MX + 2], grads[..., kern.G_A:kern.G_A + 3]
        return v_means2d, v_conics, grads[..., kern.G_COLOR:], grads[..., kern.G_OPAC], None, None
