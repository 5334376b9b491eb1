"""Numba kernels of the CPU Gaussian-splatting rasteriser: tile binning, front-to-back compositing and its
analytic backward.

The per-pixel rules are gsplat's (`rasterize_to_pixels_3dgs_fwd_kernel`), in gsplat's pixel coordinates (pixel
(x, y) has its centre at (x + 0.5, y + 0.5)):

    sigma = 0.5 (a dx^2 + c dy^2) + b dx dy,  (dx, dy) = mean2d - pixel centre,  conic (a, b, c) = inverse 2D cov
    alpha = min(0.999, opacity exp(-sigma));  skipped when sigma < 0 or alpha < 1/255
    next_T = T (1 - alpha);  the pixel is done when next_T <= 1e-4, and that Gaussian does NOT contribute
    colour = sum_i c_i alpha_i T_i,  render alpha = 1 - T_final

Binning only accelerates: a Gaussian is binned to every tile its opacity-aware box (radius_x, radius_y, see
splat_project) touches, and that box contains every pixel where alpha >= 1/255, so the image does not depend on
the tile size. Per-Gaussian data arrive packed in one float64 array `params_mk` (M = C * N rows, flat index
camera * N + gaussian): mean x, mean y, conic a, b, c, opacity, sigma cut-off, half extent in y of the
region where sigma <= cut-off, then the D colour channels. The cut-off ln(255 opacity) (+ slack) bounds the
pixels where alpha >= 1/255: each Gaussian visits only the rows inside its y extent and, per row, the columns
where the quadratic sigma <= cut-off holds (plus a pixel of margin), so nearly every (pixel, Gaussian) pair the
loops test contributes, and the exp of those pairs dominates.

Determinism: every tile writes only its own pixels, and the backward writes one gradient row per intersection
(tile, Gaussian), reduced afterwards in intersection order; the bytes do not depend on the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat ALPHA_THRESHOLD
MAX_ALPHA = 0.999  # gsplat MAX_ALPHA: no Gaussian is fully opaque, so T can be divided back out in the backward
TRANSMITTANCE_THRESHOLD = 1e-4  # gsplat: stop before T would fall to this
SIGMA_SLACK = 1e-6  # the cut-off only skips pixels that the exact alpha test would reject anyway
P_MX, P_MY, P_A, P_B, P_C, P_OPAC, P_CUT, P_EY, P_COLOR = range(9)  # columns of params_mk
G_MX, G_A, G_OPAC, G_COLOR = 0, 2, 5, 6  # columns of the per-intersection gradient rows


@njit(cache=True, nogil=True)
def _tile_range(centre, radius, tile_size, n_tiles):
    """gsplat's isect_tiles: tiles [floor((m - r) / ts), ceil((m + r) / ts)) clamped to [0, n_tiles]."""
    lo = min(max(int(math.floor((centre - radius) / tile_size)), 0), n_tiles)
    hi = min(max(int(math.ceil((centre + radius) / tile_size)), 0), n_tiles)
    return lo, hi


@njit(cache=True, nogil=True)
def bin_to_tiles(order_k, n_gaussians, means2d_m2, radii_m2, tile_size, tiles_w, tiles_h, n_cameras):
    """Intersections of the visible Gaussians `order_k` (flat ids, grouped by camera, sorted by depth within
    a camera) with the tiles. Returns offsets (C * T + 1,) into ids (n_isects,): tile k's Gaussians are
    ids[offsets[k]:offsets[k + 1]], front to back (a counting sort that keeps the depth order)."""
    n_tiles = tiles_w * tiles_h
    counts = np.zeros(n_cameras * n_tiles + 1, np.int64)
    for k in range(order_k.size):
        f = order_k[k]
        base = (f // n_gaussians) * n_tiles
        x0, x1 = _tile_range(means2d_m2[f, 0], radii_m2[f, 0], tile_size, tiles_w)
        y0, y1 = _tile_range(means2d_m2[f, 1], radii_m2[f, 1], tile_size, tiles_h)
        for ty in range(y0, y1):
            for tx in range(x0, x1):
                counts[base + ty * tiles_w + tx + 1] += 1
    offsets = np.cumsum(counts)
    cursor = offsets[:-1].copy()
    ids = np.empty(offsets[-1], np.int64)
    for k in range(order_k.size):
        f = order_k[k]
        base = (f // n_gaussians) * n_tiles
        x0, x1 = _tile_range(means2d_m2[f, 0], radii_m2[f, 0], tile_size, tiles_w)
        y0, y1 = _tile_range(means2d_m2[f, 1], radii_m2[f, 1], tile_size, tiles_h)
        for ty in range(y0, y1):
            for tx in range(x0, x1):
                t = base + ty * tiles_w + tx
                ids[cursor[t]] = f
                cursor[t] += 1
    return offsets, ids


@njit(cache=True, nogil=True)
def _gather(params_mk, ids, start, end, local_jk):
    """Copy the tile's Gaussians into a contiguous block: each pixel of the tile reads all of them."""
    for j in range(start, end):
        local_jk[j - start, :] = params_mk[ids[j], :]


@njit(cache=True, nogil=True, inline="always")
def _rows(my, ey, y_tile, y_end):
    """Pixel rows of the tile whose centres may lie within the sigma <= cut-off region (one row of margin)."""
    return max(y_tile, int(math.floor(my - ey - 0.5)) - 1), min(y_end, int(math.ceil(my + ey - 0.5)) + 2)


@njit(cache=True, nogil=True, inline="always")
def _row_span(mx, dy, a, b, c, cut, x_tile, x_end):
    """Pixel columns of one row (dy = mean y - row centre) whose centres may have sigma <= cut, one column of margin
    each side. sigma(dx) <= cut is a quadratic in dx = mean x - pixel centre with roots (-b dy +- sqrt(disc)) / a;
    the margin absorbs rounding, and the caller still applies the exact per-pixel test, so images are the same as
    testing every pixel of the tile."""
    disc = b * b * dy * dy - a * (c * dy * dy - 2.0 * cut)
    if disc < 0.0:
        return x_tile, x_tile
    half = math.sqrt(disc) / a
    centre = mx + b * dy / a  # pixel-centre x of the middle of the span
    return (max(x_tile, int(math.floor(centre - half - 0.5)) - 1),
            min(x_end, int(math.ceil(centre + half - 0.5)) + 2))


@njit(cache=True, nogil=True)
def forward_tiles(tile_list, offsets, ids, params_mk, tiles_w, tile_size, width, height, max_len,
                  out_color_pd, out_t_p, out_last_p):
    """Composite the tiles in `tile_list` (global tile ids camera * T + tile). Pixel p = (camera * H + y) * W + x
    gets its colour, final transmittance and the index (into ids) of its last contributing Gaussian (-1: none).
    Outputs must come initialised to 0, 1 and -1: empty tiles are not visited.

    Gaussian-major: the tile's Gaussians are taken front to back and each visits only the pixels of its rows'
    spans, carrying per-pixel transmittance and colour; every pixel still sees its contributors in depth order, so
    the result is the pixel-major loop's, bit for bit, with about a third of the (pixel, Gaussian) tests."""
    n_tiles = tiles_w * ((height + tile_size - 1) // tile_size)
    n_ch = params_mk.shape[1] - P_COLOR
    local_jk = np.empty((max_len, params_mk.shape[1]))
    n_px = tile_size * tile_size
    acc = np.empty((n_px, n_ch))
    trans = np.empty(n_px)
    last = np.empty(n_px, np.int64)
    live = np.empty(n_px, np.bool_)
    for tk in tile_list:
        start, end = offsets[tk], offsets[tk + 1]
        if end == start:
            continue
        _gather(params_mk, ids, start, end, local_jk)
        cam, t = tk // n_tiles, tk % n_tiles
        y_tile, x_tile = (t // tiles_w) * tile_size, (t % tiles_w) * tile_size
        y_end, x_end = min(y_tile + tile_size, height), min(x_tile + tile_size, width)
        acc[:, :] = 0.0
        trans[:] = 1.0
        last[:] = -1
        live[:] = True
        n_live = (y_end - y_tile) * (x_end - x_tile)
        for j in range(end - start):
            if n_live == 0:
                break
            mx, my, a, b, c = local_jk[j, P_MX], local_jk[j, P_MY], local_jk[j, P_A], local_jk[j, P_B], local_jk[j, P_C]
            opac, cut = local_jk[j, P_OPAC], local_jk[j, P_CUT]
            y0, y1 = _rows(my, local_jk[j, P_EY], y_tile, y_end)
            for py in range(y0, y1):
                dy = my - (py + 0.5)
                x0, x1 = _row_span(mx, dy, a, b, c, cut, x_tile, x_end)
                for px in range(x0, x1):
                    q = (py - y_tile) * tile_size + px - x_tile
                    if not live[q]:
                        continue
                    dx = mx - (px + 0.5)
                    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                    if sigma < 0.0 or sigma > cut:
                        continue
                    alpha = min(MAX_ALPHA, opac * math.exp(-sigma))
                    if alpha < ALPHA_THRESHOLD:
                        continue
                    next_t = trans[q] * (1.0 - alpha)
                    if next_t <= TRANSMITTANCE_THRESHOLD:  # done; this Gaussian does not contribute
                        live[q] = False
                        n_live -= 1
                        continue
                    weight = alpha * trans[q]
                    for d in range(n_ch):
                        acc[q, d] += local_jk[j, P_COLOR + d] * weight
                    trans[q], last[q] = next_t, start + j
        for py in range(y_tile, y_end):
            for px in range(x_tile, x_end):
                q, pix = (py - y_tile) * tile_size + px - x_tile, (cam * height + py) * width + px
                out_color_pd[pix, :] = acc[q, :]
                out_t_p[pix] = trans[q]
                out_last_p[pix] = last[q]


@njit(cache=True, nogil=True)
def backward_tiles(tile_list, offsets, ids, params_mk, tiles_w, tile_size, width, height, max_len,
                   out_t_p, out_last_p, v_color_pd, v_alpha_p, grad_isect_jg):
    """Gradients of sum(v_color * colour) + sum(v_alpha * alpha) per intersection (row j of ids): mean2d x/y,
    conic a/b/c, opacity, colour channels. Walks the tile's Gaussians back to front (Gaussian-major, as the
    forward), so each pixel meets its contributors in reverse depth order, recovering T_i by dividing by
    (1 - alpha_i) (alpha <= 0.999) and keeping the colour accumulated behind, as gsplat does; a Gaussian's
    gradient is summed over the tile's pixels in registers and written once."""
    n_tiles = tiles_w * ((height + tile_size - 1) // tile_size)
    n_ch = params_mk.shape[1] - P_COLOR
    local_jk = np.empty((max_len, params_mk.shape[1]))
    n_px = tile_size * tile_size
    behind = np.empty((n_px, n_ch))  # sum over the contributors behind of c_j alpha_j T_j
    v_col = np.empty((n_px, n_ch))
    trans = np.empty(n_px)
    t_final = np.empty(n_px)
    v_alpha = np.empty(n_px)
    last = np.empty(n_px, np.int64)  # tile-local index of the pixel's last contributor
    g_col = np.empty(n_ch)
    for tk in tile_list:
        start, end = offsets[tk], offsets[tk + 1]
        if end == start:
            continue
        cam, t = tk // n_tiles, tk % n_tiles
        y_tile, x_tile = (t // tiles_w) * tile_size, (t % tiles_w) * tile_size
        y_end, x_end = min(y_tile + tile_size, height), min(x_tile + tile_size, width)
        last[:] = -1
        behind[:, :] = 0.0
        last_any = -1
        for py in range(y_tile, y_end):
            for px in range(x_tile, x_end):
                q, pix = (py - y_tile) * tile_size + px - x_tile, (cam * height + py) * width + px
                if out_last_p[pix] >= 0:
                    last[q] = out_last_p[pix] - start
                    last_any = max(last_any, last[q])
                trans[q] = t_final[q] = out_t_p[pix]
                v_alpha[q] = v_alpha_p[pix]
                v_col[q, :] = v_color_pd[pix, :]
        if last_any < 0:
            continue
        _gather(params_mk, ids, start, start + last_any + 1, local_jk)
        for j in range(last_any, -1, -1):
            mx, my, a, b, c = local_jk[j, P_MX], local_jk[j, P_MY], local_jk[j, P_A], local_jk[j, P_B], local_jk[j, P_C]
            opac, cut = local_jk[j, P_OPAC], local_jk[j, P_CUT]
            g_mx = g_my = g_a = g_b = g_c = g_opac = 0.0
            g_col[:] = 0.0
            hit = False
            y0, y1 = _rows(my, local_jk[j, P_EY], y_tile, y_end)
            for py in range(y0, y1):
                dy = my - (py + 0.5)
                x0, x1 = _row_span(mx, dy, a, b, c, cut, x_tile, x_end)
                for px in range(x0, x1):
                    q = (py - y_tile) * tile_size + px - x_tile
                    if j > last[q]:
                        continue
                    dx = mx - (px + 0.5)
                    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                    if sigma < 0.0 or sigma > cut:
                        continue
                    gauss = math.exp(-sigma)
                    alpha = min(MAX_ALPHA, opac * gauss)
                    if alpha < ALPHA_THRESHOLD:
                        continue
                    hit = True
                    inv_one_minus = 1.0 / (1.0 - alpha)
                    trans[q] *= inv_one_minus  # T before Gaussian j
                    weight = alpha * trans[q]
                    v_al = v_alpha[q] * t_final[q] * inv_one_minus  # d(1 - T_final) / d alpha_j
                    for d in range(n_ch):
                        col = local_jk[j, P_COLOR + d]
                        g_col[d] += weight * v_col[q, d]
                        v_al += v_col[q, d] * (col * trans[q] - behind[q, d] * inv_one_minus)
                        behind[q, d] += col * weight
                    if opac * gauss <= MAX_ALPHA:  # the clamp at 0.999 has zero gradient
                        v_sigma = -v_al * opac * gauss
                        g_opac += v_al * gauss
                        g_a += 0.5 * dx * dx * v_sigma
                        g_b += dx * dy * v_sigma
                        g_c += 0.5 * dy * dy * v_sigma
                        g_mx += v_sigma * (a * dx + b * dy)
                        g_my += v_sigma * (b * dx + c * dy)
            if hit:
                row = start + j
                grad_isect_jg[row, G_MX] += g_mx
                grad_isect_jg[row, G_MX + 1] += g_my
                grad_isect_jg[row, G_A] += g_a
                grad_isect_jg[row, G_A + 1] += g_b
                grad_isect_jg[row, G_A + 2] += g_c
                grad_isect_jg[row, G_OPAC] += g_opac
                for d in range(n_ch):
                    grad_isect_jg[row, G_COLOR + d] += g_col[d]


@njit(cache=True, nogil=True)
def reduce_intersections(ids, grad_isect_jg, lo, hi, out_mg):
    """Add the per-intersection gradient rows of the Gaussians with flat ids in [lo, hi) into out_mg (rows
    lo..hi-1), in intersection order: ranges are independent, so threads can take them, and every sum runs in
    the same order whatever the split (deterministic)."""
    for j in range(ids.size):
        f = ids[j]
        if lo <= f < hi:
            for k in range(grad_isect_jg.shape[1]):
                out_mg[f, k] += grad_isect_jg[j, k]
