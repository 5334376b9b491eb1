"""Transient objects: cars on the roads and in parking stalls, different for every satellite pass.

Cars are what makes two satellite dates of the same city differ (the papers' training views are captured
"with no traffic or moving objects" for the clean benchmark; real pairs are not). The mesh shares the world's
atlas (its colours live in the atlas palette), so it can be concatenated with `World.mesh_full` as is.
"""

from __future__ import annotations

import numpy as np

from earthsynth.errors import ConfigError
from earthsynth.io.mesh import TexturedMesh
from earthsynth.world.landcover import PARKING, ROAD
from earthsynth.world.primitives import MeshAccumulator, box_solid

CAR_PAINTS = [(236, 236, 232), (28, 28, 30), (170, 172, 176), (96, 98, 102), (164, 32, 30), (36, 62, 128),
              (22, 34, 60), (200, 186, 150)]
CAR_LENGTH_M, CAR_WIDTH_M = 4.5, 1.85


def _road_candidate(world, rng):
    """A car on a lane of a random road: (x, y, yaw) in ENU; right-hand traffic."""
    layout = world.layout
    along_u = rng.uniform() < 0.5          # roads at constant v run along u
    lines, widths = (layout.v_lines, layout.v_widths) if along_u else (layout.u_lines, layout.u_widths)
    k = int(rng.integers(len(lines)))
    side = 1.0 if rng.uniform() < 0.5 else -1.0
    lanes = 2 if widths[k] > 13.0 else 1
    offset = side * widths[k] / 2 * (rng.integers(lanes) + 0.5) / lanes
    t = rng.uniform(-world.config.size_m * 0.75, world.config.size_m * 0.75)
    u, v = (t, lines[k] + offset) if along_u else (lines[k] + offset, t)
    x, y = layout.to_enu(u, v)
    # Right-hand traffic: along u, the -v side drives +u; along v, the +u side drives +v.
    if along_u:
        heading = layout.angle_rad + (np.pi if side > 0 else 0.0)
    else:
        heading = layout.angle_rad + np.pi / 2 + (0.0 if side > 0 else np.pi)
    return float(x), float(y), float(heading), ROAD


def _parking_candidate(world, rng, parking_rc):
    """A car in a parking stall (stall rows as painted by the ground albedo: 16 m period, 2.6 m stalls)."""
    rows, cols = parking_rc
    if len(rows) == 0:
        return None
    k = int(rng.integers(len(rows)))
    x, y = world.grid.xs_w[cols[k]], world.grid.ys_h[rows[k]]
    u, v = world.layout.to_street(x, y)
    base = np.floor(u / 16.0) * 16.0
    u = base + (2.5 if np.mod(u, 16.0) < 8.0 else 13.5)
    v = (np.floor(v / 2.6) + 0.5) * 2.6
    x, y = world.layout.to_enu(u, v)
    return float(x), float(y), float(world.layout.angle_rad + (np.pi if rng.uniform() < 0.5 else 0.0)), PARKING


def _fits(world, x, y, yaw, allowed_class, placed) -> bool:
    c, s = np.cos(yaw), np.sin(yaw)
    half_l, half_w = CAR_LENGTH_M / 2, CAR_WIDTH_M / 2
    corners = np.array([[a, b] for a in (-half_l, half_l) for b in (-half_w, half_w)])
    px, py = x + corners[:, 0] * c - corners[:, 1] * s, y + corners[:, 0] * s + corners[:, 1] * c
    col_row = np.floor(world.grid.texel_of(px, py)).astype(int)
    h, w = world.landcover_hw.shape
    if np.any((col_row < 0) | (col_row >= [w, h])):
        return False
    if not np.all(world.landcover_hw[col_row[:, 1], col_row[:, 0]] == allowed_class):
        return False
    return all(np.hypot(x - qx, y - qy) > CAR_LENGTH_M + 0.6 for qx, qy in placed)


def sample_cars(world, rng: np.random.Generator, n: int) -> TexturedMesh:
    """`n` cars (body + cabin boxes) on roads and in parking lots, textured from the world atlas.

    Fewer than `n` come back only if the roads are full (the placement gives up after 60 tries per car).
    """
    if n < 0:
        raise ConfigError(f"number of cars must be >= 0, got {n}")
    acc, placed = MeshAccumulator(), []
    parking_rc = np.nonzero(world.landcover_hw == PARKING)
    for _ in range(60 * n):
        if len(placed) >= n:
            break
        if rng.uniform() < 0.3:
            candidate = _parking_candidate(world, rng, parking_rc)
        else:
            candidate = _road_candidate(world, rng)
        if candidate is None or not _fits(world, *candidate, placed):
            continue
        x, y, yaw, _ = candidate
        z = float(world.ground_height(x, y))
        paint = f"car/{int(rng.integers(len(CAR_PAINTS)))}"
        bv, bf = box_solid((x, y, z + 0.45), (CAR_LENGTH_M, CAR_WIDTH_M, 1.0), yaw)
        cab = np.array([np.cos(yaw), np.sin(yaw)]) * -0.3
        cv, cf = box_solid((x + cab[0], y + cab[1], z + 1.2), (2.4, 1.6, 0.6), yaw)
        acc.add(bv, bf, world.palette.uv_texel(paint), "palette", "car")
        acc.add(cv, cf, world.palette.uv_texel("car_glass"), "palette", "car")
        placed.append((x, y))
    if not placed:
        return TexturedMesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), np.zeros((0, 2), np.float32),
                            world.mesh_full.texture_hw3, metadata={"source": "earthsynth.world.cars"})
    mesh, _, _ = acc.to_mesh(world.region_origins, world.mesh_full.texture_hw3,
                             metadata={"source": "earthsynth.world.cars", "count": len(placed)})
    return mesh


def register_car_colours(palette) -> None:
    for k, rgb in enumerate(CAR_PAINTS):
        palette.add(f"car/{k}", rgb)
    palette.add("car_glass", (34, 40, 48))
