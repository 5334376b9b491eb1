"""Differentiable iso-surface extraction: marching tetrahedra on a regular grid, table-driven, in torch.

Orbit to Ground extracts its mesh with FlexiCubes at 128^3; here the same role is played by marching
tetrahedra (MT), which needs no learned per-cube weights and has a 16-case table that is watertight by
construction. Every cube is split into the 6 tetrahedra of the Freudenthal (Kuhn) subdivision: tetrahedron
pi = (a, b, c), a permutation of the axes, has corners 0, e_a, e_a + e_b, 1 of the unit cube. All cubes use the
same diagonal, so the split of each shared square face agrees between neighbours (a conforming triangulation of
the grid) and the zero set of the piecewise-linear interpolant is a closed 2-manifold wherever it does not
reach the grid boundary and no grid value is exactly 0.

Every tetrahedron edge joins a grid point p to p + d with d one of 7 directions in {0, 1}^3 \\ 0, so the pair
(p, d) names an edge of the whole grid: vertices on shared edges are the same vertex (no welding by position).
A vertex on edge (a, b) with s_a < 0 <= s_b (or the reverse) is placed at

    x = x_a + s_a / (s_a - s_b) (x_b - x_a),

differentiable w.r.t. both SDF values (the only values it depends on). Inside means s < 0; s == 0 counts as
outside, so a grid value of exactly 0 puts the vertices of all its crossing edges on that grid point: still
closed edge by edge, but coincident positions (welding them by position would pinch the surface there).
MT makes more triangles than marching cubes: a horizontal plane costs 8 per cube crossed (6 tetrahedra,
two of them cut in quads), so a 128^3 2.5D scene gives roughly 0.5 M faces.

Faces are counter-clockwise seen from outside (normals point towards increasing s), the convention of
`earthsynth.io.mesh.TexturedMesh`; the 16-case table is built at import from one reference tetrahedron and
holds for all 6 because each is ordered to be positively oriented (an orientation-preserving affine map keeps
the side a triangle faces).

Closing a 2.5D surface. A height field's zero set runs into the sides of the grid, so it is open there.
With `closed=True` (default) the grid is padded by one layer of points on all six sides that count as outside:
the solid {s < 0} is capped where it meets the grid sides, its bottom (the lowest layer is below the ground,
hence inside) becomes a flat floor, its sides vertical walls: a closed, watertight solid. A vertex on an edge
with a padded end is put at the edge's midpoint, so the caps are flat and lie exactly half a cell beyond the
outermost sample points: for a grid whose samples are cell centres (a raster's pixel centres, a voxel grid's
voxel centres) that is the outer face of the boundary cells. The caps do not depend on the SDF values (no
gradient); the rim where the surface meets a cap is the strip between the last sample layer and the cap.
Placing these vertices at midpoints instead of interpolating keeps the mesh embedded and watertight: any
crossing point strictly inside each edge does, because each tetrahedron's triangles stay inside it and
neighbouring tetrahedra share the vertices of their common edges.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from earthsynth.errors import ConfigError

_EDGE_DIRECTIONS = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1))
_TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def _kuhn_tetrahedra() -> list[list[tuple[int, int, int]]]:
    """The 6 tetrahedra of the unit cube (corner offsets), each ordered to have positive volume."""
    tets = []
    for order in itertools.permutations(range(3)):
        corner, corners = [0, 0, 0], [(0, 0, 0)]
        for axis in order:
            corner[axis] = 1
            corners.append(tuple(corner))
        if _volume6(corners) < 0:
            corners[1], corners[2] = corners[2], corners[1]
        tets.append(corners)
    return tets


def _volume6(corners) -> float:
    p = torch.tensor(corners, dtype=torch.float64)
    return float(torch.linalg.det(p[1:] - p[0]))


def _edge_lows_and_directions(tets) -> tuple[list[list[tuple]], list[list[int]]]:
    """Per tetrahedron and local edge: the lower corner (component-wise) and the direction id to the upper one."""
    lows, dirs = [], []
    for corners in tets:
        lows.append([]), dirs.append([])
        for a, b in _TET_EDGES:
            low = tuple(min(u, v) for u, v in zip(corners[a], corners[b], strict=True))
            delta = tuple(abs(u - v) for u, v in zip(corners[a], corners[b], strict=True))
            lows[-1].append(low)
            dirs[-1].append(_EDGE_DIRECTIONS.index(delta))
    return lows, dirs


def _orient(tri: list[int], corners, inside: set[int]) -> list[int]:
    """Order a triangle of local edge ids so its normal points from the inside corners to the outside ones."""
    p = torch.tensor(corners, dtype=torch.float64)
    mids = [0.5 * (p[a] + p[b]) for a, b in (_TET_EDGES[e] for e in tri)]
    normal = torch.linalg.cross(mids[1] - mids[0], mids[2] - mids[0])
    outward = p[[c for c in range(4) if c not in inside]].mean(0) - p[sorted(inside)].mean(0)
    return tri if float(normal @ outward) > 0 else [tri[0], tri[2], tri[1]]


def _triangle_table(corners) -> torch.Tensor:
    """(16, 2, 3) local edge ids of the (at most 2) triangles of each inside-code; -1 pads. Bit c of the code
    is set when corner c is inside."""
    table = torch.full((16, 2, 3), -1, dtype=torch.long)
    for code in range(1, 15):
        inside = {c for c in range(4) if code >> c & 1}
        crossing = [e for e, (a, b) in enumerate(_TET_EDGES) if (a in inside) != (b in inside)]
        if len(crossing) == 3:
            table[code, 0] = torch.tensor(_orient(crossing, corners, inside))
            continue
        cycle = [crossing.pop(0)]                      # 2-2 split: a quad; walk edges sharing a corner
        while crossing:
            nxt = next(e for e in crossing if set(_TET_EDGES[e]) & set(_TET_EDGES[cycle[-1]]))
            cycle.append(nxt), crossing.remove(nxt)
        table[code, 0] = torch.tensor(_orient(cycle[:3], corners, inside))
        table[code, 1] = torch.tensor(_orient([cycle[0], cycle[2], cycle[3]], corners, inside))
    return table


_TETS = _kuhn_tetrahedra()
_TET_CORNERS_643 = torch.tensor(_TETS, dtype=torch.long)                 # (6 tets, 4 corners, xyz)
_lows, _dirs = _edge_lows_and_directions(_TETS)
_EDGE_LOWS_663 = torch.tensor(_lows, dtype=torch.long)                   # (6 tets, 6 edges, xyz)
_EDGE_DIRS_66 = torch.tensor(_dirs, dtype=torch.long)                    # (6 tets, 6 edges)
_TRIANGLES_1623 = _triangle_table(_TETS[0])
_DIRECTIONS_73 = torch.tensor(_EDGE_DIRECTIONS, dtype=torch.long)
del _lows, _dirs


class Isosurface(NamedTuple):
    vertices_v3: torch.Tensor   # positions, differentiable w.r.t. the SDF grid
    faces_f3: torch.Tensor      # int64, counter-clockwise seen from outside
    edges_v2: torch.Tensor      # int64 flat indices into the caller's SDF grid of the edge's two end points, the
                                # only values the vertex depends on; -1 names a padding point (closed=True): such
                                # a vertex is a cap vertex at the edge midpoint and depends on no value


def extract_isosurface(sdf_grid_rrr: torch.Tensor, bounds_min, bounds_max, *,
                       closed: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The zero iso-surface of an SDF sampled on a regular grid, as (vertices_v3, faces_f3).

    sdf_grid_rrr: (Rx, Ry, Rz) values, negative inside; point [ix, iy, iz] lies at
    bounds_min + (ix, iy, iz) * (bounds_max - bounds_min) / (R - 1) (ZMonotonicSDF.sample_grid's layout).
    closed: cap the solid where it meets the grid sides (see the module doc). Vertices keep the SDF's dtype and
    device and carry gradients w.r.t. `sdf_grid_rrr`; faces are int64 on the same device."""
    surface = marching_tetrahedra(sdf_grid_rrr, bounds_min, bounds_max, closed=closed)
    return surface.vertices_v3, surface.faces_f3


def _check_grid(sdf: torch.Tensor, bounds_min, bounds_max) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(sdf, torch.Tensor) or sdf.ndim != 3 or min(sdf.shape) < 2 or not sdf.is_floating_point():
        raise ConfigError("sdf_grid_rrr must be a floating (Rx, Ry, Rz) tensor with every size >= 2, got "
                          f"{type(sdf).__name__} {tuple(getattr(sdf, 'shape', ()))}")
    lo = torch.as_tensor(bounds_min, dtype=sdf.dtype, device=sdf.device).reshape(-1)
    hi = torch.as_tensor(bounds_max, dtype=sdf.dtype, device=sdf.device).reshape(-1)
    if lo.numel() != 3 or hi.numel() != 3 or not bool((hi > lo).all()):
        raise ConfigError(f"bounds_min and bounds_max must be 3 values with max > min, got {bounds_min}, {bounds_max}")
    if not bool(torch.isfinite(sdf).all()):
        raise ConfigError("sdf_grid_rrr contains NaN or infinite values")
    return lo, hi


def _pad_outside(sdf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer of outside points (value 1) on every side, and for each padded-grid point the flat index of the
    caller's grid point it is (-1 for the padding)."""
    rx, ry, rz = sdf.shape
    ix, iy, iz = (torch.arange(-1, n + 1, device=sdf.device) for n in (rx, ry, rz))
    source = (ix[:, None, None] * ry + iy[None, :, None]) * rz + iz[None, None, :]
    is_pad = ((ix[:, None, None] < 0) | (ix[:, None, None] >= rx) | (iy[None, :, None] < 0)
              | (iy[None, :, None] >= ry) | (iz[None, None, :] < 0) | (iz[None, None, :] >= rz))
    padded = F.pad(sdf[None, None], (1, 1, 1, 1, 1, 1), mode="constant", value=1.0)[0, 0]
    return padded, torch.where(is_pad, -1, source)


def _surface_cubes(inside: torch.Tensor) -> torch.Tensor:
    """(M,) flat grid index of the lower corner of every cube with both inside and outside corners."""
    sx, sy, sz = inside.shape
    occ = inside.to(torch.uint8)
    count = torch.zeros((sx - 1, sy - 1, sz - 1), dtype=torch.uint8, device=inside.device)
    for dx, dy, dz in itertools.product((0, 1), repeat=3):
        count += occ[dx:sx - 1 + dx, dy:sy - 1 + dy, dz:sz - 1 + dz]
    cube = torch.nonzero((count > 0) & (count < 8))
    return (cube[:, 0] * sy + cube[:, 1]) * sz + cube[:, 2]


def _face_keys(inside_flat: torch.Tensor, cubes_m: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """(F, 3) edge keys (flat index of the edge's lower point * 7 + direction id) of all triangles."""
    device = cubes_m.device
    corner_delta_64 = (_TET_CORNERS_643.to(device) * strides).sum(-1)
    corners = cubes_m[:, None, None] + corner_delta_64[None]                        # (M, 6, 4)
    bits = torch.tensor([1, 2, 4, 8], device=device)
    codes = (inside_flat[corners].long() * bits).sum(-1)                            # (M, 6)
    cube_of, tet_of = torch.nonzero((codes > 0) & (codes < 15), as_tuple=True)
    low_delta_66 = (_EDGE_LOWS_663.to(device) * strides).sum(-1)
    keys = (cubes_m[cube_of, None] + low_delta_66[tet_of]) * 7 + _EDGE_DIRS_66.to(device)[tet_of]  # (T, 6)
    triangles = _TRIANGLES_1623.to(device)[codes[cube_of, tet_of]]                  # (T, 2, 3)
    valid = triangles[..., 0] >= 0
    keys = torch.gather(keys, 1, triangles.clamp(min=0).reshape(-1, 6)).reshape(-1, 2, 3)
    return keys[valid]


def marching_tetrahedra(sdf_grid_rrr: torch.Tensor, bounds_min, bounds_max, *, closed: bool = True) -> Isosurface:
    """`extract_isosurface`, also returning for each vertex the two grid values it interpolates."""
    lo, hi = _check_grid(sdf_grid_rrr, bounds_min, bounds_max)
    sizes = torch.tensor(sdf_grid_rrr.shape, device=sdf_grid_rrr.device)
    spacing = (hi - lo) / (sizes - 1).to(lo.dtype)
    sdf, source = sdf_grid_rrr, None
    if closed:
        sdf, source = _pad_outside(sdf_grid_rrr)
        lo = lo - spacing
    strides = torch.tensor([sdf.shape[1] * sdf.shape[2], sdf.shape[2], 1], device=sdf.device)
    sdf_flat = sdf.reshape(-1)
    inside_flat = sdf_flat < 0
    face_keys = _face_keys(inside_flat, _surface_cubes(inside_flat.reshape(sdf.shape)), strides)
    if face_keys.numel() == 0:
        empty_long = torch.zeros((0, 3), dtype=torch.long, device=sdf.device)
        return Isosurface(sdf_flat.new_zeros((0, 3)), empty_long, empty_long[:, :2])
    keys, inverse = torch.unique(face_keys.reshape(-1), return_inverse=True)
    point_a = keys // 7
    point_b = point_a + (_DIRECTIONS_73.to(sdf.device)[keys % 7] * strides).sum(-1)
    s_a, s_b = sdf_flat[point_a], sdf_flat[point_b]
    t = s_a / (s_a - s_b)
    edges = torch.stack([point_a, point_b], dim=1)
    if source is not None:
        edges = source.reshape(-1)[edges]
        t = torch.where((edges < 0).any(dim=1), torch.full_like(t, 0.5), t)   # caps: edge midpoints
    x_a = lo + _unravel(point_a, strides).to(lo.dtype) * spacing
    x_b = lo + _unravel(point_b, strides).to(lo.dtype) * spacing
    vertices = x_a + t[:, None] * (x_b - x_a)
    return Isosurface(vertices, inverse.reshape(-1, 3), edges)


def _unravel(flat: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    ix = flat // strides[0]
    iy = (flat % strides[0]) // strides[1]
    return torch.stack([ix, iy, flat % strides[1]], dim=1)
