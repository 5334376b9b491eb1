"""Buildings of the synthetic city: lots in blocks, footprints, heights, roof kinds, and their closed meshes.

Height classes follow the brief (and look like MatrixCity's downtown): low-rise 4-12 m, mid-rise 15-40 m and a
few towers 50-120 m, towers preferring large, central lots. Footprints are rectangles, L and U shapes; pitched
(gable or hip) roofs sit on low-rise rectangles, every other roof is flat with a parapet and rooftop units.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from earthsynth.world.facades import FacadeStyle, sample_facade_style
from earthsynth.world.landcover import GRASS, PARKING, PLAZA, StreetLayout
from earthsynth.world.primitives import points_in_polygon

HEIGHT_RANGES_M = {"low": (4.0, 9.0), "mid": (15.0, 40.0), "tower": (50.0, 120.0)}
FOUNDATION_DEPTH_M = 0.3   # solids start this far below the lowest ground point under them (no gaps)


@dataclass(frozen=True)
class BuildingRecord:
    """One building, in ENU metres. The LoD and full meshes are both built from these records."""

    index: int
    footprint_n2: np.ndarray        # counter-clockwise outline
    base_z: float                   # bottom of the solid, just below the lowest ground point under it
    ground_z: float                 # ground height at the footprint centre
    height_m: float                 # wall height above ground_z (flat roof surface or eave)
    roof_kind: str                  # "flat", "gable" or "hip"
    roof_top_z: float               # highest roof-surface point (ridge / flat roof), no parapet or units
    category: str                   # "low", "mid" or "tower"
    shape: str                      # "rect", "L" or "U"
    center_xy: tuple[float, float]  # frame of the bounding rectangle: centre,
    axis_rad: float                 # direction of its long side (the ridge direction for pitched roofs),
    size_m: tuple[float, float]     # (long, short) side lengths
    style: FacadeStyle
    parapet_m: float = 0.0          # parapet height above a flat roof
    parapet_thickness_m: float = 0.35
    roof_units: tuple = field(default_factory=tuple)   # ((cx, cy, cz), (sx, sy, sz), yaw) boxes on the roof

    @property
    def eave_z(self) -> float:
        return self.ground_z + self.height_m

    @property
    def top_z(self) -> float:
        """Highest point of the building solid (parapet included, rooftop units excluded)."""
        return max(self.roof_top_z, self.eave_z + self.parapet_m)


@dataclass(frozen=True)
class Lot:
    rect_uv: tuple[float, float, float, float]
    ground_class: int
    holds_building: bool
    centrality: float


def _split_lots(rect, rng: np.random.Generator, max_side: float) -> list:
    """Guillotine subdivision of a block interior into lots no longer than `max_side`."""
    u0, v0, u1, v1 = rect
    du, dv = u1 - u0, v1 - v0
    if max(du, dv) <= max_side:
        return [rect]
    t = rng.uniform(0.38, 0.62)
    if du >= dv:
        cut = u0 + du * t
        return _split_lots((u0, v0, cut, v1), rng, max_side) + _split_lots((cut, v0, u1, v1), rng, max_side)
    cut = v0 + dv * t
    return _split_lots((u0, v0, u1, cut), rng, max_side) + _split_lots((u0, cut, u1, v1), rng, max_side)


def plan_lots(layout: StreetLayout, bounds_xy, rng: np.random.Generator) -> list[Lot]:
    """Lots of every building block; a lot holds a building only if it lies inside the world."""
    lots = []
    half = max(bounds_xy[2] - bounds_xy[0], bounds_xy[3] - bounds_xy[1]) / 2
    lo, hi = np.asarray(bounds_xy[:2]) + 1.0, np.asarray(bounds_xy[2:]) - 1.0
    for block in layout.blocks:
        if block.use != "buildings":
            continue
        u0, v0, u1, v1 = block.rect_uv
        sw = layout.sidewalk_m
        interior = (u0 + sw, v0 + sw, u1 - sw, v1 - sw)
        for rect in _split_lots(interior, rng, max_side=rng.uniform(22.0, 38.0)):
            corners = layout.rect_polygon(rect)
            inside = bool(np.all((corners >= lo) & (corners <= hi)))
            empty = rng.uniform() < 0.06
            ground = [GRASS, PLAZA, PARKING][int(rng.choice(3, p=[0.5, 0.35, 0.15]))] if empty else \
                [GRASS, PLAZA][int(rng.uniform() < 0.45)]
            centrality = float(1.0 - np.clip(np.hypot(*corners.mean(0)) / half, 0.0, 1.0))
            lots.append(Lot(rect, ground, inside and not empty, centrality))
    return lots


def _unit_shape(shape: str, rng: np.random.Generator) -> np.ndarray:
    """Outline in the unit square (CCW), randomly turned by a multiple of 90 degrees."""
    if shape == "L":
        a, b = rng.uniform(0.4, 0.65, size=2)
        poly = np.array([[0, 0], [1, 0], [1, b], [a, b], [a, 1], [0, 1]])
    elif shape == "U":
        arm, depth = rng.uniform(0.26, 0.36), rng.uniform(0.4, 0.6)
        poly = np.array([[0, 0], [1, 0], [1, 1], [1 - arm, 1], [1 - arm, 1 - depth], [arm, 1 - depth],
                         [arm, 1], [0, 1]])
    else:
        poly = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    for _ in range(int(rng.integers(4))):
        poly = np.stack([1 - poly[:, 1], poly[:, 0]], axis=1)   # rotate 90 degrees about the square centre
    return poly.astype(np.float64)


def _choose_categories(lots: list[Lot], rng, tower_fraction: float, min_towers: int,
                       midrise_fraction: float) -> list[str]:
    """Towers on the biggest central lots, mid-rise more likely near the centre, low-rise elsewhere."""
    building_lots = [k for k, lot in enumerate(lots) if lot.holds_building]
    categories = {k: ("mid" if rng.uniform() < midrise_fraction * (0.5 + lots[k].centrality) else "low")
                  for k in building_lots}
    eligible = [k for k in building_lots
                if min(lots[k].rect_uv[2] - lots[k].rect_uv[0], lots[k].rect_uv[3] - lots[k].rect_uv[1]) >= 20.0]
    n_towers = min(len(eligible), max(min_towers, int(round(tower_fraction * len(building_lots)))))
    scores = np.array([lots[k].centrality + 0.6 * rng.uniform() for k in eligible])
    for k in np.asarray(eligible)[np.argsort(-scores)[:n_towers]]:
        categories[int(k)] = "tower"
    return [categories.get(k, "") for k in range(len(lots))]


def plan_buildings(lots: list[Lot], layout: StreetLayout, terrain, rng: np.random.Generator, *,
                   tower_fraction: float, min_towers: int, midrise_fraction: float) -> list[BuildingRecord]:
    categories = _choose_categories(lots, rng, tower_fraction, min_towers, midrise_fraction)
    buildings = []
    for lot, category in zip(lots, categories):
        if not category:
            continue
        record = _plan_one(lot, category, layout, rng, index=len(buildings))
        if record is not None:
            buildings.append(record)
    return _place_on_ground(buildings, terrain)


def _place_on_ground(buildings: list[BuildingRecord], terrain) -> list[BuildingRecord]:
    """Lift buildings planned at z = 0 onto the terrain (one batched height query for all of them)."""
    if not buildings:
        return buildings
    probes = [np.concatenate([b.footprint_n2, [b.center_xy]]) for b in buildings]
    z = terrain.height(np.concatenate(probes)[:, 0], np.concatenate(probes)[:, 1])
    placed, start = [], 0
    for b, probe in zip(buildings, probes):
        heights = z[start:start + len(probe)]
        start += len(probe)
        ground = float(heights[-1])              # the centre
        units = tuple(((c[0], c[1], c[2] + ground), size, yaw) for c, size, yaw in b.roof_units)
        placed.append(replace(b, ground_z=ground, base_z=float(heights.min()) - FOUNDATION_DEPTH_M,
                              roof_top_z=b.roof_top_z + ground, roof_units=units))
    return placed


def _plan_one(lot: Lot, category: str, layout: StreetLayout, rng, index: int):
    """A building standing on z = 0 (`_place_on_ground` lifts it onto the terrain)."""
    u0, v0, u1, v1 = lot.rect_uv
    setback = rng.uniform(0.6, 2.2, size=4)
    a0, b0, a1, b1 = u0 + setback[0], v0 + setback[1], u1 - setback[2], v1 - setback[3]
    du, dv = a1 - a0, b1 - b0
    if min(du, dv) < 6.0:
        return None
    roll = rng.uniform()
    if min(du, dv) < 12.0 or roll < 0.55:
        shape = "rect"
    else:
        shape = "L" if (roll < 0.82 or min(du, dv) < 16.0 or category == "tower") else "U"
    pitched = category == "low" and shape == "rect" and rng.uniform() < 0.6
    unit = _unit_shape(shape, rng)
    x, y = layout.to_enu(a0 + unit[:, 0] * du, b0 + unit[:, 1] * dv)
    footprint = np.stack([x, y], axis=1)

    center = layout.to_enu((a0 + a1) / 2, (b0 + b1) / 2)
    axis = layout.angle_rad + (0.0 if du >= dv else np.pi / 2)
    size = (max(du, dv), min(du, dv))
    height = float(rng.uniform(*HEIGHT_RANGES_M[category]))
    roof_kind, roof_top = "flat", height
    if pitched:
        roof_kind = "hip" if (rng.uniform() < 0.5 and size[0] > 1.2 * size[1]) else "gable"
        roof_top += size[1] / 2 * np.tan(np.radians(rng.uniform(25.0, 38.0)))
    style = sample_facade_style(rng, category, pitched)
    parapet = 0.0 if pitched else (1.5 if category == "tower" else float(rng.uniform(0.6, 1.1)))
    record = BuildingRecord(
        index=index, footprint_n2=footprint, base_z=-FOUNDATION_DEPTH_M, ground_z=0.0, height_m=height,
        roof_kind=roof_kind, roof_top_z=float(roof_top), category=category, shape=shape,
        center_xy=(float(center[0]), float(center[1])), axis_rad=float(axis), size_m=size, style=style,
        parapet_m=parapet,
    )
    if roof_kind == "flat":
        record = _with_roof_units(record, rng)
    return record


def _with_roof_units(b: BuildingRecord, rng) -> BuildingRecord:
    """Rooftop AC units (and a machine room on towers), kept clear of the parapet and inside the outline."""
    wanted = {"low": int(rng.integers(0, 3)), "mid": int(rng.integers(2, 7)), "tower": int(rng.integers(3, 8))}
    ca, sa = np.cos(b.axis_rad), np.sin(b.axis_rad)
    candidates = []
    if b.category == "tower":
        candidates.append((0.0, 0.0, (b.size_m[0] * 0.35, b.size_m[1] * 0.4, 3.5)))
    for _ in range(wanted[b.category] * 3):
        candidates.append((rng.uniform(-0.5, 0.5) * (b.size_m[0] - 4.0), rng.uniform(-0.5, 0.5) * (b.size_m[1] - 4.0),
                           (rng.uniform(1.2, 3.0), rng.uniform(1.0, 2.0), rng.uniform(0.8, 1.6))))
    units = []
    for a, c, size in candidates:        # rejection sampling: inside the parapet, not touching another unit
        if len(units) >= wanted[b.category] + (b.category == "tower"):
            break
        cx, cy = b.center_xy[0] + a * ca - c * sa, b.center_xy[1] + a * sa + c * ca
        reach = np.hypot(*size[:2]) / 2
        corner = reach + b.parapet_thickness_m + 0.3
        probe = np.array([[cx + dx, cy + dy] for dx in (-corner, corner) for dy in (-corner, corner)])
        if not points_in_polygon(probe[:, 0], probe[:, 1], b.footprint_n2).all():
            continue
        if any(np.hypot(cx - u[0][0], cy - u[0][1]) < reach + np.hypot(*u[1][:2]) / 2 + 0.3 for u in units):
            continue
        units.append(((cx, cy, b.eave_z + size[2] / 2 - 0.05), size, b.axis_rad))
    return replace(b, roof_units=tuple(units))
