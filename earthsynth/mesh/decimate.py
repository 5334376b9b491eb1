"""Quadric-error decimation of the reconstructed mesh before its UV atlas (fast_simplification).

The geometry stage's mesh comes from a fine iso-surface grid, so most of its faces are coplanar pieces of flat
roofs, walls and ground: collapsing them costs almost no geometric error, while xatlas and the texture
optimisation scale with the face count.

Closed input stays closed. fast_simplification can leave a "fin" (two faces on the same three vertices, facing
opposite ways) where a collapse folds a thin strip onto itself; each such pair is removed (it encloses no
volume and its two faces cancel), which gives every edge back its two faces. If the result is still not
watertight (or its winding is no longer consistent) the decimation is retried less aggressively, and if no
attempt keeps the mesh closed the input is returned unchanged with `report["warning"]` saying so: a broken
mesh is never returned.

The report gives the deviation between the two surfaces both ways (output samples -> input mesh, and input
samples -> output mesh: the second catches a thin feature that was collapsed away), with exact point-to-triangle
distances (`surface_distance`); the samples are each mesh's vertices and as many area-uniform points.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from scipy.spatial import cKDTree

from earthsynth.errors import ConfigError

AGGRESSIONS = (7.0, 5.0, 3.0)   # fast_simplification's default first; lower = slower, closer, fewer folds
MIN_CLASS_RADIUS_M = 0.5        # smallest triangle-size class of the exact distance search
ON_SURFACE_M = 1e-6             # a query point this close to a triangle needs no further search
QUERY_CHUNK = 20_000


def _check_inputs(vertices_n3, faces_f3, target_faces) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(vertices_n3, dtype=np.float64)
    faces = np.asarray(faces_f3)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.isfinite(vertices).all():
        raise ConfigError(f"decimate_mesh: vertices must be a finite (N, 3) array of metres, got shape "
                          f"{vertices.shape}" + ("" if vertices.ndim != 2 or np.isfinite(vertices).all()
                                                 else " with NaN / inf values"),
                          hint="pass the mesh the geometry stage wrote; rerun that stage if it is corrupt")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0 or not np.issubdtype(faces.dtype, np.integer):
        raise ConfigError(f"decimate_mesh: faces must be a non-empty integer (F, 3) array, got {faces.dtype} "
                          f"{faces.shape}")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ConfigError(f"decimate_mesh: face indices must lie in [0, {len(vertices) - 1}], got "
                          f"[{faces.min()}, {faces.max()}]")
    if isinstance(target_faces, bool) or int(target_faces) != target_faces or target_faces < 4:
        raise ConfigError(f"decimate_mesh: target_faces must be an integer >= 4, got {target_faces!r}")
    return vertices, faces.astype(np.int64)


def _closed_and_consistent(vertices, faces) -> bool:
    import trimesh
    mesh = trimesh.Trimesh(vertices, faces, process=False, validate=False)
    return bool(mesh.is_watertight and mesh.is_winding_consistent)


def remove_folds(faces_f3: np.ndarray) -> np.ndarray:
    """Faces without repeated indices, without opposite pairs on the same three vertices (both removed), and
    with one face kept of faces repeated with the same orientation. Order of the survivors is kept."""
    f = faces_f3[(faces_f3[:, 0] != faces_f3[:, 1]) & (faces_f3[:, 1] != faces_f3[:, 2])
                 & (faces_f3[:, 2] != faces_f3[:, 0])]
    if len(f) == 0:
        return f
    # rotate each face so its smallest index comes first: same vertex set + same rotation = same orientation
    first = np.argmin(f, axis=1)
    rotated = np.stack([f[np.arange(len(f)), (first + k) % 3] for k in range(3)], axis=1)
    positive = rotated[:, 1] < rotated[:, 2]
    _, group = np.unique(np.sort(f, axis=1), axis=0, return_inverse=True)
    group = group.ravel()
    net = np.bincount(group, np.where(positive, 1, -1))
    keep = np.zeros(len(f), bool)
    # per vertex set, the first face of the orientation that outnumbers the other (none if they balance)
    for want in (True, False):
        idx = np.flatnonzero(positive == want)
        idx = idx[(net[group[idx]] > 0) == want]
        idx = idx[net[group[idx]] != 0]
        _, first_of_group = np.unique(group[idx], return_index=True)
        keep[idx[first_of_group]] = True
    return f[keep]


def remove_unreferenced(vertices_n3: np.ndarray, faces_f3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used = np.unique(faces_f3)
    remap = np.full(len(vertices_n3), -1, np.int64)
    remap[used] = np.arange(len(used))
    return vertices_n3[used], remap[faces_f3]


def _point_triangle_distance(points_n3, triangles_n33) -> np.ndarray:
    from trimesh.triangles import closest_point
    return np.linalg.norm(closest_point(triangles_n33, points_n3) - points_n3, axis=1)


def surface_distance(points_n3, vertices_n3, faces_f3, *, first_guess: int = 4) -> np.ndarray:
    """Exact distance (metres) from each point to a triangle mesh (no spatial index library needed).

    An upper bound d first (the nearest of the `first_guess` triangles with the nearest centroids); then every
    triangle that could be closer than d is checked: a triangle whose vertices lie within r of its centroid c
    is no closer than |q - c| - r, so with triangles grouped by r (classes r <= R, R doubling) the candidates of
    a class are the centroids within d + R of q, one ball query per class."""
    triangles = np.asarray(vertices_n3, np.float64)[np.asarray(faces_f3, np.int64)]
    centroids = triangles.mean(axis=1)
    radius = np.linalg.norm(triangles - centroids[:, None], axis=2).max(axis=1)
    top = [MIN_CLASS_RADIUS_M]
    while top[-1] < radius.max():
        top.append(2.0 * top[-1])
    which = np.searchsorted(np.asarray(top), radius)           # class j: top[j-1] < r <= top[j]
    classes = [(np.flatnonzero(which == j), r) for j, r in enumerate(top) if (which == j).any()]
    trees = [(members, r, cKDTree(centroids[members])) for members, r in classes]
    points = np.asarray(points_n3, np.float64)
    k = min(int(first_guess), len(triangles))
    guess = cKDTree(centroids).query(points, k=k)[1].reshape(len(points), k)
    out = np.empty(len(points))
    for start in range(0, len(points), QUERY_CHUNK):
        q = points[start:start + QUERY_CHUNK]
        g = guess[start:start + len(q)]
        best = _point_triangle_distance(np.repeat(q, k, axis=0), triangles[g.ravel()]).reshape(len(q), k).min(1)
        for members, r, tree in trees:
            open_ = np.flatnonzero(best > ON_SURFACE_M)          # a point on the surface cannot get closer
            if len(open_) == 0:
                break
            found = tree.query_ball_point(q[open_], best[open_] + r + 1e-9, return_sorted=False)
            counts = np.fromiter(map(len, found), np.int64, len(open_))
            if counts.sum() == 0:
                continue
            owner = np.repeat(open_, counts)
            tri = members[np.concatenate([np.asarray(f, np.int64) for f in found if len(f)])]
            # the ball is sized for the class's largest triangle: drop those whose own sphere is too far
            near = np.linalg.norm(q[owner] - centroids[tri], axis=1) - radius[tri] < best[owner]
            owner, tri = owner[near], tri[near]
            if len(owner) == 0:
                continue
            dist = _point_triangle_distance(q[owner], triangles[tri])
            np.minimum.at(best, owner, dist)
        out[start:start + len(q)] = best
    return out


def _samples(vertices, faces, count: int, seed: int) -> np.ndarray:
    """The mesh's vertices (at most `count`, a random subset) and `count` area-uniform surface points."""
    from earthsynth.metrics.geometry_points import sample_mesh_points

    rng = np.random.default_rng(seed)
    corners = vertices if len(vertices) <= count else vertices[rng.choice(len(vertices), count, replace=False)]
    return np.concatenate([corners, sample_mesh_points(vertices, faces, count, seed=seed)])


def deviation_report(v_in, f_in, v_out, f_out, *, samples: int = 20_000, seed: int = 0) -> dict:
    """Max / mean distance both ways between the input and output surfaces (see the module docstring)."""
    started = time.perf_counter()
    out_to_in = surface_distance(_samples(v_out, f_out, samples, seed), v_in, f_in)
    in_to_out = surface_distance(_samples(v_in, f_in, samples, seed + 1), v_out, f_out)
    return {"max_deviation_m": float(max(out_to_in.max(), in_to_out.max())),
            "mean_deviation_m": float(out_to_in.mean()),
            "out_to_in_max_m": float(out_to_in.max()), "out_to_in_mean_m": float(out_to_in.mean()),
            "in_to_out_max_m": float(in_to_out.max()), "in_to_out_mean_m": float(in_to_out.mean()),
            "deviation_seconds": time.perf_counter() - started}


def decimate_mesh(vertices_n3, faces_f3, *, target_faces: int, deviation_samples: int = 20_000,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Quadric decimation to at most `target_faces` faces -> (vertices float64 (V, 3), faces int64 (F, 3),
    report). A mesh already at or below the target passes through unchanged (report["decimated"] False).
    Watertight input stays watertight, or is returned unchanged with report["warning"] (module docstring).
    report: faces_in, faces_out, target_faces, decimated, seconds, aggression, attempts, max_deviation_m (both
    ways), mean_deviation_m (output samples -> input), the per-direction max / mean, and warning if any."""
    from fast_simplification import simplify

    vertices, faces = _check_inputs(vertices_n3, faces_f3, target_faces)
    started = time.perf_counter()
    report: dict = {"faces_in": int(len(faces)), "target_faces": int(target_faces)}
    if len(faces) <= target_faces:
        return vertices, faces, {**report, "faces_out": int(len(faces)), "decimated": False, "seconds": 0.0}
    closed = _closed_and_consistent(vertices, faces)
    # ENU coordinates can be large (and the quadrics hold products of them): work around the centroid
    centre = vertices.mean(axis=0)
    centred = vertices - centre
    attempts = []
    for aggression in AGGRESSIONS:
        v_out, f_out = simplify(centred, faces, target_count=int(target_faces), agg=aggression)
        f_out = remove_folds(np.asarray(f_out, np.int64))
        v_out, f_out = remove_unreferenced(np.asarray(v_out, np.float64) + centre, f_out)
        ok = len(f_out) > 0 and (not closed or _closed_and_consistent(v_out, f_out))
        attempts.append({"aggression": aggression, "faces": int(len(f_out)), "closed": ok})
        if ok:
            break
    else:
        message = (f"decimate_mesh: no decimation to {target_faces} faces kept the {len(faces)}-face mesh "
                   f"{'closed' if closed else 'non-empty'} (tried aggressions {AGGRESSIONS}); the input is used "
                   f"unchanged")
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return vertices, faces, {**report, "faces_out": int(len(faces)), "decimated": False, "attempts": attempts,
                                 "warning": message, "seconds": time.perf_counter() - started}
    report.update(faces_out=int(len(f_out)), decimated=True, aggression=aggression, attempts=attempts,
                  watertight=closed, seconds=time.perf_counter() - started)
    if len(f_out) > target_faces:      # a low aggression can stop short of the target: say so
        report["warning"] = f"decimate_mesh: stopped at {len(f_out)} faces, above the target {target_faces}"
    report.update(deviation_report(vertices, faces, v_out, f_out, samples=deviation_samples, seed=seed))
    return v_out, f_out, report
