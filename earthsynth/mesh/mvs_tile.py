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


def tile_geometry(views, lon, lat, sweep: HeightSweep, offsets_v2=None) -> TileGeometry:
    """Exact projections of the cells (lon, lat: (H, W)) at the control heights -> per-cell polynomials in
    height, shifted by each view's pointing offset (col, row) px and into the pixels of its crop."""
    from earthsynth.mesh.mvs_cost import chebyshev_nodes, height_polynomials, interpolation_error_px

    nodes = chebyshev_nodes()
    mid, half = 0.5 * (sweep.low + sweep.high), 0.5 * (sweep.high - sweep.low)
    offsets = np.zeros((len(views), 2)) if offsets_v2 is None else np.asarray(offsets_v2, np.float64)
    coefs, crops, worst = [], [], 0.0
    for view, (d_col, d_row) in zip(views, offsets):
        cols, rows = (np.stack(v) for v in zip(*(view.project(lon, lat, mid + half * t) for t in nodes)))
        coef = height_polynomials(cols + d_col, rows + d_row, nodes)
        worst = max(worst, interpolation_error_px(
            coef, lambda t, sub, v=view, dc=d_col, dr=d_row: tuple(
                a + b for a, b in zip(v.project(lon[sub], lat[sub], mid + half * t), (dc, dr))),
            0.5 * (nodes[:-1] + nodes[1:])))
        image = view.matching_image
        h, w = image.shape
        c0, c1 = max(int(np.floor(cols.min() + d_col)) - 2, 0), min(int(np.ceil(cols.max() + d_col)) + 3, w)
        r0, r1 = max(int(np.floor(rows.min() + d_row)) - 2, 0), min(int(np.ceil(rows.max() + d_row)) + 3, h)
        if c1 - c0 < 2 or r1 - r0 < 2:          # the window is outside this view
            c0, r0, crop = 0, 0, np.full((2, 2), np.nan, np.float32)
        else:
            crop = image[r0:r1, c0:c1]
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
    its views see the cell (z-buffer); keep = enough supporting pairs, high peak, distinctive minimum."""
    from earthsynth.mesh.mvs_cost import evaluate_height_polynomials, fuse_pair_scores, zncc_pair_scores_at
    from earthsynth.mesh.mvs_filter import visibility_mask

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
    return confidence, keep
