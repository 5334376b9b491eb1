"""Closed meshes of buildings: walls into the facade sheet, roofs into the top-down texture.

Full detail: flat roofs get a parapet (outer wall up to the parapet top, a rim, inner walls down to the roof)
and rooftop units as separate boxes. Reduced level of detail (the restoration input of Orbit-to-Ground B.3):
the same footprints, heights and roof shapes, without parapets or units. Both use the same UV layout; what
differs is the atlas content (flat facade colours, blurred top-down texture).
"""

from __future__ import annotations

import numpy as np

from earthsynth.world.primitives import MeshAccumulator, box_solid, inset_polygon, triangulate_polygon

_QUAD = np.array([[0, 1, 2], [0, 2, 3]])


def facade_region(b) -> str:
    return f"facade/{b.index}"


def add_building(acc: MeshAccumulator, b, grid, *, facade_texel_m: float, detail: bool, palette) -> None:
    """Append one building (and, with `detail`, its parapet and rooftop units) to `acc`."""
    if b.roof_kind == "flat":
        _add_flat(acc, b, grid, facade_texel_m, parapet=detail and b.parapet_m > 0)
    else:
        _add_pitched(acc, b, grid, facade_texel_m)
    if detail:
        for center, size, yaw in b.roof_units:
            v, f = box_solid(center, size, yaw)
            name = "machine_room" if size[2] > 3.0 else "roof_unit"
            acc.add(v, f, palette.uv_texel(name), "palette", "roof_detail", b.index)


def _walls(acc, b, ring_n2, z_bottom: float, z_top: float, texel_m: float) -> None:
    """One textured quad per edge of `ring_n2`, facing right of the edge direction (outward for CCW)."""
    p, q = ring_n2, np.roll(ring_n2, -1, axis=0)
    n = len(p)
    length = np.linalg.norm(q - p, axis=1)
    corners = np.stack([
        np.column_stack([p, np.full(n, z_bottom)]), np.column_stack([q, np.full(n, z_bottom)]),
        np.column_stack([q, np.full(n, z_top)]), np.column_stack([p, np.full(n, z_top)])], axis=1)  # (n, 4, 3)
    s = np.stack([np.zeros(n), length, length, np.zeros(n)], axis=1)
    uv = np.stack([s / texel_m, (b.top_z - corners[..., 2]) / texel_m], axis=-1)
    faces = (_QUAD[None] + 4 * np.arange(n)[:, None, None]).reshape(-1, 3)
    acc.add(corners.reshape(-1, 3), faces, uv.reshape(-1, 2), facade_region(b), "wall", b.index)


def _cap(acc, b, polygon_n2, z: float, grid, *, facing_up: bool, part: str) -> None:
    """A flat polygon at height z, textured top-down."""
    tris = triangulate_polygon(polygon_n2)
    if not facing_up:
        tris = tris[:, ::-1]
    v = np.column_stack([polygon_n2, np.full(len(polygon_n2), z)])
    acc.add(v, tris, grid.texel_of(polygon_n2[:, 0], polygon_n2[:, 1]), "topdown", part, b.index)


def _add_flat(acc, b, grid, texel_m: float, *, parapet: bool) -> None:
    outline = b.footprint_n2
    _cap(acc, b, outline, b.base_z, grid, facing_up=False, part="wall")
    if not parapet:
        _walls(acc, b, outline, b.base_z, b.eave_z, texel_m)
        _cap(acc, b, outline, b.eave_z, grid, facing_up=True, part="roof")
        return
    rim_z = b.eave_z + b.parapet_m
    inner = inset_polygon(outline, b.parapet_thickness_m)
    _walls(acc, b, outline, b.base_z, rim_z, texel_m)
    # Rim: quads between the outline and its inset at the parapet top, facing up.
    n = len(outline)
    k = np.arange(n)
    rim_v = np.column_stack([np.concatenate([outline, inner]), np.full(2 * n, rim_z)])
    rim_f = np.concatenate([np.stack([k, (k + 1) % n, n + (k + 1) % n], 1), np.stack([k, n + (k + 1) % n, n + k], 1)])
    acc.add(rim_v, rim_f, grid.texel_of(rim_v[:, 0], rim_v[:, 1]), "topdown", "roof_detail", b.index)
    # Inner parapet walls face the roof well: walk the inset ring backwards so they face inward.
    _walls(acc, b, inner[::-1], b.eave_z, rim_z, texel_m)
    _cap(acc, b, inner, b.eave_z, grid, facing_up=True, part="roof")


def _pitched_corners(b):
    """Footprint corners reordered so that edge 0 (c0 -> c1) is a long side (an eave)."""
    c = b.footprint_n2
    if np.linalg.norm(c[1] - c[0]) < np.linalg.norm(c[2] - c[1]):
        c = np.roll(c, -1, axis=0)
    return c


def _add_pitched(acc, b, grid, texel_m: float) -> None:
    """Gable or hip roof on a rectangle: walls to the eave, two slopes, two gable ends or hip triangles."""
    c = _pitched_corners(b)
    _cap(acc, b, c, b.base_z, grid, facing_up=False, part="wall")
    _walls(acc, b, c, b.base_z, b.eave_z, texel_m)
    centre = c.mean(axis=0)
    along = (c[1] - c[0]) / np.linalg.norm(c[1] - c[0])
    half_long, half_short = np.linalg.norm(c[1] - c[0]) / 2, np.linalg.norm(c[2] - c[1]) / 2
    ridge_half = half_long - half_short if b.roof_kind == "hip" else half_long
    r0 = np.append(centre - along * ridge_half, b.roof_top_z)   # ridge end over edge c3 -> c0
    r1 = np.append(centre + along * ridge_half, b.roof_top_z)   # ridge end over edge c1 -> c2
    e = np.column_stack([c, np.full(4, b.eave_z)])
    slopes = np.array([e[0], e[1], r1, r0, e[2], e[3], r0, r1])
    acc.add(slopes, np.concatenate([_QUAD, _QUAD + 4]), grid.texel_of(slopes[:, 0], slopes[:, 1]),
            "topdown", "roof", b.index)
    ends = np.array([e[1], e[2], r1, e[3], e[0], r0])
    if b.roof_kind == "hip":
        acc.add(ends, [[0, 1, 2], [3, 4, 5]], grid.texel_of(ends[:, 0], ends[:, 1]), "topdown", "roof", b.index)
        return
    # Gable ends are wall: texture them from the facade sheet (s along the end wall, z up to the ridge).
    s = np.array([0.0, 2 * half_short, half_short] * 2)
    uv = np.stack([s / texel_m, (b.top_z - ends[:, 2]) / texel_m], axis=1)
    acc.add(ends, [[0, 1, 2], [3, 4, 5]], uv, facade_region(b), "wall", b.index)


def facade_sheet_size_m(b) -> tuple[float, float]:
    """(width, height) the building's facade sheet must cover: its longest wall, base to top."""
    edges = np.linalg.norm(np.roll(b.footprint_n2, -1, axis=0) - b.footprint_n2, axis=1)
    return float(edges.max()), float(b.top_z - b.base_z)
