"""Simulated UAV paths over a reconstructed mesh: the close-range views of Orbit to Ground's iterative texture
refinement (a grid over the mesh's bounding box, one fixed altitude, 45 degree pitch, four headings)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earthsynth.errors import ConfigError
from earthsynth.geo.pinhole import Camera


@dataclass(frozen=True)
class UAVPathConfig:
    grid: tuple[int, int] = (3, 3)                 # waypoints along (x, y) over the central part of the box
    altitude_m: float = 100.0                      # above the mesh's lowest point; Orbit to Ground flies 400-600 m
                                                   # over km-scale cities, scaled here to a few-hundred-metre scene
    pitch_deg: float = 45.0                        # Orbit to Ground: 45 degrees
    headings_deg: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)   # Orbit to Ground: four headings
    margin_frac: float = 0.2                       # waypoints stay this share of the box away from its edges
    size_px: int = 256
    fov_x_deg: float = 60.0

    def __post_init__(self):
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ConfigError(f"grid must be two counts >= 1, got {self.grid}")
        if not self.altitude_m > 0 or not 0 < self.pitch_deg <= 90:
            raise ConfigError("altitude_m must be positive and pitch_deg in (0, 90]")
        if not self.headings_deg:
            raise ConfigError("headings_deg needs at least one heading")
        if not 0 <= self.margin_frac < 0.5 or self.size_px < 8:
            raise ConfigError("margin_frac must be in [0, 0.5) and size_px >= 8")


def uav_cameras(bounds_xy, ground_z: float, config: UAVPathConfig = UAVPathConfig()) -> dict[str, Camera]:
    """Named cameras `uav_r{row}_c{col}_h{heading}` flying at ground_z + altitude over a grid in `bounds_xy`
    (xmin, ymin, xmax, ymax ENU metres), each looking down `pitch_deg` along its heading (0 = north,
    90 = east)."""
    x0, y0, x1, y1 = (float(b) for b in bounds_xy)
    if not (x1 > x0 and y1 > y0):
        raise ConfigError(f"bounds_xy must be (xmin, ymin, xmax, ymax) with max > min, got {bounds_xy}")
    nx, ny = config.grid
    mx, my = (x1 - x0) * config.margin_frac, (y1 - y0) * config.margin_frac
    xs = np.linspace(x0 + mx, x1 - mx, nx) if nx > 1 else np.array([(x0 + x1) / 2])
    ys = np.linspace(y1 - my, y0 + my, ny) if ny > 1 else np.array([(y0 + y1) / 2])
    cameras = {}
    for r, y in enumerate(ys):
        for c, x in enumerate(xs):
            for heading in config.headings_deg:
                cameras[f"uav_r{r}_c{c}_h{int(round(heading)):03d}"] = uav_camera(
                    (x, y), ground_z, altitude_m=config.altitude_m, pitch_deg=config.pitch_deg, heading_deg=heading,
                    size_px=config.size_px, fov_x_deg=config.fov_x_deg)
    return cameras


def uav_camera(eye_xy, ground_z: float, *, altitude_m: float, pitch_deg: float, heading_deg: float, size_px: int,
               fov_x_deg: float) -> Camera:
    """A square camera at (x, y, ground_z + altitude_m) looking down `pitch_deg` along `heading_deg` (0 = north,
    90 = east); straight down (90 degrees), the image's up is the heading."""
    x, y = (float(v) for v in eye_xy)
    reach = altitude_m / np.tan(np.radians(pitch_deg))   # ground distance to the look-at point
    h = np.radians(heading_deg)
    forward = np.array([np.sin(h), np.cos(h), 0.0])
    eye = np.array([x, y, ground_z + altitude_m])
    target = np.array([x, y, ground_z]) + forward * (reach if reach > 1e-9 else 0.0)
    up = forward if reach <= 1e-9 else (0.0, 0.0, 1.0)
    return Camera.look_at(eye, target, width=size_px, height=size_px, fov_x_deg=fov_x_deg, up=up)


def flight_ground_z(scene, mesh) -> float:
    """The height (ENU metres) UAV altitudes are measured from: the scene's lowest height, or the mesh's lowest
    point when that is higher (a mesh cropped to a hill)."""
    ground_z = float(scene.height_range[0]) - float(scene.origin.get("alt", 0.0))
    return max(ground_z, float(mesh.vertices_n3[:, 2].min()))
