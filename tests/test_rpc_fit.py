"""Fitting RPCs to 3D <-> 2D correspondences: exact pinhole cameras and real RPCs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from earthsynth.errors import ConfigError
from earthsynth.geo.frames import ENUFrame
from earthsynth.geo.pinhole import Camera, orbit_eye
from earthsynth.geo.rpc_fit import fit_rpc, fit_rpc_to_projection
from earthsynth.geo.rpc_readers import read_rpc

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"

FRAME = ENUFrame(lon0=2.35, lat0=48.85, alt0=40.0)
AREA_HALF_SIZE_M = 150.0  # a 300 m x 300 m scene ...
RELIEF_M = 100.0  # ... with 100 m of relief
DISTANCE_M = 600e3  # seen from 600 km
IMAGE_SIZE = 600  # 0.5 m GSD at nadir: fx = 600 km / 0.5 m


def satellite_camera(elevation_deg: float, azimuth_deg: float) -> Camera:
    focal_px = DISTANCE_M / (2 * AREA_HALF_SIZE_M / IMAGE_SIZE)
    K = [[focal_px, 0.0, (IMAGE_SIZE - 1) / 2], [0.0, focal_px, (IMAGE_SIZE - 1) / 2], [0.0, 0.0, 1.0]]
    eye = orbit_eye([0.0, 0.0, 0.0], elevation_deg, azimuth_deg, DISTANCE_M)
    return Camera.look_at(eye, [0.0, 0.0, 0.0], width=IMAGE_SIZE, height=IMAGE_SIZE, K=K)


def pinhole_projection(camera: Camera):
    def project(lon, lat, alt):
        uv, _ = camera.project(FRAME.to_enu(lon, lat, alt))
        return uv[..., 0], uv[..., 1]
    return project


def scene_box():
    half = AREA_HALF_SIZE_M
    lon, lat, _ = FRAME.to_geodetic([[-half, -half, 0.0], [half, half, 0.0]])
    return (lon[0], lon[1]), (lat[0], lat[1]), (FRAME.alt0, FRAME.alt0 + RELIEF_M)


@pytest.mark.parametrize("elevation_deg, azimuth_deg", [(90.0, 0.0), (65.0, 30.0), (45.0, 200.0)])
def test_fit_to_pinhole_600km_away_is_far_below_a_hundredth_of_a_pixel(elevation_deg, azimuth_deg):
    camera = satellite_camera(elevation_deg, azimuth_deg)
    project = pinhole_projection(camera)
    lon_range, lat_range, alt_range = scene_box()
    model, max_error_px = fit_rpc_to_projection(project, lon_range, lat_range, alt_range,
                                                width=IMAGE_SIZE, height=IMAGE_SIZE)
    assert max_error_px < 0.01  # goal; measured ~4e-9 px (the float64 floor of lon/lat in degrees)
    # Independent check on random points of the box, and through the inverse.
    rng = np.random.default_rng(0)
    lon = rng.uniform(*lon_range, 500)
    lat = rng.uniform(*lat_range, 500)
    alt = rng.uniform(*alt_range, 500)
    col_true, row_true = project(lon, lat, alt)
    col_fit, row_fit = model.projection(lon, lat, alt)
    assert np.max(np.hypot(col_fit - col_true, row_fit - row_true)) < 0.01
    lon_back, lat_back = model.localization(col_true, row_true, alt)
    enu_error = FRAME.to_enu(lon_back, lat_back, alt) - FRAME.to_enu(lon, lat, alt)
    assert np.max(np.abs(enu_error)) < 0.01 * 0.5  # metres: 0.01 px at 0.5 m GSD
    assert (model.width, model.height) == (IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.parametrize("elevation_deg, azimuth_deg", [(65.0, 30.0), (45.0, 200.0)])
def test_fitted_rpc_incidence_is_the_camera_direction(elevation_deg, azimuth_deg):
    model, _ = fit_rpc_to_projection(pinhole_projection(satellite_camera(elevation_deg, azimuth_deg)), *scene_box())
    zenith, azimuth = model.incidence(FRAME.lon0, FRAME.lat0, FRAME.alt0)
    assert zenith == pytest.approx(90.0 - elevation_deg, abs=0.01)
    assert azimuth == pytest.approx(azimuth_deg, abs=0.01)


@pytest.mark.skipif(not REAL.is_dir(), reason="real data folder not present")
@pytest.mark.parametrize("name", ["rpc_WV2.xml", "rpc_PLEIADES.xml"])
def test_refit_of_a_real_rpc_over_its_footprint(name):
    real = read_rpc(REAL / "rpcm_rpc_files" / name)
    footprint = real.footprint()
    model, max_error_px = fit_rpc_to_projection(
        real.projection, (footprint[:, 0].min(), footprint[:, 0].max()),
        (footprint[:, 1].min(), footprint[:, 1].max()), real.alt_range)
    assert max_error_px < 1e-4  # measured <= 9e-7 px over full 40000-px scenes


def test_fit_rpc_rejects_bad_inputs():
    with pytest.raises(ConfigError, match="at least"):
        fit_rpc(np.zeros(10), np.zeros(10), np.zeros(10), np.zeros(10), np.zeros(10))
    values = np.linspace(0.0, 1.0, 64)
    with pytest.raises(ConfigError, match="NaN"):
        fit_rpc(values, values, values, np.full(64, np.nan), values)
    with pytest.raises(ConfigError, match="same shape"):
        fit_rpc(values, values[:5], values, values, values)
    with pytest.raises(ConfigError, match="grid"):
        fit_rpc_to_projection(lambda lon, lat, alt: (lon, lat), (0, 1), (0, 1), (0, 1), grid=(3, 3, 1))
