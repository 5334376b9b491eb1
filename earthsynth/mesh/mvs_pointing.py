"""Relative pointing correction: shift each view's image coordinates so that it agrees with the reference view.

RPCs of different views carry independent pointing errors of a pixel or more (the Reunion Pleiades pair: about
0.8 px). Across the epipolar direction such an error cannot be absorbed by any height, so it lowers every ZNCC and
turns weak textures into wrong matches. s2p corrects it with a translation of the secondary image estimated from
SIFT matches (de Franchis et al. 2014); we estimate the same translation densely:

1. sweep a central window of the ground grid with the anchor pair (the reference view and its best partner)
   and keep its confident cells (distinctive SGM minimum);
2. resample the partner at those cells' 3D points shifted by (d_col, d_row) and maximise the mean 5x5 ZNCC
   with the reference view over a grid of shifts (1 px, then 0.25 px, then a parabola per axis); keep only the
   component across the epipolar direction (along it, a shift is a height change: the RPCs' own datum stays);
3. with more views: sweep the window again with the corrected anchor pair and align every other view to the
   reference at those heights with a full 2D shift (so all pairs agree on one height datum).

The reference view is never moved, so it fixes the geolocation.
"""

from __future__ import annotations

import math

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


def _anchor_pair(pairs, reference: int, target_bh: float) -> tuple[int, int]:
    """(reference, partner): the selected pair with the reference whose B/H is closest to the target."""
    candidates = [(abs(math.log(bh / target_bh)), j if i == reference else i) for i, j, bh in pairs
                  if reference in (i, j)]
    if not candidates:
        return pairs[0][0], pairs[0][1]
    return reference, min(candidates)[1]


def _epipolar_direction(views, reference: int, partner: int, lon: float, lat: float, height: float):
    """Unit (d_col, d_row) along which the reference view's ray through (lon, lat, height) runs in the partner
    view: a shift of the partner along it is the same as a height change, so it is not a pointing error."""
    col, row = views[reference].project(lon, lat, height)
    ends = []
    for dh in (-10.0, 10.0):
        lon_r, lat_r = views[reference].rpc.localization(col, row, height + dh)
        ends.append(np.array(views[partner].project(lon_r, lat_r, height + dh), float).ravel())
    direction = ends[1] - ends[0]
    return direction / np.linalg.norm(direction)


def _confident_cells(uniqueness: np.ndarray, margin: int) -> np.ndarray:
    confident = uniqueness <= CONFIDENT_UNIQUENESS
    confident[:margin], confident[-margin:], confident[:, :margin], confident[:, -margin:] = False, False, False, False
    return confident


def _fit_offset(config, geometry, heights, confident, sweep, reference: int, v: int):
    """(zncc before, zncc after, d_col, d_row) of view v against the reference at the given heights."""
    from earthsynth.mesh.mvs_cost import evaluate_height_polynomials

    t = sweep.t(heights)
    window = 2 * config.window_radius + 1
    ref_values = _sample(geometry.stack, reference, *evaluate_height_polynomials(geometry.coef[reference], t))
    cols, rows = evaluate_height_polynomials(geometry.coef[v], t)

    def score(d_col, d_row):
        values = _sample(geometry.stack, v, cols + d_col, rows + d_row)
        zncc = _zncc_map(ref_values, values, window)[confident]
        zncc = zncc[np.isfinite(zncc)]
        return float(zncc.mean()) if zncc.size >= MIN_CONFIDENT_CELLS else -np.inf

    return (score(0.0, 0.0), *_best_shift(score, config.pointing_search_px))


def estimate_pointing_offsets(config, grid, views, pairs, sweep, to_lonlat, reference: int):
    """-> (offsets (V, 2) px to add to each view's projected (col, row), report dict for mvs.json).

    The reference and its best partner (the anchor pair) fix the heights: the partner is only corrected across
    its epipolar direction, as s2p does. Every other view then gets a full 2D shift that aligns it with the
    reference at the anchor pair's heights."""
    from earthsynth.mesh.mvs_tile import sweep_heights, tile_geometry

    offsets = np.zeros((len(views), 2))
    reference, partner = _anchor_pair(pairs, reference, config.target_base_to_height)
    anchor = np.array([[reference, partner]], np.int64)
    size = min(config.pointing_window_cells, grid.height, grid.width)
    r0, c0 = (grid.height - size) // 2, (grid.width - size) // 2
    lon, lat = (np.asarray(v) for v in to_lonlat(*grid.centers(slice(r0, r0 + size), slice(c0, c0 + size))))
    geometry = tile_geometry(views, lon, lat, sweep)
    heights, uniqueness = sweep_heights(config, geometry, anchor, sweep)
    confident = _confident_cells(uniqueness, config.window_radius + 1)
    report = {"reference_view": views[reference].name, "anchor_pair": [views[reference].name, views[partner].name],
              "window_cells": size, "confident_cells": int(confident.sum()), "views": {}}
    if confident.sum() < MIN_CONFIDENT_CELLS:
        report["skipped"] = "too few confident cells in the central window"
        return offsets, report
    fits = {partner: _fit_offset(config, geometry, heights, confident, sweep, reference, partner)}
    epipolar = _epipolar_direction(views, reference, partner, lon[size // 2, size // 2],
                                   lat[size // 2, size // 2], float(np.median(heights[confident])))
    shift = np.array(fits[partner][2:])
    offsets[partner] = shift - (shift @ epipolar) * epipolar
    others = [v for v in range(len(views)) if v not in (reference, partner)]
    if others:
        geometry = tile_geometry(views, lon, lat, sweep, offsets)
        heights, uniqueness = sweep_heights(config, geometry, anchor, sweep)
        confident = _confident_cells(uniqueness, config.window_radius + 1)
        for v in others:
            fits[v] = _fit_offset(config, geometry, heights, confident, sweep, reference, v)
            offsets[v] = fits[v][2:]
    for v, (before, after, d_col, d_row) in sorted(fits.items()):
        report["views"][views[v].name] = {
            "offset_px": [round(float(offsets[v, 0]), 3), round(float(offsets[v, 1]), 3)],
            "best_shift_px": [round(d_col, 3), round(d_row, 3)], "zncc_before": round(before, 4),
            "zncc_after": round(after, 4),
            "at_search_border": bool(max(abs(d_col), abs(d_row)) >= config.pointing_search_px)}
    return offsets, report
