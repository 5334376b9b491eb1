"""Small geometry kit for the procedural world: polygons, closed primitives, and a mesh accumulator.

Every solid made here is closed and wound counter-clockwise seen from outside, so the whole world is a union
of watertight components. Texture coordinates are collected per vertex in *texel units inside a named atlas
region* (e.g. "topdown", "facade/12", "palette"); `MeshAccumulator.to_mesh` turns them into atlas UVs once
the atlas is packed (glTF convention: (0, 0) is the top-left corner of the image, v down).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from earthsynth.io.mesh import TexturedMesh

# Labels of mesh faces (which part of the world a face belongs to); stored per face next to each mesh.
PART_NAMES = ("terrain", "wall", "roof", "roof_detail", "trunk", "crown", "car")
PART_ID = {name: i for i, name in enumerate(PART_NAMES)}


def polygon_signed_area(polygon_n2: np.ndarray) -> float:
    x, y = polygon_n2[:, 0], polygon_n2[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def triangulate_polygon(polygon_n2: np.ndarray) -> np.ndarray:
    """Ear clipping of a simple counter-clockwise polygon -> (n-2, 3) vertex indices, CCW triangles."""
    remaining = list(range(len(polygon_n2)))
    triangles = []
    p = np.asarray(polygon_n2, dtype=np.float64)
    while len(remaining) > 3:
        for k in range(len(remaining)):
            a, b, c = remaining[k - 1], remaining[k], remaining[(k + 1) % len(remaining)]
            ab, ac = p[b] - p[a], p[c] - p[a]
            if ab[0] * ac[1] - ab[1] * ac[0] <= 1e-12:
                continue  # reflex or flat corner: not an ear
            others = [i for i in remaining if i not in (a, b, c)]
            if others and np.any(_points_in_triangle(p[others], p[a], p[b], p[c])):
                continue
            triangles.append((a, b, c))
            remaining.pop(k)
            break
        else:
            raise ValueError("polygon is not simple or not counter-clockwise")
    triangles.append(tuple(remaining))
    return np.asarray(triangles, dtype=np.int64)


def _points_in_triangle(pts_n2, a, b, c) -> np.ndarray:
    def cross(p, q, r):
        return (q[0] - p[0]) * (r[:, 1] - p[1]) - (q[1] - p[1]) * (r[:, 0] - p[0])
    return (cross(a, b, pts_n2) >= 0) & (cross(b, c, pts_n2) >= 0) & (cross(c, a, pts_n2) >= 0)


def inset_polygon(polygon_n2: np.ndarray, distance_m: float) -> np.ndarray:
    """Move every edge of a CCW polygon inward by `distance_m` (mitred corners; fine for our footprints)."""
    p = np.asarray(polygon_n2, dtype=np.float64)
    edge = np.roll(p, -1, axis=0) - p
    normal_in = np.stack([-edge[:, 1], edge[:, 0]], axis=1) / np.linalg.norm(edge, axis=1, keepdims=True)
    n_prev, n_next = np.roll(normal_in, 1, axis=0), normal_in
    miter = (n_prev + n_next) / (1.0 + np.sum(n_prev * n_next, axis=1, keepdims=True))
    return p + distance_m * miter


def points_in_polygon(x, y, polygon_n2: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points (x, y of any equal shapes)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    inside = np.zeros(np.broadcast(x, y).shape, dtype=bool)
    p = np.asarray(polygon_n2, dtype=np.float64)
    for (x0, y0), (x1, y1) in zip(p, np.roll(p, -1, axis=0)):
        if y0 == y1:
            continue
        crosses = (y0 > y) != (y1 > y)
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_at)
    return inside


def rotation_2d(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s], [s, c]])


# Unit box [-.5, .5]^3: 8 corners, 12 outward CCW triangles.
_BOX_VERTICES = np.array([[x, y, z] for z in (-.5, .5) for y in (-.5, .5) for x in (-.5, .5)])
_BOX_FACES = np.array([
    [0, 2, 3], [0, 3, 1],  # bottom (z-)
    [4, 5, 7], [4, 7, 6],  # top (z+)
    [0, 1, 5], [0, 5, 4],  # y-
    [2, 6, 7], [2, 7, 3],  # y+
    [0, 4, 6], [0, 6, 2],  # x-
    [1, 3, 7], [1, 7, 5],  # x+
])


def box_solid(center_3, size_3, yaw_rad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Closed box -> (vertices_8x3, faces_12x3), rotated by yaw about z."""
    v = _BOX_VERTICES * np.asarray(size_3, dtype=np.float64)
    v[:, :2] = v[:, :2] @ rotation_2d(yaw_rad).T
    return v + np.asarray(center_3, dtype=np.float64), _BOX_FACES.copy()


@lru_cache(maxsize=1)
def _unit_icosphere() -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=1, radius=1.0)
    return np.asarray(sphere.vertices, dtype=np.float64), np.asarray(sphere.faces, dtype=np.int64)


def ellipsoid_solid(center_3, radii_3) -> tuple[np.ndarray, np.ndarray]:
    """Closed icosphere (42 vertices, 80 faces) scaled to an ellipsoid."""
    v, f = _unit_icosphere()
    return v * np.asarray(radii_3, dtype=np.float64) + np.asarray(center_3, dtype=np.float64), f.copy()


def cone_solid(base_center_3, radius_m: float, height_m: float, sides: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Closed cone: a ring of `sides` base vertices, apex, base centre."""
    angle = np.arange(sides) * 2 * np.pi / sides
    ring = np.stack([radius_m * np.cos(angle), radius_m * np.sin(angle), np.zeros(sides)], axis=1)
    v = np.concatenate([ring, [[0, 0, height_m], [0, 0, 0]]]) + np.asarray(base_center_3, dtype=np.float64)
    k, nxt = np.arange(sides), (np.arange(sides) + 1) % sides
    sides_f = np.stack([k, nxt, np.full(sides, sides)], axis=1)
    base_f = np.stack([k, np.full(sides, sides + 1), nxt], axis=1)
    return v, np.concatenate([sides_f, base_f])


@dataclass
class MeshAccumulator:
    """Collects mesh pieces with region-relative texel UVs and per-face part / building labels."""

    vertices: list = field(default_factory=list)
    faces: list = field(default_factory=list)
    uv_texels: list = field(default_factory=list)
    regions: list = field(default_factory=list)          # one region name per piece
    piece_sizes: list = field(default_factory=list)
    face_parts: list = field(default_factory=list)
    face_buildings: list = field(default_factory=list)
    num_vertices: int = 0

    def add(self, vertices_n3, faces_f3, uv_texel_n2, region: str, part: str, building: int = -1) -> None:
        vertices_n3 = np.asarray(vertices_n3, dtype=np.float64).reshape(-1, 3)
        faces_f3 = np.asarray(faces_f3, dtype=np.int64).reshape(-1, 3)
        uv = np.broadcast_to(np.asarray(uv_texel_n2, dtype=np.float64), (len(vertices_n3), 2))
        self.vertices.append(vertices_n3)
        self.faces.append(faces_f3 + self.num_vertices)
        self.uv_texels.append(uv)
        self.regions.append(region)
        self.piece_sizes.append(len(vertices_n3))
        self.face_parts.append(np.full(len(faces_f3), PART_ID[part], dtype=np.int8))
        self.face_buildings.append(np.full(len(faces_f3), building, dtype=np.int32))
        self.num_vertices += len(vertices_n3)

    def to_mesh(self, region_origins: dict, atlas_hw3: np.ndarray, metadata: dict | None = None):
        """-> (TexturedMesh, face_parts_f int8, face_buildings_f int32); origins are (row, col) texels."""
        height, width = atlas_hw3.shape[:2]
        origin_rc = np.concatenate([np.broadcast_to(np.asarray(region_origins[r], dtype=np.float64), (n, 2))
                                    for r, n in zip(self.regions, self.piece_sizes)])
        uv = np.concatenate(self.uv_texels)
        uvs_n2 = np.stack([(origin_rc[:, 1] + uv[:, 0]) / width, (origin_rc[:, 0] + uv[:, 1]) / height], axis=1)
        mesh = TexturedMesh(
            vertices_n3=np.concatenate(self.vertices), faces_f3=np.concatenate(self.faces),
            uvs_n2=uvs_n2.astype(np.float32), texture_hw3=atlas_hw3, metadata=dict(metadata or {}),
        )
        return mesh, np.concatenate(self.face_parts), np.concatenate(self.face_buildings)
