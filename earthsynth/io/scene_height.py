"""A first guess of the ground height of an imported scene, before any reconstruction.

RPC height offsets describe the whole strip (Reunion: offset 1295 m, ground at ~2320 m), so they are a poor
centre for the scene's height range. With two or more views we run a tiny photo-consistency sweep at a few
central points (normalised cross-correlation of patches reprojected through the RPCs) and take the median of
the best heights. With one view, or when the sweep is not conclusive, the RPC offset is used.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates


def _patch_offsets(radius_px: int) -> np.ndarray:
    d = np.arange(-radius_px, radius_px + 1, dtype=float)
    dc, dr = np.meshgrid(d, d)
    return np.stack([dc.ravel(), dr.ravel()], axis=1)


def _ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1)) + 1e-9
    return (a * b).sum(-1) / den


def _patch_scores(images, rpcs, pc, pr, heights) -> np.ndarray:
    """Mean NCC between the reference patch and its reprojection into the other views, per height."""
    ref_patch = map_coordinates(images[0], [pr, pc], order=1)
    cc = np.repeat(pc[None], len(heights), 0)
    rr = np.repeat(pr[None], len(heights), 0)
    aa = np.repeat(heights[:, None], len(pc), 1)
    lon, lat = rpcs[0].localization(cc, rr, aa)   # the ray of every reference pixel at every height
    score = np.zeros(len(heights))
    for img, rpc in zip(images[1:], rpcs[1:]):
        col, row = rpc.projection(lon, lat, aa)
        other = map_coordinates(img, [row.ravel(), col.ravel()], order=1, cval=np.nan)
        s = _ncc(np.repeat(ref_patch[None], len(heights), 0), other.reshape(len(heights), -1))
        score += np.nan_to_num(s, nan=-1.0)
    return score / (len(images) - 1)


def sweep_ground_height(images: list[np.ndarray], rpcs: list, *, grid: int = 4, radius_px: int = 5,
                        coarse_step_m: float = 16.0, fine_step_m: float = 1.0,
                        min_ncc: float = 0.6) -> float | None:
    """Median best height over a grid of points around the first image's centre, or None if inconclusive.

    Coarse-to-fine: a sweep over the RPC's whole height range, then a fine one around the best coarse
    height. images: (H, W) single-band float arrays; rpcs: matching RPC models."""
    ref_rpc = rpcs[0]
    h, w = images[0].shape
    coarse = np.arange(ref_rpc.alt_offset - ref_rpc.alt_scale, ref_rpc.alt_offset + ref_rpc.alt_scale,
                       coarse_step_m)
    offsets = _patch_offsets(radius_px)
    best = []
    for c0 in np.linspace(0.3 * w, 0.7 * w, grid):
        for r0 in np.linspace(0.3 * h, 0.7 * h, grid):
            pc, pr = c0 + offsets[:, 0], r0 + offsets[:, 1]
            h0 = coarse[int(np.argmax(_patch_scores(images, rpcs, pc, pr, coarse)))]
            fine = np.arange(h0 - coarse_step_m, h0 + coarse_step_m + fine_step_m, fine_step_m)
            score = _patch_scores(images, rpcs, pc, pr, fine)
            k = int(np.argmax(score))
            if score[k] >= min_ncc:
                best.append(fine[k])
    if len(best) < max(3, grid * grid // 4):
        return None
    return float(np.median(best))
