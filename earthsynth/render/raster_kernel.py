"""Numba kernels of the triangle rasteriser: homogeneous 2D rasterisation (Olano & Greer 1997).

Every vertex arrives as a homogeneous image point h = (x, y, w): for a pinhole camera h = K p_cam (so w = z_cam),
for an orthographic camera h = (u, v, 1). For a triangle with columns M = [h0 h1 h2] and pixel p = (u, v, 1), the
three edge functions e = adj(M) p are linear in (u, v); after flipping their sign by sign(det M):

* the pixel is covered iff e0, e1, e2 >= 0 and S = e0 + e1 + e2 > 0 -- for a pinhole this rejects the half of the
  ray behind the camera, so triangles crossing the camera plane need no clipping;
* b = e / S are the (perspective-correct) barycentrics w.r.t. the original triangle;
* depth along the optical axis is (q . e + q3) / S with q3 = |det M| (pinhole) or q = z_i (orthographic).

Watertightness: the rows of adj(M) are cross products of vertex pairs, so two triangles sharing an edge (same
winding) get edge functions that are exact floating-point negatives of each other, as long as both evaluate them
the same way: e = a * j + (b * i + c) per pixel, never incrementally from a triangle-dependent start. A pixel centre
exactly on the shared edge is then covered by at least one of them (both tests are inclusive), never by neither.
The kernels are compiled without fastmath so that LLVM does not contract these into FMAs differently per use.

Speed: the per-triangle helpers are inlined at the numba IR level (inline="always"): a plain call to a jitted
function taking arrays increments and decrements their reference counts (atomics), which cost ten times the work of
a small triangle. Only a pixel box per triangle is stored; the edge coefficients are recomputed where the triangle
is drawn (about 40 flops, cheaper than streaming 128 bytes per triangle through memory for millions of small
triangles).

Determinism: the image is split into stripes of rows, dealt round-robin to the workers (threads running nogil
kernels); every worker draws the triangles in index order and a fragment replaces the stored one only if strictly nearer, so ties go to the smaller
triangle id whatever the number of threads.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

NARROW_BOX_PX = 4  # boxes narrower than this are scanned whole: computing a span would cost more
SPAN_MARGIN_PX = 1e-6  # per-row column spans and boxes are widened by this much; the exact per-pixel test decides


@njit(cache=True)
def project_vertices(vertices_n3, projection_34, depth_4, perspective, near):
    """Homogeneous image points h = P [x, 1] (N, 3), depths z_cam = d . [x, 1] (N,) and image positions uv (N, 2)
    (NaN for pinhole vertices nearer than `near`), all float64."""
    n = vertices_n3.shape[0]
    hom_n3 = np.empty((n, 3))
    depth_n = np.empty(n)
    uv_n2 = np.empty((n, 2))
    for k in range(n):  # memory-bound and cheap: not worth a parallel region's compile time
        x, y, z = vertices_n3[k, 0], vertices_n3[k, 1], vertices_n3[k, 2]
        for r in range(3):
            hom_n3[k, r] = (projection_34[r, 0] * x + projection_34[r, 1] * y + projection_34[r, 2] * z
                            + projection_34[r, 3])
        depth_n[k] = depth_4[0] * x + depth_4[1] * y + depth_4[2] * z + depth_4[3]
        w = hom_n3[k, 2]
        if perspective and not w >= near:
            uv_n2[k, 0], uv_n2[k, 1] = np.nan, np.nan
        else:
            uv_n2[k, 0], uv_n2[k, 1] = hom_n3[k, 0] / w, hom_n3[k, 1] / w
    return hom_n3, depth_n, uv_n2


@njit(cache=True)
def _clip_extend(bounds, xa, ya, wa, xb, yb, wb, near):
    """Extend bounds (u_min, u_max, v_min, v_max) by vertex a if in front of the near plane, and by the point
    where edge a -> b crosses it (Sutherland-Hodgman against one plane, so that vertices behind the camera do not
    produce mirrored, meaningless projections)."""
    u_min, u_max, v_min, v_max = bounds
    if wa >= near:
        u, v = xa / wa, ya / wa
        u_min, u_max, v_min, v_max = min(u_min, u), max(u_max, u), min(v_min, v), max(v_max, v)
    if (wa >= near) != (wb >= near):
        t = (near - wa) / (wb - wa)
        u, v = (xa + t * (xb - xa)) / near, (ya + t * (yb - ya)) / near
        u_min, u_max, v_min, v_max = min(u_min, u), max(u_max, u), min(v_min, v), max(v_max, v)
    return u_min, u_max, v_min, v_max


@njit(cache=True, inline="never")
def _clipped_bounds(hom_n3, i0, i1, i2, near):
    """Image bounds of the part of a triangle in front of the near plane (rare: kept out of the hot loop)."""
    x0, y0, w0 = hom_n3[i0, 0], hom_n3[i0, 1], hom_n3[i0, 2]
    x1, y1, w1 = hom_n3[i1, 0], hom_n3[i1, 1], hom_n3[i1, 2]
    x2, y2, w2 = hom_n3[i2, 0], hom_n3[i2, 1], hom_n3[i2, 2]
    bounds = (np.inf, -np.inf, np.inf, -np.inf)
    bounds = _clip_extend(bounds, x0, y0, w0, x1, y1, w1, near)
    bounds = _clip_extend(bounds, x1, y1, w1, x2, y2, w2, near)
    return _clip_extend(bounds, x2, y2, w2, x0, y0, w0, near)


@njit(cache=True, inline="always")
def _pixel_range(lo, hi, size):
    """Integer pixel centres inside [lo, hi] (widened by the margin: the box is computed by division, the
    coverage by edge functions), clamped to [0, size - 1]; (1, 0) when empty or NaN."""
    lo = max(lo - SPAN_MARGIN_PX, -1.0)
    hi = min(hi + SPAN_MARGIN_PX, float(size))
    if not (lo <= hi):
        return 1, 0
    return max(0, int(math.ceil(lo))), min(size - 1, int(math.floor(hi)))


@njit(cache=True, nogil=True)
def triangle_boxes(hom_n3, uv_n2, faces_f3, perspective, near, width, height, face_start, face_stop, bbox_f4):
    """Fill bbox_f4[face_start:face_stop] (int32 row0, row1, col0, col1) with the pixel centres each triangle may
    cover; empty (row0 > row1) for triangles off the image or entirely behind the near plane."""
    for f in range(face_start, face_stop):
        _triangle_box(f, hom_n3, uv_n2, faces_f3, perspective, near, width, height, bbox_f4)


@njit(cache=True, inline="always")
def _triangle_box(f, hom_n3, uv_n2, faces_f3, perspective, near, width, height, bbox_f4):
    i0, i1, i2 = faces_f3[f, 0], faces_f3[f, 1], faces_f3[f, 2]
    bbox_f4[f, 0], bbox_f4[f, 1], bbox_f4[f, 2], bbox_f4[f, 3] = 1, 0, 1, 0
    u0, u1, u2 = uv_n2[i0, 0], uv_n2[i1, 0], uv_n2[i2, 0]
    v0, v1, v2 = uv_n2[i0, 1], uv_n2[i1, 1], uv_n2[i2, 1]
    if perspective and (np.isnan(u0) or np.isnan(u1) or np.isnan(u2)):
        if hom_n3[i0, 2] < near and hom_n3[i1, 2] < near and hom_n3[i2, 2] < near:
            return  # entirely behind the near plane
        u_min, u_max, v_min, v_max = _clipped_bounds(hom_n3, i0, i1, i2, near)
    else:
        u_min, u_max, v_min, v_max = min(u0, u1, u2), max(u0, u1, u2), min(v0, v1, v2), max(v0, v1, v2)
    row0, row1 = _pixel_range(v_min, v_max, height)
    col0, col1 = _pixel_range(u_min, u_max, width)
    if row0 <= row1 and col0 <= col1:
        bbox_f4[f, 0], bbox_f4[f, 1], bbox_f4[f, 2], bbox_f4[f, 3] = row0, row1, col0, col1


@njit(cache=True, inline="always")
def triangle_coefficients(f, hom_n3, depth_n, faces_f3, perspective, cull_back):
    """(drawable, sign-normalised edge rows a0, b0, c0, a1, b1, c1, a2, b2, c2, depth numerator q0, q1, q2, q3).

    Not drawable: degenerate or edge-on (det M = 0), non-finite, or culled (det M > 0 <=> clockwise as seen from
    the camera, i.e. a back face of a mesh that is counter-clockwise seen from outside)."""
    i0, i1, i2 = faces_f3[f, 0], faces_f3[f, 1], faces_f3[f, 2]
    x0, y0, w0 = hom_n3[i0, 0], hom_n3[i0, 1], hom_n3[i0, 2]
    x1, y1, w1 = hom_n3[i1, 0], hom_n3[i1, 1], hom_n3[i1, 2]
    x2, y2, w2 = hom_n3[i2, 0], hom_n3[i2, 1], hom_n3[i2, 2]
    # rows of adj(M): h1 x h2, h2 x h0, h0 x h1 (exactly antisymmetric in the vertex pair)
    a0, b0, c0 = y1 * w2 - w1 * y2, w1 * x2 - x1 * w2, x1 * y2 - y1 * x2
    a1, b1, c1 = y2 * w0 - w2 * y0, w2 * x0 - x2 * w0, x2 * y0 - y2 * x0
    a2, b2, c2 = y0 * w1 - w0 * y1, w0 * x1 - x0 * w1, x0 * y1 - y0 * x1
    det = x0 * a0 + y0 * b0 + w0 * c0
    drawable = det != 0.0 and np.isfinite(det) and not (cull_back and det > 0.0)
    s = 1.0 if det > 0.0 else -1.0
    if perspective:
        q0, q1, q2, q3 = 0.0, 0.0, 0.0, abs(det)
    else:
        q0, q1, q2, q3 = depth_n[i0], depth_n[i1], depth_n[i2], 0.0
    return (drawable, s * a0, s * b0, s * c0, s * a1, s * b1, s * c1, s * a2, s * b2, s * c2, q0, q1, q2, q3)


@njit(cache=True, inline="always")
def _span(a, inv_a, rest, lo, hi):
    """Narrow the column interval [lo, hi] to where a * u + rest >= 0, widened by the margin (the exact per-pixel
    test decides; this only skips pixels that are certainly outside)."""
    if a > 0.0:
        lo = max(lo, -rest * inv_a - SPAN_MARGIN_PX)
    elif a < 0.0:
        hi = min(hi, -rest * inv_a + SPAN_MARGIN_PX)
    elif rest < 0.0:
        hi = lo - 1.0
    return lo, hi


@njit(cache=True, inline="always")
def _draw_triangle(f, coefficients, row0, row1, col0, col1, near, ids_hw, zbuf_hw, bary_hw3):
    _, a0, b0, c0, a1, b1, c1, a2, b2, c2, q0, q1, q2, q3 = coefficients
    narrow = col1 - col0 < NARROW_BOX_PX
    if not narrow:
        inv_a0 = 1.0 / a0 if a0 != 0.0 else 0.0
        inv_a1 = 1.0 / a1 if a1 != 0.0 else 0.0
        inv_a2 = 1.0 / a2 if a2 != 0.0 else 0.0
    for i in range(row0, row1 + 1):
        v = float(i)
        rest0, rest1, rest2 = b0 * v + c0, b1 * v + c1, b2 * v + c2
        j0, j1 = col0, col1
        if not narrow:  # columns where all three edge functions can be >= 0: only those are tested exactly
            lo, hi = _span(a0, inv_a0, rest0, float(col0), float(col1))
            lo, hi = _span(a1, inv_a1, rest1, lo, hi)
            lo, hi = _span(a2, inv_a2, rest2, lo, hi)
            if not lo <= hi:
                continue
            j0, j1 = int(math.ceil(lo)), int(math.floor(hi))
        for j in range(j0, j1 + 1):
            u = float(j)
            e0 = a0 * u + rest0
            e1 = a1 * u + rest1
            e2 = a2 * u + rest2
            if e0 < 0.0 or e1 < 0.0 or e2 < 0.0:
                continue
            s = e0 + e1 + e2
            if s <= 0.0:
                continue
            # depth = numerator / s with s > 0: compare before dividing, most fragments fail the z-test
            numerator = q0 * e0 + q1 * e1 + q2 * e2 + q3
            if numerator >= near * s and numerator < zbuf_hw[i, j] * s:
                depth = numerator / s
                if depth < zbuf_hw[i, j]:
                    zbuf_hw[i, j] = depth
                    ids_hw[i, j] = f
                    bary_hw3[i, j, 0] = e0 / s
                    bary_hw3[i, j, 1] = e1 / s
                    bary_hw3[i, j, 2] = e2 / s


@njit(cache=True)
def _bin_worker_stripes(bbox_f4, stripe_shift, worker, n_workers, n_stripes):
    """CSR lists of triangle ids, ascending, for the stripes a worker owns (worker, worker + n_workers, ...):
    local stripe k (global stripe worker + k * n_workers) owns ids[offsets[k]:offsets[k + 1]].

    Stripes are 2**stripe_shift rows and ownership is a table look-up: integer divisions here would cost more
    than the drawing of a small triangle."""
    local_s = np.full(n_stripes, -1, np.int64)
    n_local = 0
    for stripe in range(worker, n_stripes, n_workers):
        local_s[stripe] = n_local
        n_local += 1
    offsets = np.zeros(n_local + 1, np.int64)
    for f in range(bbox_f4.shape[0]):
        if bbox_f4[f, 0] <= bbox_f4[f, 1]:
            for stripe in range(bbox_f4[f, 0] >> stripe_shift, (bbox_f4[f, 1] >> stripe_shift) + 1):
                if local_s[stripe] >= 0:
                    offsets[local_s[stripe] + 1] += 1
    for k in range(n_local):
        offsets[k + 1] += offsets[k]
    ids = np.empty(offsets[n_local], np.int32)
    fill = offsets[:-1].copy()
    for f in range(bbox_f4.shape[0]):
        if bbox_f4[f, 0] <= bbox_f4[f, 1]:
            for stripe in range(bbox_f4[f, 0] >> stripe_shift, (bbox_f4[f, 1] >> stripe_shift) + 1):
                k = local_s[stripe]
                if k >= 0:
                    ids[fill[k]] = f
                    fill[k] += 1
    return offsets, ids


@njit(cache=True, nogil=True)
def raster_worker(worker, n_workers, hom_n3, depth_n, faces_f3, bbox_f4, perspective, cull_back, near, stripe_shift,
                  ids_hw, zbuf_hw, bary_hw3):
    """Draw the stripes of rows `worker` owns (2**stripe_shift rows each; stripes worker, worker + n_workers, ...)
    into the z-buffer: triangle id (-1 background), depth z_cam (+inf) and barycentrics (0).

    Interleaved stripes balance the load when the geometry is concentrated in part of the image; a worker draws its
    stripes one after the other, each from its own list of triangles, so the stripe's part of the buffers stays in
    cache; each pixel is written by one worker only, so workers run concurrently without locks."""
    height = ids_hw.shape[0]
    stripe_rows = 1 << stripe_shift
    n_stripes = (height + stripe_rows - 1) >> stripe_shift
    offsets, stripe_ids = _bin_worker_stripes(bbox_f4, stripe_shift, worker, n_workers, n_stripes)
    for k in range(len(offsets) - 1):
        stripe = worker + k * n_workers
        stripe_row0, stripe_row1 = stripe * stripe_rows, min(height, (stripe + 1) * stripe_rows) - 1
        for n in range(offsets[k], offsets[k + 1]):
            f = stripe_ids[n]
            coefficients = triangle_coefficients(f, hom_n3, depth_n, faces_f3, perspective, cull_back)
            if coefficients[0]:
                _draw_triangle(f, coefficients, max(bbox_f4[f, 0], stripe_row0), min(bbox_f4[f, 1], stripe_row1),
                               bbox_f4[f, 2], bbox_f4[f, 3], near, ids_hw, zbuf_hw, bary_hw3)


def rasterize_arrays(hom_n3, depth_n, uv_n2, faces_f3, *, perspective: bool, cull_back: bool, near: float,
                     height: int, width: int, n_workers: int, stripe_shift: int = 3):
    """Boxes, then the z-buffer, on `n_workers` threads (the kernels release the GIL). Threads rather than numba's
    parallel loops: parfor compilation would add ~15 s to the first call, and results are the same bytes for any
    number of workers. Returns (triangle id (H, W) int64, depth (H, W) float64, barycentrics (H, W, 3) float32)."""
    n_faces = faces_f3.shape[0]
    bbox_f4 = np.empty((n_faces, 4), np.int32)
    bounds = np.linspace(0, n_faces, n_workers + 1).astype(np.int64)
    _run_threads(n_workers, lambda k: triangle_boxes(hom_n3, uv_n2, faces_f3, perspective, near, width, height,
                                                     bounds[k], bounds[k + 1], bbox_f4))
    ids_hw = np.full((height, width), -1, np.int64)
    zbuf_hw = np.full((height, width), np.inf)
    bary_hw3 = np.zeros((height, width, 3), np.float32)
    _run_threads(n_workers, lambda k: raster_worker(k, n_workers, hom_n3, depth_n, faces_f3, bbox_f4, perspective,
                                                    cull_back, near, stripe_shift, ids_hw, zbuf_hw, bary_hw3))
    return ids_hw, zbuf_hw, bary_hw3


def _run_threads(n_workers: int, task) -> None:
    if n_workers == 1:
        task(0)
        return
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        for future in [pool.submit(task, k) for k in range(n_workers)]:
            future.result()  # re-raises a worker's exception
