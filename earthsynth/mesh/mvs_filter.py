"""Rejection of unreliable height-sweep cells: occlusion (z-buffer per view) and small isolated blobs (speckles).

Occlusion. Two ground points that land on the same pixel of a view lie on one viewing ray, and the higher one
is nearer the satellite (rays are never horizontal). Splatting every cell at its estimated height into a
per-view height buffer (keep the maximum per pixel) therefore finds the cells hidden behind something higher:
their matching window in that view shows the occluder, so that view cannot vouch for them.

Speckles. Cells are linked when 4-neighbours differ by at most `max_step_m`; linked components smaller than
`min_cells` are wrong matches that SGM could not pull into their surroundings (like OpenCV's filterSpeckles,
which s2p also applies).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def visibility_mask(cols_hw, rows_hw, heights_hw, image_height, image_width, tolerance_m):
    """True where a cell is not hidden in this view by a cell at least `tolerance_m` higher landing on the
    same pixel (nearest pixel splat). NaN heights neither occlude nor are visible."""
    height, width = heights_hw.shape
    top = np.full((image_height, image_width), -np.inf)
    for y in range(height):
        for x in range(width):
            h = heights_hw[y, x]
            if math.isnan(h):
                continue
            c, r = int(math.floor(cols_hw[y, x] + 0.5)), int(math.floor(rows_hw[y, x] + 0.5))
            if 0 <= c < image_width and 0 <= r < image_height and h > top[r, c]:
                top[r, c] = h
    visible = np.zeros((height, width), np.bool_)
    for y in range(height):
        for x in range(width):
            h = heights_hw[y, x]
            if math.isnan(h):
                continue
            c, r = int(math.floor(cols_hw[y, x] + 0.5)), int(math.floor(rows_hw[y, x] + 0.5))
            if 0 <= c < image_width and 0 <= r < image_height:
                visible[y, x] = top[r, c] <= h + tolerance_m
    return visible


@njit(cache=True)
def remove_speckles(heights_hw, max_step_m, min_cells):
    """Copy of `heights_hw` with components (4-connected, |Δh| <= max_step_m) of fewer than `min_cells`
    valid cells set to NaN."""
    height, width = heights_hw.shape
    out = heights_hw.copy()
    label = np.full((height, width), -1, np.int64)
    stack = np.empty((height * width, 2), np.int64)
    members = np.empty((height * width, 2), np.int64)
    next_label = 0
    for sy in range(height):
        for sx in range(width):
            if label[sy, sx] >= 0 or math.isnan(heights_hw[sy, sx]):
                continue
            label[sy, sx] = next_label
            stack[0, 0], stack[0, 1] = sy, sx
            top, size = 1, 0
            while top > 0:
                top -= 1
                y, x = stack[top, 0], stack[top, 1]
                members[size, 0], members[size, 1] = y, x
                size += 1
                for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                    if 0 <= ny < height and 0 <= nx < width and label[ny, nx] < 0:
                        hn = heights_hw[ny, nx]
                        if not math.isnan(hn) and abs(hn - heights_hw[y, x]) <= max_step_m:
                            label[ny, nx] = next_label
                            stack[top, 0], stack[top, 1] = ny, nx
                            top += 1
            if size < min_cells:
                for i in range(size):
                    out[members[i, 0], members[i, 1]] = np.nan
            next_label += 1
    return out


def near_discontinuity(heights_hw: np.ndarray, jump_m: float, radius: int) -> np.ndarray:
    """True within `radius` cells (Chebyshev distance) of a step: two 4-neighbours more than `jump_m` apart.

    Run on the dense SGM heights, before any rejection: window matching "fattens" raised objects (near a
    building edge the window of a ground cell still holds the roof, so the roof height bleeds about one window
    radius outwards) and the dense heights show the step where the bleeding ends. The true edge is somewhere
    within a radius of it, so the cells on both sides go. Neighbour differences, not window ranges, so that
    steep but continuous terrain is not mistaken for a step."""
    from scipy.ndimage import binary_dilation

    with np.errstate(invalid="ignore"):
        step_rows = np.abs(np.diff(heights_hw, axis=0)) > jump_m
        step_cols = np.abs(np.diff(heights_hw, axis=1)) > jump_m
    step = np.zeros(heights_hw.shape, bool)
    step[:-1] |= step_rows
    step[1:] |= step_rows
    step[:, :-1] |= step_cols
    step[:, 1:] |= step_cols
    if radius > 0:
        step = binary_dilation(step, np.ones((2 * radius + 1, 2 * radius + 1), bool))
    return step
