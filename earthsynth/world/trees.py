"""Trees: where they grow (parks, courtyards, street rows) and their closed meshes.

Full detail: a trunk box and an icosphere crown (broadleaf) or an octagonal cone (conifer), the crown textured
top-down from a leafy foliage patch. Reduced level of detail: the trunk and a box around the crown, flat-
coloured (the LoD atlas replaces foliage patches with their mean colour).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from earthsynth.world.landcover import GRASS, PLAZA, SIDEWALK, TREES, GroundGrid, StreetLayout, paint_disc
from earthsynth.world.noise import fbm_points
from earthsynth.world.primitives import MeshAccumulator, box_solid, cone_solid, ellipsoid_solid

FOLIAGE_VARIANTS = 6          # foliage patches in the atlas; the last one is the dark conifer green
FOLIAGE_PATCH_PX = 32
_FOLIAGE_RGB = [(74, 110, 48), (92, 124, 52), (62, 98, 50), (104, 128, 62), (80, 104, 40), (44, 72, 46)]


@dataclass(frozen=True)
class Tree:
    x: float
    y: float
    ground_z: float
    conifer: bool
    crown_radius_m: float
    crown_height_m: float     # vertical extent of the crown
    trunk_height_m: float     # crown bottom above the ground
    foliage: int              # index of the foliage patch


def foliage_region(k: int) -> str:
    return f"foliage/{k}"


def foliage_colours() -> list[tuple[int, int, int]]:
    return list(_FOLIAGE_RGB)


def _candidate_points(layout: StreetLayout, rng, seed: int):
    """Jittered candidate positions: dense clumps in parks, sparse in courtyards, rows along sidewalks."""
    pts, street = [], []
    for block in layout.blocks:
        u0, v0, u1, v1 = block.rect_uv
        if block.use in ("park", "buildings", "plaza"):
            spacing = {"park": 6.0, "buildings": 9.0, "plaza": 11.0}[block.use]
            gu, gv = np.meshgrid(np.arange(u0 + 3, u1 - 3, spacing), np.arange(v0 + 3, v1 - 3, spacing))
            gu = gu.ravel() + rng.uniform(-0.4, 0.4, gu.size) * spacing
            gv = gv.ravel() + rng.uniform(-0.4, 0.4, gv.size) * spacing
            x, y = layout.to_enu(gu, gv)
            # Trees grow in clumps: keep a candidate where a low-frequency noise field is high enough.
            keep = fbm_points(x, y, wavelength_m=40.0, seed=seed, octaves=3) > {
                "park": -0.12, "buildings": 0.12, "plaza": 0.2}[block.use]
            pts.append(np.stack([x[keep], y[keep]], 1))
        if block.use in ("buildings", "park") and rng.uniform() < 0.6:
            # A street-tree row on the sidewalk along each long side of the block, every ~9 m.
            s = np.arange(u0 + 5, u1 - 5, 9.0)
            for v in (v0 + layout.sidewalk_m / 2, v1 - layout.sidewalk_m / 2):
                x, y = layout.to_enu(s, np.full_like(s, v))
                street.append(np.stack([x, y], 1))
    return (np.concatenate(pts) if pts else np.zeros((0, 2)),
            np.concatenate(street) if street else np.zeros((0, 2)))


def plan_trees(layout: StreetLayout, classes_hw: np.ndarray, grid: GroundGrid, terrain, rng, *,
               seed: int, density: float = 1.0) -> list[Tree]:
    """Trees on free ground: a crown-sized disc of grass / plaza (or sidewalk for street trees) under each."""
    free_pts, street_pts = _candidate_points(layout, rng, seed)
    trees = []
    for pts, allowed, radius_range in ((free_pts, (GRASS, PLAZA), (1.8, 3.6)), (street_pts, (SIDEWALK,), (1.4, 2.2))):
        keep = rng.uniform(size=len(pts)) < density
        for (x, y), k in zip(pts, keep):
            if not k:
                continue
            radius = float(rng.uniform(*radius_range))
            if not _clear(classes_hw, grid, x, y, radius if allowed[0] != SIDEWALK else 0.6, allowed):
                continue
            conifer = bool(allowed[0] != SIDEWALK and rng.uniform() < 0.25)
            trees.append(Tree(
                x=float(x), y=float(y), ground_z=0.0, conifer=conifer,
                crown_radius_m=radius * (0.8 if conifer else 1.0),
                crown_height_m=radius * (3.0 if conifer else rng.uniform(1.5, 1.9)),
                trunk_height_m=float(rng.uniform(1.2, 2.2) if conifer else rng.uniform(2.0, 3.5)),
                foliage=FOLIAGE_VARIANTS - 1 if conifer else int(rng.integers(FOLIAGE_VARIANTS - 1)),
            ))
    if not trees:
        return trees
    ground_z = terrain.height(np.array([t.x for t in trees]), np.array([t.y for t in trees]))   # one batch
    return [replace(t, ground_z=float(z)) for t, z in zip(trees, ground_z)]


def _clear(classes_hw, grid: GroundGrid, x, y, radius, allowed) -> bool:
    """All probe texels around (x, y) within `radius` are of an allowed class (no road, water, building)."""
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    px = np.concatenate([[x], x + radius * np.cos(angles)])
    py = np.concatenate([[y], y + radius * np.sin(angles)])
    col_row = np.floor(grid.texel_of(px, py)).astype(int)
    h, w = classes_hw.shape
    if np.any((col_row < 0) | (col_row >= [w, h])):
        return False
    return bool(np.isin(classes_hw[col_row[:, 1], col_row[:, 0]], allowed).all())


def mark_tree_ground(classes_hw, grid: GroundGrid, trees: list[Tree]) -> None:
    """Grass under a crown becomes shaded wooded ground (TREES class) in the land-cover map."""
    for t in trees:
        paint_disc(classes_hw, grid, (t.x, t.y), t.crown_radius_m * 0.9, TREES, where=lambda w: w == GRASS)


def _crown_uv(v_n3, t: Tree) -> np.ndarray:
    """Planar top-down mapping of the crown onto its foliage patch (no seam, what a satellite sees)."""
    p = FOLIAGE_PATCH_PX
    u = ((v_n3[:, 0] - t.x) / (2 * t.crown_radius_m) + 0.5) * (p - 1) + 0.5
    v = ((t.y - v_n3[:, 1]) / (2 * t.crown_radius_m) + 0.5) * (p - 1) + 0.5
    return np.clip(np.stack([u, v], 1), 0.5, p - 0.5)


def add_trees(acc: MeshAccumulator, trees: list[Tree], palette, *, detail: bool) -> None:
    for t in trees:
        trunk_w = 0.35 if detail else 0.5
        crown_bottom = t.ground_z + t.trunk_height_m
        # The trunk starts 0.3 m below ground (no gap on slopes) and ends inside the crown.
        tv, tf = box_solid((t.x, t.y, (t.ground_z - 0.3 + crown_bottom + 0.5) / 2), (trunk_w, trunk_w,
                           crown_bottom + 0.5 - (t.ground_z - 0.3)))
        acc.add(tv, tf, palette.uv_texel("trunk"), "palette", "trunk")
        r, h = t.crown_radius_m, t.crown_height_m
        if not detail:
            cv, cf = box_solid((t.x, t.y, crown_bottom + h / 2), (2 * r, 2 * r, h))
        elif t.conifer:
            cv, cf = cone_solid((t.x, t.y, crown_bottom), r, h, sides=8)
        else:
            cv, cf = ellipsoid_solid((t.x, t.y, crown_bottom + h / 2), (r, r, h / 2))
        acc.add(cv, cf, _crown_uv(cv, t), foliage_region(t.foliage), "crown")
