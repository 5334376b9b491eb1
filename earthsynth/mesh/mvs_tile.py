"""One window of the ground grid through the height sweep: projections, cost volume, SGM, winner, rejection.

`config` is an `MVSConfig` (duck-typed here so that this module does not import `mvs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from earthsynth.mesh.mvs_setup import HeightSweep


@dataclass
class TileGeometry:
    """Everything the kernels need about one window: projection polynomials in crop pixels and the crops."""

    coef: np.ndarray          # (V, 2, K, H, W) float64
    stack: np.ndarray         # (V, Hc, Wc) float32, NaN-padded matching crops
    interp_error_px: float    # worst height-interpolation error of the exact camera model


PROJECTION_STRIDE = 8    # exact camera model on every 8th cell, bilinear in between (error measured, ~1e-6 px)


def _coarse_index(size: int, stride: int) -> np.ndarray:
    return np.unique(np.append(np.arange(0, size, stride), size - 1))


def _refine_to_cells(coef_coarse, rows_c, cols_c, height: int, width: int) -> np.ndarray:
    """Bilinear interpolation of coarse-node coefficients (2, K, h, w) to every cell (2, K, H, W)."""
    from scipy.ndimage import map_coordinates

    r = np.interp(np.arange(height), rows_c, np.arange(len(rows_c)))
    c = np.interp(np.arange(width), cols_c, np.arange(len(cols_c)))
    rr, cc = np.meshgrid(r, c, indexing="ij")
    out = np.empty(coef_coarse.shape[:2] + (height, width))
    for axis in range(coef_coarse.shape[0]):
        for k in range(coef_coarse.shape[1]):
            out[axis, k] = map_coordinates(coef_coarse[axis, k], [rr, cc], order=1, mode="nearest")
    return out


def _view_polynomials(view, lon, lat, sweep: HeightSweep, offset, stride: int):
    """(coef (2, K, H, W) in full-image pixels incl. the pointing offset, worst interpolation error px)."""
    from earthsynth.mesh.mvs_cost import chebyshev_nodes, height_polynomials, interpolation_error_px

    nodes = chebyshev_nodes()
    mid, half = 0.5 * (sweep.low + sweep.high), 0.5 * (sweep.high - sweep.low)
    rows_c, cols_c = _coarse_index(lon.shape[0], stride), _coarse_index(lon.shape[1], stride)
    lon_c, lat_c = lon[np.ix_(rows_c, cols_c)], lat[np.ix_(rows_c, cols_c)]
    cols, rows = (np.stack(v) for v in zip(*(view.project(lon_c, lat_c, mid + half * t) for t in nodes)))
    coef = _refine_to_cells(height_polynomials(cols + offset[0], rows + offset[1], nodes), rows_c, cols_c,
                            *lon.shape)

    def exact(t, sub):   # checked between the coarse nodes and between the control heights
        c, r = view.project(lon[sub], lat[sub], mid + half * t)
        return c + offset[0], r + offset[1]

    check = (slice(stride // 2, None, stride), slice(stride // 2, None, stride))
    return coef, interpolation_error_px(coef, exact, 0.5 * (nodes[:-1] + nodes[1:]), sub=check)


def tile_geometry(views, lon, lat, sweep: HeightSweep, offsets_v2=None,
                  stride: int = PROJECTION_STRIDE) -> TileGeometry:
    """Projections of the cells (lon, lat: (H, W)) as per-cell polynomials in height, shifted by each view's
    pointing offset (col, row) px and into the pixels of its crop of the matching image."""
    from earthsynth.mesh.mvs_cost import evaluate_height_polynomials

    offsets = np.zeros((len(views), 2)) if offsets_v2 is None else np.asarray(offsets_v2, np.float64)
    coefs, crops, worst = [], [], 0.0
    for view, offset in zip(views, offsets):
        coef, error = _view_polynomials(view, lon, lat, sweep, offset, stride)
        worst = max(worst, error)
        ends = [evaluate_height_polynomials(coef, t) for t in (-1.0, 1.0)]   # the curves are near-straight
        cols = np.concatenate([e[0].ravel() for e in ends])
        rows = np.concatenate([e[1].ravel() for e in ends])
        h, w = view.shape
        c0, c1 = max(int(np.floor(cols.min())) - 2, 0), min(int(np.ceil(cols.max())) + 3, w)
        r0, r1 = max(int(np.floor(rows.min())) - 2, 0), min(int(np.ceil(rows.max())) + 3, h)
        if c1 - c0 < 2 or r1 - r0 < 2:          # the window is outside this view
            c0, r0, crop = 0, 0, np.full((2, 2), np.nan, np.float32)
        else:
            crop = view.matching_image[r0:r1, c0:c1]
        coef[0, 0] -= c0
        coef[1, 0] -= r0
        coefs.append(coef)
        crops.append(crop)
    stack = np.full((len(views), max(c.shape[0] for c in crops), max(c.shape[1] for c in crops)), np.nan,
                    np.float32)
    for i, crop in enumerate(crops):
        stack[i, :crop.shape[0], :crop.shape[1]] = crop
    return TileGeometry(np.ascontiguousarray(np.stack(coefs)), stack, worst)


def pair_keep(config, n_pairs: int) -> int:
    return max(1, math.ceil(config.pair_keep_fraction * n_pairs))


def sweep_heights(config, geometry: TileGeometry, pair_index: np.ndarray, sweep: HeightSweep):
    """Cost volume -> SGM -> winner with parabolic sub-step -> (heights (H, W) float64, uniqueness (H, W))."""
    from earthsynth.mesh.mvs_cost import zncc_score_volume
    from earthsynth.mesh.mvs_sgm import sgm_aggregate, winner_take_all

    volume = zncc_score_volume(geometry.stack, geometry.coef, sweep.t(sweep.heights), pair_index,
                               config.window_radius, config.min_std ** 2, pair_keep(config, len(pair_index)))
    np.subtract(1.0, volume, out=volume)
    np.nan_to_num(volume, copy=False, nan=1.0)         # undefined score: neutral cost (ZNCC 0)
    total = sgm_aggregate(volume, config.sgm_p1, config.sgm_p2, config.sgm_directions)
    del volume
    best, offset, uniqueness = winner_take_all(total, 2)
    return sweep.low + sweep.step * (best + offset.astype(np.float64)), uniqueness


def reject_cells(config, sweep: HeightSweep, geometry: TileGeometry, pair_index, heights, uniqueness):
    """Fused peak ZNCC at the chosen heights (confidence) and the keep mask: each pair counts only where both
    its views see the cell (z-buffer); keep = enough supporting pairs, high peak, distinctive minimum, and no
    jump of the dense heights nearby."""
    from earthsynth.mesh.mvs_cost import evaluate_height_polynomials, fuse_pair_scores, zncc_pair_scores_at
    from earthsynth.mesh.mvs_filter import near_discontinuity, visibility_mask

    t = sweep.t(heights)
    scores = zncc_pair_scores_at(geometry.stack, geometry.coef, t, pair_index, config.window_radius,
                                 config.min_std ** 2)
    tolerance = config.occlusion_tolerance_m or 2.0 * sweep.step
    visible = []
    for v in range(geometry.coef.shape[0]):
        cols, rows = evaluate_height_polynomials(geometry.coef[v], t)
        visible.append(visibility_mask(cols, rows, heights, geometry.stack.shape[1], geometry.stack.shape[2],
                                       tolerance))
    seen = np.stack([visible[a] & visible[b] for a, b in pair_index])
    scores = np.where(seen, scores, np.nan)
    confidence = fuse_pair_scores(scores, pair_keep(config, len(pair_index)))
    with np.errstate(invalid="ignore"):
        support = (scores >= config.min_ncc).sum(axis=0)
        keep = (support >= min(config.min_support_pairs, len(pair_index))) & (confidence >= config.min_ncc)
    keep &= uniqueness <= config.max_uniqueness
    radius = config.window_radius if config.edge_radius is None else config.edge_radius
    if radius > 0:
        keep &= ~near_discontinuity(heights, config.edge_jump_m, radius)
    return confidence, keep
