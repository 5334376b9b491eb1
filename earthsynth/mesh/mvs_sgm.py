"""Semi-global aggregation of the height-sweep cost volume (Hirschmüller 2008, SGM) and the winner's sub-step fit.

Along each of 8 (or 4) scan directions r, the path cost of cell p at hypothesis d is

    L_r(p, d) = C(p, d) + min(L_r(p-r, d), L_r(p-r, d±1) + P1, min_k L_r(p-r, k) + P2) - min_k L_r(p-r, k)

and the aggregated cost S(p, d) is the sum over directions. Here C = 1 - ZNCC in [0, 2] and a hypothesis step is
a fraction of a pixel of parallax, so P1 lets slopes and roofs change height by one step per cell while P2 is the
price of a height discontinuity (building edges). The scan lines of one direction are disjoint, so they run in
parallel and add into S without races. The caller gives cells with an undefined score a flat cost (1, i.e. ZNCC 0)
so that their neighbours' paths carry through them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

DIRECTIONS_8 = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))


@njit(cache=True)
def _line_starts(height, width, dy, dx):
    """Cells whose predecessor (y - dy, x - dx) is outside the grid: one per scan line."""
    starts = []
    for y in range(height):
        for x in range(width):
            py, px = y - dy, x - dx
            if py < 0 or py >= height or px < 0 or px >= width:
                starts.append((y, x))
    return starts


@njit(cache=True, parallel=True)
def _aggregate_direction(cost, dy, dx, p1, p2, total):
    height, width, depth = cost.shape
    starts = _line_starts(height, width, dy, dx)
    for i in prange(len(starts)):
        y, x = starts[i]
        previous = np.empty(depth)
        current = np.empty(depth)
        for d in range(depth):
            previous[d] = cost[y, x, d]
            total[y, x, d] += previous[d]
        previous_min = previous.min()
        y, x = y + dy, x + dx
        while 0 <= y < height and 0 <= x < width:
            current_min = np.inf
            for d in range(depth):
                best = previous[d]
                if d > 0:
                    best = min(best, previous[d - 1] + p1)
                if d < depth - 1:
                    best = min(best, previous[d + 1] + p1)
                best = min(best, previous_min + p2)
                value = cost[y, x, d] + best - previous_min
                current[d] = value
                current_min = min(current_min, value)
                total[y, x, d] += value
            previous, current = current, previous
            previous_min = current_min
            y, x = y + dy, x + dx


def sgm_aggregate(cost_hwd: np.ndarray, p1: float, p2: float, directions: int = 8) -> np.ndarray:
    """Sum of the SGM path costs over `directions` (4 or 8) scan directions -> (H, W, D) float32."""
    if directions not in (4, 8):
        raise ValueError(f"directions must be 4 or 8, got {directions}")
    cost = np.ascontiguousarray(cost_hwd, np.float32)
    total = np.zeros(cost.shape, np.float32)
    for dy, dx in DIRECTIONS_8[:directions]:
        _aggregate_direction(cost, dy, dx, np.float32(p1), np.float32(p2), total)
    return total


@njit(cache=True)
def winner_take_all(total, exclusion):
    """Per cell: best hypothesis index (int32), sub-step offset in [-0.5, 0.5] from a parabola through its
    neighbours, and the uniqueness ratio best / second best, the second best taken more than `exclusion` steps
    away (lower is more distinctive; 1 means ambiguous)."""
    height, width, depth = total.shape
    best_d = np.zeros((height, width), np.int32)
    offset = np.zeros((height, width), np.float32)
    ratio = np.ones((height, width), np.float32)
    for y in range(height):
        for x in range(width):
            k = 0
            for d in range(1, depth):
                if total[y, x, d] < total[y, x, k]:
                    k = d
            best_d[y, x] = k
            if 0 < k < depth - 1:
                a, b, c = total[y, x, k - 1], total[y, x, k], total[y, x, k + 1]
                curvature = a - 2.0 * b + c
                if curvature > 0:
                    offset[y, x] = min(0.5, max(-0.5, 0.5 * (a - c) / curvature))
            second = np.inf
            for d in range(depth):
                if abs(d - k) > exclusion and total[y, x, d] < second:
                    second = total[y, x, d]
            if second > 0 and math.isfinite(second):
                ratio[y, x] = total[y, x, k] / second
    return best_d, offset, ratio
