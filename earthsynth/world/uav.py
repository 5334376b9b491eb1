"""Low-altitude test cameras (the papers' Google Earth Studio / MatrixCity-Aerial style truth views) and the
fixed lighting they are rendered with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from earthsynth.geo.pinhole import Camera
from earthsynth.render.shading import shade_view, sun_direction

TRUTH_SUN = (55.0, 160.0)   # elevation, azimuth (deg): one clear date for every truth view


@dataclass(frozen=True)
class TestViewConfig:
    oblique_altitudes_m: tuple[float, ...] = (80.0, 160.0)   # 45-degree pitch views at these heights
    oblique_headings_deg: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
    ring_views: int = 8                                      # near-ground ring looking at the centre
    ring_elevation_deg: float = 12.0
    ring_radius_frac: float = 0.35                           # of the scene size
    fov_x_deg: float = 60.0
    size_px: int = 256


def test_cameras(size_m: float, ground_z: float, config: TestViewConfig = TestViewConfig()
                 ) -> dict[str, Camera]:
    """Named test cameras over a scene of side `size_m` centred on the ENU origin."""
    cams = {}
    centre = np.array([0.0, 0.0, ground_z])
    for alt in config.oblique_altitudes_m:
        radius = alt / np.sin(np.radians(45.0))
        for heading in config.oblique_headings_deg:
            cams[f"oblique_{int(alt):03d}m_{int(heading):03d}"] = Camera.orbit(
                centre, elevation_deg=45.0, azimuth_deg=heading, radius=radius,
                width=config.size_px, height=config.size_px, fov_x_deg=config.fov_x_deg)
    target = centre + np.array([0.0, 0.0, 15.0])
    for k in range(config.ring_views):
        cams[f"ring_{k:02d}"] = Camera.orbit(
            target, elevation_deg=config.ring_elevation_deg, azimuth_deg=360.0 * k / config.ring_views,
            radius=config.ring_radius_frac * size_m, width=config.size_px, height=config.size_px,
            fov_x_deg=config.fov_x_deg)
    return cams


def render_test_view(mesh, camera, *, supersample: int = 2) -> np.ndarray:
    """uint8 (H, W, 3) image of the mesh under the fixed truth sun, with a sky-coloured background."""
    shaded = shade_view(mesh, camera, sun_direction(*TRUTH_SUN), supersample=supersample,
                        background=(0.62, 0.72, 0.86))
    rgb: torch.Tensor = shaded.rgb_hw3
    return np.round(rgb.numpy() * 255.0).clip(0, 255).astype(np.uint8)
