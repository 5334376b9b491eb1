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
camera * N + gaussian): mean x, mean y, conic a, b, c, opacity, sigma cut-off, half extents x / y of the
region where sigma <= cut-off, then the D colour channels. The cut-off ln(255 opacity) (+ slack) lets the loop
skip the exp where alpha < 1/255 for sure; the extents let each block of BLOCK^2 pixels keep only the Gaussians
that can reach it (a third of the (pixel, Gaussian) tests of a whole-tile scan in the benchmark scene; the
exp of the pairs that do contribute then dominates).

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
BLOCK = 4  # tiles are scanned in blocks of BLOCK x BLOCK pixels, each with its own list of overlapping Gaussians
P_MX, P_MY, P_A, P_B, P_C, P_OPAC, P_CUT, P_EX, P_EY, P_COLOR = range(10)  # columns of params_mk
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
def _sigma(local_jk, j, pxf, pyf):
    dx = local_jk[j, P_MX] - pxf
    dy = local_jk[j, P_MY] - pyf
    sigma = 0.5 * (local_jk[j, P_A] * dx * dx + local_jk[j, P_C] * dy * dy) + local_jk[j, P_B] * dx * dy
    return dx, dy, sigma


@njit(cache=True, nogil=True)
def forward_tiles(tile_list, offsets, ids, params_mk, tiles_w, tile_size, width, height, max_len,
                  out_color_pd, out_t_p, out_last_p):
    """Composite the tiles in `tile_list` (global tile ids camera * T + tile). Pixel p = (camera * H + y) * W + x
    gets its colour, final transmittance and the index (into ids) of its last contributing Gaussian (-1: none).
    Outputs must come initialised to 0, 1 and -1: empty tiles are not visited."""
    n_tiles = tiles_w * ((height + tile_size - 1) // tile_size)
    n_ch = params_mk.shape[1] - P_COLOR
    local_jk = np.empty((max_len, params_mk.shape[1]))
    sub = np.empty(max_len, np.int64)
    acc = np.empty(n_ch)
    for tk in tile_list:
        start, end = offsets[tk], offsets[tk + 1]
        if end == start:
            continue
        _gather(params_mk, ids, start, end, local_jk)
        cam, t = tk // n_tiles, tk % n_tiles
        y_tile, x_tile = (t // tiles_w) * tile_size, (t % tiles_w) * tile_size
        for by in range(y_tile, min(y_tile + tile_size, height), BLOCK):
            y_stop = min(by + BLOCK, y_tile + tile_size, height)
            for bx in range(x_tile, min(x_tile + tile_size, width), BLOCK):
                x_stop = min(bx + BLOCK, x_tile + tile_size, width)
                m = _block_list(local_jk, end - start, bx, x_stop, by, y_stop, sub)
                for py in range(by, y_stop):
                    for px in range(bx, x_stop):
                        pix = (cam * height + py) * width + px
                        _forward_pixel(local_jk, sub, m, start, px + 0.5, py + 0.5, acc, out_color_pd, out_t_p,
                                       out_last_p, pix)


@njit(cache=True, nogil=True, inline="always")
def _forward_pixel(local_jk, sub, m, start, pxf, pyf, acc, out_color_pd, out_t_p, out_last_p, pix):
    n_ch = acc.size
    acc[:] = 0.0
    trans, last = 1.0, -1
    for k in range(m):
        j = sub[k]
        dx, dy, sigma = _sigma(local_jk, j, pxf, pyf)
        if sigma < 0.0 or sigma > local_jk[j, P_CUT]:
            continue
        alpha = min(MAX_ALPHA, local_jk[j, P_OPAC] * math.exp(-sigma))
        if alpha < ALPHA_THRESHOLD:
            continue
        next_t = trans * (1.0 - alpha)
        if next_t <= TRANSMITTANCE_THRESHOLD:
            break
        weight = alpha * trans
        for d in range(n_ch):
            acc[d] += local_jk[j, P_COLOR + d] * weight
        trans, last = next_t, start + j
    out_color_pd[pix, :] = acc
    out_t_p[pix] = trans
    out_last_p[pix] = last


@njit(cache=True, nogil=True, inline="always")
def _block_list(local_jk, n_local, x0, x1, y0, y1, sub):
    """Indices (in depth order) of the tile's Gaussians whose sigma <= cut-off region reaches the pixel centres
    of columns [x0, x1) x rows [y0, y1); returns their count, written to sub[:count]."""
    m = 0
    for j in range(n_local):
        mx, my, ex, ey = local_jk[j, P_MX], local_jk[j, P_MY], local_jk[j, P_EX], local_jk[j, P_EY]
        if mx + ex >= x0 + 0.5 and mx - ex <= x1 - 0.5 and my + ey >= y0 + 0.5 and my - ey <= y1 - 0.5:
            sub[m] = j
            m += 1
    return m


@njit(cache=True, nogil=True)
def backward_tiles(tile_list, offsets, ids, params_mk, tiles_w, tile_size, width, height, max_len,
                   out_t_p, out_last_p, v_color_pd, v_alpha_p, grad_isect_jg):
    """Gradients of sum(v_color * colour) + sum(v_alpha * alpha) per intersection (row j of ids): mean2d x/y,
    conic a/b/c, opacity, colour channels. Walks each pixel's contributors back to front, recovering T_i by
    dividing by (1 - alpha_i) (alpha <= 0.999) and keeping the colour accumulated behind, as gsplat does."""
    n_tiles = tiles_w * ((height + tile_size - 1) // tile_size)
    n_ch = params_mk.shape[1] - P_COLOR
    local_jk = np.empty((max_len, params_mk.shape[1]))
    sub = np.empty(max_len, np.int64)
    behind = np.empty(n_ch)
    for tk in tile_list:
        start, end = offsets[tk], offsets[tk + 1]
        if end == start:
            continue
        _gather(params_mk, ids, start, end, local_jk)
        cam, t = tk // n_tiles, tk % n_tiles
        y_tile, x_tile = (t // tiles_w) * tile_size, (t % tiles_w) * tile_size
        for by in range(y_tile, min(y_tile + tile_size, height), BLOCK):
            y_stop = min(by + BLOCK, y_tile + tile_size, height)
            for bx in range(x_tile, min(x_tile + tile_size, width), BLOCK):
                x_stop = min(bx + BLOCK, x_tile + tile_size, width)
                m = _block_list(local_jk, end - start, bx, x_stop, by, y_stop, sub)
                for py in range(by, y_stop):
                    for px in range(bx, x_stop):
                        pix = (cam * height + py) * width + px
                        if out_last_p[pix] >= 0:
                            _backward_pixel(local_jk, sub, m, start, out_last_p[pix] - start, px + 0.5, py + 0.5,
                                            out_t_p[pix], v_color_pd[pix], v_alpha_p[pix], behind, grad_isect_jg)


@njit(cache=True, nogil=True, inline="always")
def _backward_pixel(local_jk, sub, m, start, last, pxf, pyf, t_final, v_color_d, v_alpha, behind, grad_isect_jg):
    n_ch = behind.size
    behind[:] = 0.0  # sum over the contributors behind i of c_j alpha_j T_j
    trans = t_final
    for k in range(m - 1, -1, -1):
        j = sub[k]
        if j > last:
            continue
        dx, dy, sigma = _sigma(local_jk, j, pxf, pyf)
        if sigma < 0.0 or sigma > local_jk[j, P_CUT]:
            continue
        opac = local_jk[j, P_OPAC]
        gauss = math.exp(-sigma)
        alpha = min(MAX_ALPHA, opac * gauss)
        if alpha < ALPHA_THRESHOLD:
            continue
        inv_one_minus = 1.0 / (1.0 - alpha)
        trans = trans * inv_one_minus  # T before Gaussian j
        weight = alpha * trans
        row = start + j
        v_al = v_alpha * t_final * inv_one_minus  # d(1 - T_final) / d alpha_j
        for d in range(n_ch):
            c = local_jk[j, P_COLOR + d]
            grad_isect_jg[row, G_COLOR + d] += weight * v_color_d[d]
            v_al += v_color_d[d] * (c * trans - behind[d] * inv_one_minus)
            behind[d] += c * weight
        if opac * gauss <= MAX_ALPHA:  # the clamp at 0.999 has zero gradient
            v_sigma = -v_al * opac * gauss
            a, b, c = local_jk[j, P_A], local_jk[j, P_B], local_jk[j, P_C]
            grad_isect_jg[row, G_OPAC] += v_al * gauss
            grad_isect_jg[row, G_A] += 0.5 * dx * dx * v_sigma
            grad_isect_jg[row, G_A + 1] += dx * dy * v_sigma
            grad_isect_jg[row, G_A + 2] += 0.5 * dy * dy * v_sigma
            grad_isect_jg[row, G_MX] += v_sigma * (a * dx + b * dy)
            grad_isect_jg[row, G_MX + 1] += v_sigma * (b * dx + c * dy)


@njit(cache=True, nogil=True)
def reduce_intersections(ids, grad_isect_jg, n_flat):
    """Sum the per-intersection gradient rows per Gaussian, in intersection order (deterministic)."""
    out = np.zeros((n_flat, grad_isect_jg.shape[1]))
    for j in range(ids.size):
        out[ids[j], :] += grad_isect_jg[j, :]
    return out
