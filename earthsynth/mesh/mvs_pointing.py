"""Relative pointing correction: shift each view's image coordinates so that it agrees with the reference view.

RPCs of different views carry independent pointing errors of a pixel or more (the Reunion Pleiades pair: about
0.8 px). Across the epipolar direction such an error cannot be absorbed by any height, so it lowers every ZNCC and
turns weak textures into wrong matches. s2p corrects it with a translation of the secondary image estimated from
SIFT matches (de Franchis et al. 2014); we estimate the same translation densely:

1. sweep a central window of the ground grid with the uncorrected cameras and keep its confident cells
   (distinctive SGM minimum);
2. for each view other than the reference, resample it at those cells' 3D points shifted by (d_col, d_row) and
   maximise the mean 5x5 ZNCC with the reference view over a grid of shifts (1 px, then 0.25 px, then a
   parabola per axis).

The reference view is never moved, so it alone fixes the absolute geolocation; the shifts make every other view
consistent with it at the consensus heights.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates, uniform_filter

MIN_CONFIDENT_CELLS = 400
CONFIDENT_UNIQUENESS = 0.5


def _zncc_map(a: np.ndarray, b: np.ndarray, size: int) -> np.ndarray:
    mean_a, mean_b = uniform_filter(a, size), uniform_filter(b, size)
    var_a = uniform_filter(a * a, size) - mean_a ** 2
    var_b = uniform_filter(b * b, size) - mean_b ** 2
    cov = uniform_filter(a * b, size) - mean_a * mean_b
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / np.sqrt(var_a * var_b)


def _sample(stack, v, cols, rows):
    return map_coordinates(stack[v].astype(np.float64), [rows, cols], order=1, cval=np.nan)


def _parabola_vertex(minus: float, centre: float, plus: float) -> float:
    curvature = minus - 2.0 * centre + plus
    return 0.0 if curvature >= 0 else float(np.clip(0.5 * (minus - plus) / curvature, -0.5, 0.5))


def _best_shift(score_fn, search_px: float) -> tuple[float, float, float]:
    """Maximise score_fn(d_col, d_row): 1 px grid over ±search_px, 0.25 px grid around the best, then a
    parabola along each axis through the 0.25 px neighbours (the ZNCC peak is ~1.5 px wide, so this is smooth)."""
    best = (-np.inf, 0.0, 0.0)
    for step, radius in ((1.0, search_px), (0.25, 0.75)):
        c_col, c_row = best[1:]
        offsets = np.arange(-radius, radius + step / 2, step)
        grid = {}
        for d_col in c_col + offsets:
            for d_row in c_row + offsets:
                grid[round(d_col, 4), round(d_row, 4)] = score = score_fn(d_col, d_row)
                if score > best[0]:
                    best = (score, float(d_col), float(d_row))
    score, d_col, d_row = best
    around = [grid.get((round(d_col + dc, 4), round(d_row + dr, 4)))
              for dc, dr in ((-0.25, 0), (0.25, 0), (0, -0.25), (0, 0.25))]
    if all(v is not None for v in around):
        d_col += 0.25 * _parabola_vertex(around[0], score, around[1])
        d_row += 0.25 * _parabola_vertex(around[2], score, around[3])
        score = score_fn(d_col, d_row)
    return score, d_col, d_row


def estimate_pointing_offsets(config, grid, views, pair_index, sweep, to_lonlat, reference: int):
    """-> (offsets (V, 2) px to add to each view's projected (col, row), report dict for mvs.json)."""
    from earthsynth.mesh.mvs_cost import evaluate_height_polynomials
    from earthsynth.mesh.mvs_tile import sweep_heights, tile_geometry

    offsets = np.zeros((len(views), 2))
    size = min(config.pointing_window_cells, grid.height, grid.width)
    r0, c0 = (grid.height - size) // 2, (grid.width - size) // 2
    lon, lat = (np.asarray(v) for v in to_lonlat(*grid.centers(slice(r0, r0 + size), slice(c0, c0 + size))))
    geometry = tile_geometry(views, lon, lat, sweep)
    heights, uniqueness = sweep_heights(config, geometry, pair_index, sweep)
    margin = config.window_radius + 1
    confident = uniqueness <= CONFIDENT_UNIQUENESS
    confident[:margin], confident[-margin:], confident[:, :margin], confident[:, -margin:] = False, False, False, False
    report = {"window_cells": size, "confident_cells": int(confident.sum()), "views": {}}
    if confident.sum() < MIN_CONFIDENT_CELLS:
        report["skipped"] = "too few confident cells in the central window"
        return offsets, report
    t = sweep.t(heights)
    window = 2 * config.window_radius + 1
    ref_cols, ref_rows = evaluate_height_polynomials(geometry.coef[reference], t)
    ref_values = _sample(geometry.stack, reference, ref_cols, ref_rows)
    for v, view in enumerate(views):
        if v == reference:
            continue
        cols, rows = evaluate_height_polynomials(geometry.coef[v], t)

        def score(d_col, d_row, v=v, cols=cols, rows=rows):
            values = _sample(geometry.stack, v, cols + d_col, rows + d_row)
            return float(np.nanmean(_zncc_map(ref_values, values, window)[confident]))

        before = score(0.0, 0.0)
        after, d_col, d_row = _best_shift(score, config.pointing_search_px)
        offsets[v] = (d_col, d_row)
        at_border = max(abs(d_col), abs(d_row)) >= config.pointing_search_px
        report["views"][view.name] = {"offset_px": [round(d_col, 2), round(d_row, 2)],
                                      "zncc_before": round(before, 4), "zncc_after": round(after, 4),
                                      "at_search_border": bool(at_border)}
    return offsets, report
