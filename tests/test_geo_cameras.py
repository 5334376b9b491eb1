"""Pinhole / orthographic cameras, ENU frames and the DLT pinhole fit, on closed-form cases."""

import numpy as np
from rasterio.transform import from_origin

from earthsynth.geo.approx import decompose_projection, dlt_projection, refine_projection
from earthsynth.geo.frames import ENUFrame
from earthsynth.geo.pinhole import Camera, OrthoCamera, camera_from_dict


def test_enu_round_trip_and_axes():
    frame = ENUFrame(55.712, -21.232, 2300.0)
    enu = frame.to_enu(55.712, -21.232, 2300.0)
    assert np.allclose(enu, 0, atol=1e-6)
    # 0.001 degree of latitude is ~110.6 m north at this latitude (WGS84 meridian arc)
    north = frame.to_enu(55.712, -21.231, 2300.0)
    assert abs(north[0]) < 1e-3 and 110.5 < north[1] < 110.8 and abs(north[2]) < 0.01
    east = frame.to_enu(55.713, -21.232, 2300.0)
    assert 103.5 < east[0] < 104.0 and abs(east[1]) < 1e-3  # 111.32 km * cos(21.232 deg) / 1000
    pts = np.random.default_rng(0).uniform(-500, 500, (100, 3))
    lon, lat, alt = frame.to_geodetic(pts)
    assert np.allclose(frame.to_enu(lon, lat, alt), pts, atol=1e-6)


def test_look_at_north_has_east_on_the_right():
    cam = Camera.look_at([0, -100, 0], [0, 0, 0], width=101, height=101, fov_x_deg=60)
    uv, depth = cam.project(np.array([[10.0, 0, 0], [0, 0, 10.0], [0, 0, 0]]))
    assert uv[0, 0] > 50 and abs(uv[0, 1] - 50) < 1e-9      # east -> right
    assert uv[1, 1] < 50                                      # up -> top of the image
    assert np.allclose(uv[2], [50, 50]) and np.isclose(depth[2], 100)


def test_nadir_look_at_keeps_north_up():
    cam = Camera.look_at([0, 0, 100], [0, 0, 0], width=11, height=11, fov_x_deg=60)
    uv, _ = cam.project(np.array([[0, 10.0, 0], [10.0, 0, 0]]))
    assert uv[0, 1] < 5 and uv[1, 0] > 5


def test_project_unproject_rays_round_trip():
    cam = Camera.orbit([5, 5, 0], elevation_deg=45, azimuth_deg=30, radius=200, width=64, height=48)
    assert np.allclose(np.linalg.norm(cam.center - [5, 5, 0]), 200)
    pts = np.random.default_rng(1).uniform(-20, 20, (50, 3))
    uv, depth = cam.project(pts)
    assert np.allclose(cam.unproject(uv, depth), pts, atol=1e-9)
    origins, dirs = cam.rays()
    hit = origins[10, 20] + dirs[10, 20] * 123.0
    uv_hit, _ = cam.project(hit[None])
    assert np.allclose(uv_hit[0], [20, 10], atol=1e-9)


def test_resized_keeps_pixel_centre_convention():
    cam = Camera.look_at([3, -50, 40], [0, 0, 0], width=40, height=30, fov_x_deg=50)
    big = cam.resized(160, 120)
    p = np.random.default_rng(2).uniform(-5, 5, (20, 3))
    uv, _ = cam.project(p)
    uv4, _ = big.project(p)
    assert np.allclose(uv4, 4 * (uv + 0.5) - 0.5)


def test_top_down_matches_geotiff_pixel_centres():
    cam = OrthoCamera.top_down(100.0, 200.0, 0.5, width=8, height=6)
    transform = from_origin(100.0, 200.0, 0.5, 0.5)
    for r, c in [(0, 0), (5, 7), (2, 3)]:
        x, y = transform @ (c + 0.5, r + 0.5)
        uv, depth = cam.project(np.array([[x, y, 12.0]]))
        assert np.allclose(uv[0], [c, r]) and np.isclose(depth[0], 10_000 - 12)
    assert np.allclose(cam.unproject(np.array([[7.0, 5.0]]), np.array([10_000 - 3.0])), [[103.75, 197.25, 3.0]])


def test_camera_dict_round_trip():
    for cam in (Camera.orbit([0, 0, 0], elevation_deg=60, azimuth_deg=10, radius=50, width=20, height=10),
                OrthoCamera.looking([1, 1, -1], [0, 0, 0], gsd=0.3, width=16, height=16)):
        back = camera_from_dict(cam.to_dict())
        p = np.array([[1.0, 2.0, 3.0]])
        assert np.allclose(back.project(p)[0], cam.project(p)[0])


def test_dlt_recovers_a_skewed_far_camera_exactly():
    K = np.array([[1.2e6, 35.0, 511.5], [0, 1.21e6, 480.0], [0, 0, 1]])
    base = Camera.orbit([0, 0, 0], elevation_deg=70, azimuth_deg=200, radius=6.3e5, width=1024, height=960)
    cam = Camera(K, base.viewmat, 1024, 960)
    rng = np.random.default_rng(3)
    world = rng.uniform([-200, -200, -100], [200, 200, 100], (500, 3))
    uv, _ = cam.project(world)
    P = refine_projection(dlt_projection(world, uv), world, uv)
    fitted = decompose_projection(P, 1024, 960)
    assert np.allclose(fitted.K, K, rtol=1e-5, atol=1e-3)
    assert np.allclose(fitted.rotation, cam.rotation, atol=1e-7)
    assert np.allclose(fitted.center, cam.center, rtol=1e-5)
    assert np.abs(fitted.project(world)[0] - uv).max() < 1e-5


def test_dlt_rejects_nothing_but_reports_noise():
    cam = Camera.orbit([0, 0, 0], elevation_deg=60, azimuth_deg=0, radius=1000, width=100, height=100)
    rng = np.random.default_rng(4)
    world = rng.uniform(-50, 50, (300, 3))
    uv, _ = cam.project(world)
    noisy = uv + rng.normal(0, 0.5, uv.shape)
    fitted = decompose_projection(refine_projection(dlt_projection(world, noisy), world, noisy), 100, 100)
    err = np.linalg.norm(fitted.project(world)[0] - uv, axis=1)
    assert err.mean() < 0.2 and err.max() > 0.0
