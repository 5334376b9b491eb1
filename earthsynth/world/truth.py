"""The truth of a synthetic scene: DSM in the scene CRS, dense surface points, the mesh, low-altitude views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pyproj import Transformer
from rasterio.transform import from_origin

from earthsynth.geo.pinhole import OrthoCamera
from earthsynth.io.scene import utm_crs_for
from earthsynth.render.mesh import render_height
from earthsynth.world.uav import TestViewConfig, render_test_view, test_cameras


def truth_dsm(world, gsd_m: float) -> tuple[np.ndarray, object, str]:
    """DSM (H, W) float32 of ellipsoidal heights on a UTM grid aligned to multiples of `gsd_m`; NaN outside.

    The mesh is rendered top-down in ENU at gsd/2, then every UTM cell centre is mapped to ENU and takes the
    nearest ENU height (nearest, not bilinear: building edges stay sharp). ENU up differs from the ellipsoid
    normal by d^2 / 2R < 2 mm over a 300 m scene: ignored."""
    frame = world.frame
    crs = utm_crs_for(frame.lon0, frame.lat0)
    xmin, ymin, xmax, ymax = world.bounds_xy
    fine = gsd_m / 2.0
    nx, ny = int(np.ceil((xmax - xmin) / fine)), int(np.ceil((ymax - ymin) / fine))
    enu_height = render_height(world.mesh_full.vertices_n3, world.mesh_full.faces_f3,
                               OrthoCamera.top_down(xmin, ymax, fine, nx, ny))
    to_utm = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    corners = np.array([[x, y, 0.0] for x in (xmin, xmax) for y in (ymin, ymax)])
    lon, lat, _ = frame.to_geodetic(corners)
    e, n = to_utm.transform(lon, lat)
    e0, n1 = np.floor(np.min(e) / gsd_m) * gsd_m, np.ceil(np.max(n) / gsd_m) * gsd_m
    width, height = int(np.ceil((np.max(e) - e0) / gsd_m)), int(np.ceil((n1 - np.min(n)) / gsd_m))
    transform = from_origin(e0, n1, gsd_m, gsd_m)
    ee, nn = np.meshgrid(e0 + (np.arange(width) + 0.5) * gsd_m, n1 - (np.arange(height) + 0.5) * gsd_m)
    lon_c, lat_c = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(ee, nn)
    enu = frame.to_enu(lon_c, lat_c, np.full(ee.shape, frame.alt0))
    col = np.floor((enu[..., 0] - xmin) / fine).astype(int)
    row = np.floor((ymax - enu[..., 1]) / fine).astype(int)
    inside = (col >= 0) & (col < nx) & (row >= 0) & (row < ny)
    dsm = np.full(ee.shape, np.nan, np.float32)
    dsm[inside] = enu_height[row[inside], col[inside]] + frame.alt0
    return dsm, transform, crs


def sample_surface_points(mesh, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform random points on the mesh (N, 3) and their texture colours (N, 3) uint8."""
    rng = np.random.default_rng(seed)
    tri = mesh.vertices_n3[mesh.faces_f3]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face = rng.choice(len(area), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    points = np.einsum("nk,nkd->nd", bary, tri[face])
    uv = np.einsum("nk,nkd->nd", bary, mesh.uvs_n2[mesh.faces_f3[face]])
    h, w = mesh.texture_hw3.shape[:2]
    cols = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    rows = np.clip((uv[:, 1] * h).astype(int), 0, h - 1)
    return points, mesh.texture_hw3[rows, cols]


def _test_view_job(world, camera):
    return render_test_view(world.mesh_full, camera)


def write_truth(world, config, scene_dir: Path) -> dict:
    """Write truth/ and return the scene.json `truth` entry (relative paths)."""
    from earthsynth.io.mesh import write_glb
    from earthsynth.io.pointcloud import write_point_cloud_ply
    from earthsynth.io.raster import write_raster
    from earthsynth.world.parallel import map_views

    truth = scene_dir / "truth"
    (truth / "views").mkdir(parents=True, exist_ok=True)
    # the test views first: worker processes are forked before this process runs any torch work
    ground_z = float(np.ravel(world.terrain.height(np.array([0.0]), np.array([0.0])))[0])
    cameras = test_cameras(config.size_m, ground_z, TestViewConfig(size_px=config.test_view_size))
    images = map_views(_test_view_job, world, list(cameras.values()))
    for name, image in zip(cameras, images):
        Image.fromarray(image).save(truth / "views" / f"{name}.png")
    dsm, transform, crs = truth_dsm(world, config.truth_dsm_gsd_m)
    write_raster(truth / "dsm.tif", dsm, transform=transform, crs=crs, nodata=float("nan"), cog=True)
    points, colors = sample_surface_points(world.mesh_full, config.truth_points, seed=config.seed)
    write_point_cloud_ply(truth / "points.ply", points, colors_n3=colors,
                          comments=["earthsynth truth points, ENU metres at the scene origin"])
    write_glb(truth / "mesh.glb", world.mesh_full, origin=world.frame)
    (truth / "views" / "views.json").write_text(
        json.dumps({name: cam.to_dict() for name, cam in cameras.items()}, indent=2))
    return {"dsm": "truth/dsm.tif", "points": "truth/points.ply", "mesh": "truth/mesh.glb",
            "views": "truth/views/views.json", "cameras": "truth/cameras"}
