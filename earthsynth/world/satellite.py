"""Synthetic satellite views of a world: off-nadir pinhole cameras far above the scene, multi-date
appearance, transient cars, and RPCs fitted to the exact camera so the real-RPC path runs end to end."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earthsynth.geo.pinhole import Camera, look_at_viewmat, orbit_eye
from earthsynth.geo.rpc_fit import fit_rpc_to_projection

SATELLITE_ALTITUDE_M = 600_000.0   # a typical sun-synchronous very-high-resolution orbit


@dataclass(frozen=True)
class ViewSpec:
    """One acquisition: geometry and date (sun and appearance are drawn from the view's own seed)."""
    name: str
    off_nadir_deg: float
    azimuth_deg: float          # direction from the scene to the satellite, clockwise from north
    sun_elevation_deg: float
    sun_azimuth_deg: float
    seed: int


def satellite_camera(look_at, off_nadir_deg: float, azimuth_deg: float, gsd_m: float, size_px: int) -> Camera:
    """A pinhole camera at orbital altitude, `off_nadir_deg` from the vertical, looking at `look_at`.

    The focal length gives `gsd_m` metres per pixel at the look-at point (perpendicular to the ray)."""
    # off-nadir angle at the satellite ~ incidence at the ground for a 600 km orbit over a few hundred metres
    elevation = 90.0 - off_nadir_deg
    slant = SATELLITE_ALTITUDE_M / np.sin(np.radians(elevation))
    eye = orbit_eye(look_at, elevation, azimuth_deg, slant)
    f = slant / gsd_m
    c = (size_px - 1) / 2.0
    K = np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])
    # north-up image rows, like a satellite product (a horizon-up camera would rotate the footprint)
    return Camera(K, look_at_viewmat(eye, look_at, up=(0.0, 1.0, 0.0)), size_px, size_px)


def plan_views(num_views: int, rng: np.random.Generator) -> list[ViewSpec]:
    """Several passes: off-nadir 5..30 degrees, azimuths spread round the compass, different dates."""
    base = rng.uniform(0, 360)
    specs = []
    for i in range(num_views):
        azimuth = (base + i * 360.0 / num_views + rng.uniform(-15, 15)) % 360
        specs.append(ViewSpec(
            name=f"view_{i:02d}", off_nadir_deg=float(rng.uniform(5, 30)), azimuth_deg=float(azimuth),
            sun_elevation_deg=float(rng.uniform(35, 70)), sun_azimuth_deg=float(rng.uniform(110, 250)),
            seed=int(rng.integers(0, 2**31 - 1))))
    return specs


def fit_view_rpc(camera: Camera, frame, bounds_xy, height_range, margin_m: float = 20.0):
    """RPC fitted to the exact camera over the scene's box (+ margin) and height range (+ margin)."""
    xmin, ymin, xmax, ymax = bounds_xy
    corners = np.array([[x, y, 0.0] for x in (xmin - margin_m, xmax + margin_m)
                        for y in (ymin - margin_m, ymax + margin_m)])
    lon, lat, _ = frame.to_geodetic(corners)
    alt_lo = frame.alt0 + height_range[0] - margin_m
    alt_hi = frame.alt0 + height_range[1] + margin_m

    def project(lon_, lat_, alt_):
        uv, _ = camera.project(frame.to_enu(lon_, lat_, alt_))
        return uv[..., 0], uv[..., 1]

    return fit_rpc_to_projection(project, (lon.min(), lon.max()), (lat.min(), lat.max()), (alt_lo, alt_hi))
