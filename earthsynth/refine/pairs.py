"""Training pairs for the refiners: the same low-altitude oblique view rendered from the synthetic world's reduced
level of detail (what a reconstruction looks like up close: blurred top-down texture, no facade detail, no cars)
and from its full detail (what the refiner should make of it).

Orbit to Ground trains its restorer on such pairs from 400-600 m altitude, 45-60 degree pitch views of
kilometre-scale cities; the world here is a few hundred metres across, so the altitude range is scaled to it.
Skyfall-GS's FlowEdit model is trained on the same pairs (degraded = the quality label "low").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earthsynth.errors import ConfigError
from earthsynth.geo.pinhole import Camera
from earthsynth.render.shading import shade_view, sun_direction

SKY_RGB = (0.62, 0.72, 0.86)   # the truth views' background (world/uav.py)


@dataclass(frozen=True)
class PairConfig:
    altitude_m: tuple[float, float] = (60.0, 180.0)   # Orbit to Ground: 400-600 m, scaled to a 300 m world
    pitch_deg: tuple[float, float] = (45.0, 60.0)     # Orbit to Ground: 45-60 degrees
    size_px: int = 128
    fov_x_deg: float = 60.0
    supersample: int = 2
    sun_elevation_deg: tuple[float, float] = (40.0, 70.0)
    centre_frac: float = 0.6        # look-at points drawn in this central share of the scene

    def __post_init__(self):
        lo, hi = self.altitude_m
        if not 0 < lo <= hi:
            raise ConfigError(f"altitude_m must be (low, high) with 0 < low <= high, got {self.altitude_m}")
        if not 0 < self.pitch_deg[0] <= self.pitch_deg[1] <= 90:
            raise ConfigError(f"pitch_deg must be (low, high) within (0, 90], got {self.pitch_deg}")
        if self.size_px < 8 or self.supersample < 1:
            raise ConfigError("size_px must be >= 8 and supersample >= 1")
        if not 0 < self.centre_frac <= 1:
            raise ConfigError(f"centre_frac must be in (0, 1], got {self.centre_frac}")


@dataclass(frozen=True)
class PairView:
    camera: Camera
    sun_dir_3: np.ndarray


def pair_views(world, count: int, config: PairConfig = PairConfig(), *, seed: int = 0) -> list[PairView]:
    """`count` random low-altitude oblique views over `world` (a world.build.World); same seed -> same views."""
    rng = np.random.default_rng([int(seed), 7041])
    x0, y0, x1, y1 = world.bounds_xy
    half_x, half_y = (x1 - x0) / 2 * config.centre_frac, (y1 - y0) / 2 * config.centre_frac
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    views = []
    for _ in range(int(count)):
        tx, ty = cx + rng.uniform(-half_x, half_x), cy + rng.uniform(-half_y, half_y)
        target = np.array([tx, ty, float(world.ground_height(np.array([tx]), np.array([ty]))[0])])
        pitch = rng.uniform(*config.pitch_deg)
        altitude = rng.uniform(*config.altitude_m)
        camera = Camera.orbit(target, elevation_deg=pitch, azimuth_deg=rng.uniform(0.0, 360.0),
                              radius=altitude / np.sin(np.radians(pitch)), width=config.size_px,
                              height=config.size_px, fov_x_deg=config.fov_x_deg)
        sun = sun_direction(rng.uniform(*config.sun_elevation_deg), rng.uniform(0.0, 360.0))
        views.append(PairView(camera, sun))
    return views


def render_view(mesh, view: PairView, config: PairConfig = PairConfig()) -> np.ndarray:
    """uint8 (H, W, 3) shaded render of `mesh` from `view` over the sky background."""
    shaded = shade_view(mesh, view.camera, view.sun_dir_3, supersample=config.supersample, background=SKY_RGB)
    return np.round(shaded.rgb_hw3.numpy() * 255.0).clip(0, 255).astype(np.uint8)


def render_pairs(world, views: list[PairView], config: PairConfig = PairConfig()
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(degraded_bhw3, clean_bhw3) uint8: each view rendered from `world.mesh_lod` and from `world.mesh_full`."""
    degraded = [render_view(world.mesh_lod, v, config) for v in views]
    clean = [render_view(world.mesh_full, v, config) for v in views]
    shape = (0, config.size_px, config.size_px, 3)
    return (np.stack(degraded) if degraded else np.zeros(shape, np.uint8),
            np.stack(clean) if clean else np.zeros(shape, np.uint8))
