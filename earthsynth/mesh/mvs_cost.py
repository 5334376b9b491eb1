"""Photo-consistency of the height sweep: where each ground cell lands in each view, and how well views agree.

Projection. A ground cell (x, y) of the scene's UTM grid has a fixed (lon, lat) whatever its height, so along
the height axis each view traces a smooth curve (col(h), row(h)). We evaluate the exact camera model (the RPC, or
a fitted pinhole) at `CONTROL_HEIGHTS` Chebyshev heights and interpolate that curve per cell with a polynomial in
the normalised height t = (h - h_mid) / h_half in [-1, 1]. RPCs are cubic rationals in height over ranges of
kilometres, so over a scene's few hundred metres the interpolation error is far below 1e-3 px (measured and
reported by `interpolation_error_px`), while the sweep then costs a 5-term Horner evaluation per cell and height
instead of four 20-term polynomials.

Score. For each height hypothesis and each pair of views, both views are resampled (bilinear) onto the ground
grid at that height, and the zero-mean normalised cross-correlation (ZNCC) of the two ground-space patches
(`radius` cells around each cell) is computed with integral images. ZNCC is invariant to a gain and an offset per
patch, so multi-date radiometry (sun, season, sensor) does not bias it. The pair scores of a cell are fused by
averaging the best `keep` valid pairs, so a view in which the cell is occluded or changed does not veto it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

CONTROL_HEIGHTS = 5


def chebyshev_nodes(count: int = CONTROL_HEIGHTS) -> np.ndarray:
    """Chebyshev nodes of the first kind on [-1, 1], ascending (minimise polynomial interpolation error)."""
    k = np.arange(count)
    return np.sort(np.cos((2 * k + 1) * np.pi / (2 * count)))


def height_polynomials(cols_khw: np.ndarray, rows_khw: np.ndarray, nodes_k: np.ndarray) -> np.ndarray:
    """Per-cell polynomial in t through the projections at the nodes -> coefficients (2, K, H, W), power basis
    (coefficient k multiplies t**k), float64. cols / rows: (K, H, W) exact projections at t = nodes_k."""
    count = len(nodes_k)
    vander_inv = np.linalg.inv(np.vander(nodes_k, count, increasing=True))
    values = np.stack([cols_khw, rows_khw]).reshape(2, count, -1)
    coef = np.einsum("ij,cjn->cin", vander_inv, values)
    return coef.reshape((2, count) + cols_khw.shape[1:])


def evaluate_height_polynomials(coef_2khw: np.ndarray, t) -> tuple[np.ndarray, np.ndarray]:
    """(cols, rows) at normalised heights t (scalar or (H, W)) by Horner's rule."""
    t = np.asarray(t, np.float64)
    col = np.zeros(coef_2khw.shape[2:]) + coef_2khw[0, -1]
    row = np.zeros(coef_2khw.shape[2:]) + coef_2khw[1, -1]
    for k in range(coef_2khw.shape[1] - 2, -1, -1):
        col = col * t + coef_2khw[0, k]
        row = row * t + coef_2khw[1, k]
    return col, row


def interpolation_error_px(coef_2khw, project_fn, t_check: np.ndarray, sub=(slice(None), slice(None))) -> float:
    """Largest distance (px) between the interpolated and the exact projection at heights `t_check` on the
    cells `sub` (a (rows, cols) pair of slices). project_fn(t, sub) -> (cols, rows) exact."""
    worst = 0.0
    for t in t_check:
        col_exact, row_exact = project_fn(float(t), sub)
        col, row = evaluate_height_polynomials(coef_2khw[:, :, sub[0], sub[1]], float(t))
        worst = max(worst, float(np.max(np.hypot(col - col_exact, row - row_exact))))
    return worst


# ---------------------------------------------------------------------------------------------- numba kernels


@njit(cache=True, inline="always")
def _horner(coef, v, axis, y, x, t):
    value = coef[v, axis, coef.shape[2] - 1, y, x]
    for k in range(coef.shape[2] - 2, -1, -1):
        value = value * t + coef[v, axis, k, y, x]
    return value


@njit(cache=True, inline="always")
def _bilinear(image, v, col, row):
    """Bilinear sample of image[v] at (col, row), pixel centres at integers; NaN outside the valid area."""
    height, width = image.shape[1], image.shape[2]
    if not (col >= 0.0 and row >= 0.0 and col <= width - 1 and row <= height - 1):
        return np.nan
    c0 = min(int(col), width - 2)
    r0 = min(int(row), height - 2)
    fc, fr = col - c0, row - r0
    top = image[v, r0, c0] * (1.0 - fc) + image[v, r0, c0 + 1] * fc
    bottom = image[v, r0 + 1, c0] * (1.0 - fc) + image[v, r0 + 1, c0 + 1] * fc
    return top * (1.0 - fr) + bottom * fr


@njit(cache=True)
def _sample_slice(images, coef, t, out):
    """out[v, y, x] = image v at the projection of cell (y, x) at normalised height t (NaN outside)."""
    for v in range(out.shape[0]):
        for y in range(out.shape[1]):
            for x in range(out.shape[2]):
                col = _horner(coef, v, 0, y, x, t)
                row = _horner(coef, v, 1, y, x, t)
                out[v, y, x] = _bilinear(images, v, col, row)


@njit(cache=True)
def _view_window_stats(values, radius, min_var, table, mean_out, std_out):
    """Window mean and standard deviation of one sampled view (NaN where the (2r+1)^2 window is not complete
    or is textureless: variance < min_var). `table` is (3, H+1, W+1) scratch for the summed-area tables."""
    height, width = values.shape
    for y in range(height):
        run_n = run_s = run_q = 0.0
        for x in range(width):
            a = values[y, x]
            if not math.isnan(a):
                run_n += 1.0
                run_s += a
                run_q += a * a
            table[0, y + 1, x + 1] = table[0, y, x + 1] + run_n
            table[1, y + 1, x + 1] = table[1, y, x + 1] + run_s
            table[2, y + 1, x + 1] = table[2, y, x + 1] + run_q
    full = (2 * radius + 1) ** 2
    for y in range(height):
        for x in range(width):
            mean_out[y, x] = np.nan
            if y < radius or x < radius or y >= height - radius or x >= width - radius:
                continue
            y0, x0, y1, x1 = y - radius, x - radius, y + radius + 1, x + radius + 1
            if _box(table[0], y0, x0, y1, x1) < full:
                continue
            mean = _box(table[1], y0, x0, y1, x1) / full
            var = _box(table[2], y0, x0, y1, x1) / full - mean * mean
            if var >= min_var:
                mean_out[y, x] = mean
                std_out[y, x] = math.sqrt(var)


@njit(cache=True)
def _pair_window_zncc(a_values, b_values, mean_a, std_a, mean_b, std_b, radius, table, out):
    """ZNCC of two sampled views over each complete, textured window (NaN elsewhere)."""
    height, width = a_values.shape
    for y in range(height):
        run = 0.0
        for x in range(width):
            a, b = a_values[y, x], b_values[y, x]
            if not (math.isnan(a) or math.isnan(b)):
                run += a * b
            table[y + 1, x + 1] = table[y, x + 1] + run
    full = (2 * radius + 1) ** 2
    for y in range(height):
        for x in range(width):
            if math.isnan(mean_a[y, x]) or math.isnan(mean_b[y, x]):
                out[y, x] = np.nan
                continue
            product = _box(table, y - radius, x - radius, y + radius + 1, x + radius + 1) / full
            out[y, x] = (product - mean_a[y, x] * mean_b[y, x]) / (std_a[y, x] * std_b[y, x])


@njit(cache=True, inline="always")
def _box(table, y0, x0, y1, x1):
    return table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]


@njit(cache=True, inline="always")
def _zncc_from_sums(n, sa, sb, saa, sbb, sab, min_var):
    mean_a, mean_b = sa / n, sb / n
    var_a = saa / n - mean_a * mean_a
    var_b = sbb / n - mean_b * mean_b
    if var_a < min_var or var_b < min_var:
        return np.nan
    return (sab / n - mean_a * mean_b) / math.sqrt(var_a * var_b)


@njit(cache=True, inline="always")
def _fuse_top(scores, count, keep):
    """Mean of the `keep` largest of scores[:count] (keep clipped to count); NaN when count == 0."""
    if count == 0:
        return np.nan
    k = min(keep, count)
    total = 0.0
    for i in range(k):                 # partial selection sort: k is tiny
        best = i
        for j in range(i + 1, count):
            if scores[j] > scores[best]:
                best = j
        scores[i], scores[best] = scores[best], scores[i]
        total += scores[i]
    return total / k


@njit(cache=True)
def _slice_scores(samples, pairs, radius, min_var, keep, out_d):
    """Fused ZNCC of one height slice: out_d[y, x] (NaN where no pair has a full, textured window)."""
    n_views, height, width = samples.shape
    n_pairs = pairs.shape[0]
    table = np.zeros((3, height + 1, width + 1))
    means = np.empty((n_views, height, width))
    stds = np.empty((n_views, height, width))
    for v in range(n_views):
        _view_window_stats(samples[v], radius, min_var, table, means[v], stds[v])
    pair_scores = np.empty((n_pairs, height, width))
    for p in range(n_pairs):
        a, b = pairs[p, 0], pairs[p, 1]
        _pair_window_zncc(samples[a], samples[b], means[a], stds[a], means[b], stds[b], radius, table[0],
                          pair_scores[p])
    scores = np.empty(n_pairs)
    for y in range(height):
        for x in range(width):
            count = 0
            for p in range(n_pairs):
                s = pair_scores[p, y, x]
                if not math.isnan(s):
                    scores[count] = s
                    count += 1
            out_d[y, x] = _fuse_top(scores, count, keep)


@njit(cache=True, parallel=True)
def zncc_score_volume(images, coef, t_d, pairs, radius, min_var, keep):
    """Fused ZNCC for every cell and height hypothesis -> (H, W, D) float32, NaN where undefined.

    images: (V, Hi, Wi) float32, NaN-padded crops; coef: (V, 2, K, H, W) float64 projection polynomials in
    the crop's pixel coordinates; t_d: (D,) normalised heights; pairs: (P, 2) int64 view indices."""
    n_views, height, width = coef.shape[0], coef.shape[3], coef.shape[4]
    depth = t_d.shape[0]
    volume = np.empty((height, width, depth), np.float32)
    for d in prange(depth):
        samples = np.empty((n_views, height, width))
        _sample_slice(images, coef, t_d[d], samples)
        out_d = np.empty((height, width))
        _slice_scores(samples, pairs, radius, min_var, keep, out_d)
        for y in range(height):
            for x in range(width):
                volume[y, x, d] = out_d[y, x]
    return volume


@njit(cache=True)
def zncc_pair_scores_at(images, coef, t_hw, pairs, radius, min_var):
    """ZNCC of every pair at each cell's own height t_hw[y, x] (its whole window sampled at that height)
    -> (P, H, W) float32, NaN where a window leaves a view or is textureless."""
    n_views, height, width = coef.shape[0], coef.shape[3], coef.shape[4]
    n_pairs = pairs.shape[0]
    out = np.full((n_pairs, height, width), np.nan, np.float32)
    side = 2 * radius + 1
    for y in range(height):
        patch = np.empty((n_views, side * side))
        for x in range(width):
            t = t_hw[y, x]
            if math.isnan(t) or y < radius or x < radius or y >= height - radius or x >= width - radius:
                continue
            for v in range(n_views):
                i = 0
                for yy in range(y - radius, y + radius + 1):
                    for xx in range(x - radius, x + radius + 1):
                        patch[v, i] = _bilinear(images, v, _horner(coef, v, 0, yy, xx, t),
                                                _horner(coef, v, 1, yy, xx, t))
                        i += 1
            for p in range(n_pairs):
                a, b = pairs[p, 0], pairs[p, 1]
                sa = sb = saa = sbb = sab = 0.0
                valid = True
                for i in range(side * side):
                    va, vb = patch[a, i], patch[b, i]
                    if math.isnan(va) or math.isnan(vb):
                        valid = False
                        break
                    sa += va
                    sb += vb
                    saa += va * va
                    sbb += vb * vb
                    sab += va * vb
                if valid:
                    out[p, y, x] = _zncc_from_sums(side * side, sa, sb, saa, sbb, sab, min_var)
    return out


def fuse_pair_scores(scores_phw: np.ndarray, keep: int) -> np.ndarray:
    """Mean of the `keep` best valid pair scores per cell (NaN if none), the same rule as the sweep."""
    ordered = -np.sort(-np.nan_to_num(scores_phw, nan=-np.inf), axis=0)
    valid = np.isfinite(ordered[:keep])
    total = np.where(valid, ordered[:keep], 0.0).sum(axis=0)
    count = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)
