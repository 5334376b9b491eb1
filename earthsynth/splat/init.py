"""Initial Gaussians from points: the `earthsynth dsm` point cloud (Skyfall-GS 3.1.1 starts from SatelliteSfM
points), or points sampled over a mesh surface, facades included (an option the paper does not have).

As in Inria's 3DGS: one isotropic Gaussian per point with log scale log(sqrt(mean of the squared distances to the
`knn` nearest neighbours)) (Inria's distCUDA2 / gsplat's knn init, k = 3), identity rotation, opacity 0.1, the
point colour as SH DC and zero higher coefficients.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from earthsynth.errors import ConfigError
from earthsynth.io.mesh import TexturedMesh
from earthsynth.io.pointcloud import read_point_cloud_ply
from earthsynth.io.splats import rgb_to_sh_dc
from earthsynth.splat.model import GaussianModel

_MIN_SQUARED_DISTANCE = 1e-7     # Inria clamps distCUDA2 at 1e-7 so that duplicate points get a finite scale


def _colors_01(colors_n3, n: int) -> np.ndarray:
    """uint8 (0..255) or float (0..1) colours -> float64 in [0, 1]; None -> mid grey."""
    if colors_n3 is None:
        return np.full((n, 3), 0.5)
    colors = np.asarray(colors_n3)
    if colors.shape != (n, 3):
        raise ConfigError(f"colors_n3 must have shape ({n}, 3) like the points, got {colors.shape}")
    if colors.dtype == np.uint8:
        return colors.astype(np.float64) / 255.0
    colors = colors.astype(np.float64)
    if not np.isfinite(colors).all() or colors.min() < 0.0 or colors.max() > 1.0:
        raise ConfigError("float colours must lie in [0, 1]", hint="pass uint8 colours or divide by 255")
    return colors


def knn_log_scales(points_n3, knn: int = 3) -> np.ndarray:
    """log sqrt(mean squared distance to the `knn` nearest other points), per point (float64)."""
    points = np.asarray(points_n3, np.float64)
    if len(points) <= knn:
        raise ConfigError(f"at least {knn + 1} points are needed to set scales from {knn} neighbours, "
                          f"got {len(points)}")
    distances, _ = cKDTree(points).query(points, k=knn + 1)    # column 0 is the point itself
    mean_sq = np.maximum((distances[:, 1:] ** 2).mean(axis=1), _MIN_SQUARED_DISTANCE)
    return 0.5 * np.log(mean_sq)


def init_from_points(points_n3, colors_n3=None, *, sh_degree: int = 1, init_opacity: float = 0.1, knn: int = 3,
                     seed: int = 0, max_points: int | None = None, device=None) -> GaussianModel:
    """Gaussians on points (ENU metres). Colours uint8 or float [0, 1] (None: grey). `max_points` keeps a random
    subset drawn with `seed` (in the original order), for dense clouds. sh_degree 1 is Skyfall-GS's."""
    points = np.asarray(points_n3, np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
        raise ConfigError(f"points_n3 must be a finite (N, 3) array, got shape {points.shape}")
    if not 0 <= int(sh_degree) <= 3:
        raise ConfigError(f"sh_degree must be 0..3, got {sh_degree}")
    if not 0.0 < init_opacity < 1.0:
        raise ConfigError(f"init_opacity must be in (0, 1), got {init_opacity}")
    colors = _colors_01(colors_n3, len(points))
    if max_points is not None and len(points) > int(max_points):
        if int(max_points) < 1:
            raise ConfigError(f"max_points must be >= 1, got {max_points}")
        keep = np.sort(np.random.default_rng(seed).choice(len(points), int(max_points), replace=False))
        points, colors = points[keep], colors[keep]
    n, k = len(points), (int(sh_degree) + 1) ** 2
    log_scales = knn_log_scales(points, knn)

    def t(array):
        return torch.as_tensor(np.asarray(array, np.float32), device=device)

    quats = np.zeros((n, 4), np.float32)
    quats[:, 0] = 1.0
    logit = np.log(init_opacity / (1.0 - init_opacity))
    return GaussianModel({"means": t(points), "quats": t(quats), "scales": t(np.repeat(log_scales[:, None], 3, 1)),
                          "opacities": t(np.full(n, logit)), "sh0": t(rgb_to_sh_dc(colors)[:, None, :]),
                          "shN": t(np.zeros((n, k - 1, 3)))})


def init_from_point_cloud_ply(path, **kwargs) -> GaussianModel:
    """`init_from_points` on a PLY point cloud (e.g. the one `earthsynth dsm` writes)."""
    points, colors, _ = read_point_cloud_ply(Path(path))
    return init_from_points(points, colors, **kwargs)


def points_from_mesh(mesh: TexturedMesh, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` points uniformly distributed over the mesh surface (faces drawn in proportion to their area,
    uniform barycentrics within a face) with colours in [0, 1] from the texture (bilinear, glTF UVs), else the
    vertex colours (barycentric), else mid grey. -> (points float64 (count, 3), colors float32 (count, 3))."""
    if int(count) < 1:
        raise ConfigError(f"count must be >= 1, got {count}")
    vertices, faces = mesh.vertices_n3, mesh.faces_f3
    if len(faces) == 0:
        raise ConfigError("the mesh has no faces to sample points on")
    corners = vertices[faces]                                               # (F, 3, 3)
    areas = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    if not areas.sum() > 0:
        raise ConfigError("the mesh has zero surface area")
    rng = np.random.default_rng(seed)
    face_ids = rng.choice(len(faces), size=int(count), p=areas / areas.sum())
    # uniform point in a triangle: (1 - sqrt(r1), sqrt(r1) (1 - r2), sqrt(r1) r2)
    r1, r2 = rng.random(int(count)), rng.random(int(count))
    s = np.sqrt(r1)
    bary = np.stack([1.0 - s, s * (1.0 - r2), s * r2], axis=1)              # (count, 3)
    points = np.einsum("nk,nkd->nd", bary, corners[face_ids])
    return points, _mesh_colors(mesh, face_ids, bary)


def _mesh_colors(mesh: TexturedMesh, face_ids: np.ndarray, bary: np.ndarray) -> np.ndarray:
    corner_ids = mesh.faces_f3[face_ids]                                    # (count, 3)
    if mesh.texture_hw3 is not None and mesh.uvs_n2 is not None:
        from earthsynth.render.mesh import sample_texture   # torch lookup with the project's UV convention
        uv = np.einsum("nk,nkd->nd", bary, np.asarray(mesh.uvs_n2, np.float64)[corner_ids])
        texture = torch.from_numpy(np.asarray(mesh.texture_hw3, np.float32) / 255.0)
        colors = sample_texture(texture, torch.from_numpy(uv.astype(np.float32))[None])[0].numpy()
        return np.clip(colors, 0.0, 1.0).astype(np.float32)    # bilinear of [0, 1] texels: clip only rounding
    if mesh.vertex_colors_n3 is not None:
        vertex_colors = np.asarray(mesh.vertex_colors_n3, np.float64)
        return np.einsum("nk,nkd->nd", bary, vertex_colors[corner_ids]).astype(np.float32)
    return np.full((len(face_ids), 3), 0.5, np.float32)
