"""Fixture generator for the MVS tests: satellite-like views of a textured tilted plane, rendered with numpy.

Each view is a pinhole camera 20 km away (0.5 m GSD at the target); its RPC is fitted to the exact camera with
`fit_rpc_to_projection` and written in the GeoTIFF tags, exactly like a real scene. The ground is the plane
z = SLOPE_X * x + SLOPE_Y * y (ENU metres) with a smooth random texture, so the DSM has a closed form.
`pixel_shift` renders a view as if its RPC were off by (d_col, d_row) px (a pointing error); `gain`/`offset`
change its radiometry (another date).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import map_coordinates

from earthsynth.geo.frames import ENUFrame
from earthsynth.geo.pinhole import Camera
from earthsynth.geo.rpc_fit import fit_rpc_to_projection
from earthsynth.io.raster import write_raster
from earthsynth.io.scene import Scene, ViewRecord, save_scene_json

FRAME = ENUFrame(55.65, -21.23, 1000.0)
SLOPE_X, SLOPE_Y = 0.15, -0.10
HALF_M = 40.0                       # the scene spans +-40 m around the origin
TEXTURE_CELL_M = 1.0
DISTANCE_M = 20_000.0
GSD_M = 0.5


def plane_height_enu(x, y):
    return SLOPE_X * np.asarray(x) + SLOPE_Y * np.asarray(y)


def _texture(seed: int):
    rng = np.random.default_rng(seed)
    n = int(4 * HALF_M / TEXTURE_CELL_M)
    lattice = rng.normal(size=(n, n))

    def sample(x, y):
        i = (np.asarray(y) + 2 * HALF_M) / TEXTURE_CELL_M
        j = (np.asarray(x) + 2 * HALF_M) / TEXTURE_CELL_M
        return map_coordinates(lattice, [i, j], order=3, mode="nearest")
    return sample


def satellite_camera(elevation_deg: float, azimuth_deg: float, size: int) -> Camera:
    focal = DISTANCE_M / GSD_M
    K = np.array([[focal, 0, (size - 1) / 2], [0, focal, (size - 1) / 2], [0, 0, 1]])
    orbit = Camera.orbit(np.zeros(3), elevation_deg=elevation_deg, azimuth_deg=azimuth_deg, radius=DISTANCE_M,
                         width=size, height=size)
    return Camera(K, orbit.viewmat, size, size)


def render_plane(camera: Camera, texture, pixel_shift=(0.0, 0.0)) -> np.ndarray:
    """Texture seen by each pixel (ray-plane intersection); pixel_shift moves the content by (d_col, d_row)."""
    K = camera.K.copy()
    K[0, 2] += pixel_shift[0]
    K[1, 2] += pixel_shift[1]
    origins, dirs = Camera(K, camera.viewmat, camera.width, camera.height).rays()
    ox, oy, oz = np.moveaxis(origins, -1, 0)
    dx, dy, dz = np.moveaxis(dirs, -1, 0)
    s = (SLOPE_X * ox + SLOPE_Y * oy - oz) / (dz - SLOPE_X * dx - SLOPE_Y * dy)
    return texture(ox + s * dx, oy + s * dy)


def _rpc_of(camera: Camera):
    corners = FRAME.to_geodetic(np.array([[-2 * HALF_M, -2 * HALF_M, 0.0], [2 * HALF_M, 2 * HALF_M, 0.0]]))
    lon_range, lat_range = (corners[0].min(), corners[0].max()), (corners[1].min(), corners[1].max())

    def project(lon, lat, alt):
        uv, _ = camera.project(FRAME.to_enu(lon, lat, alt))
        return uv[..., 0], uv[..., 1]
    return fit_rpc_to_projection(project, lon_range, lat_range, (FRAME.alt0 - 30, FRAME.alt0 + 30),
                                 width=camera.width, height=camera.height)


def make_plane_scene(root: Path, views, *, size: int = 224, seed: int = 0) -> Scene:
    """views: list of dicts(elevation, azimuth, gain=1, offset=0, pixel_shift=(0, 0), noise=0)."""
    root = Path(root)
    (root / "images").mkdir(parents=True)
    texture = _texture(seed)
    rng = np.random.default_rng(seed + 1)
    records, max_fit_px = [], 0.0
    for k, spec in enumerate(views):
        camera = satellite_camera(spec["elevation"], spec["azimuth"], size)
        rpc, fit_px = _rpc_of(camera)
        max_fit_px = max(max_fit_px, fit_px)
        image = render_plane(camera, texture, spec.get("pixel_shift", (0.0, 0.0)))
        image = spec.get("gain", 1.0) * image + spec.get("offset", 0.0)
        image = image + spec.get("noise", 0.0) * rng.normal(size=image.shape)
        name = f"view_{k}"
        write_raster(root / "images" / f"{name}.tif", (100.0 * image + 1000.0).astype(np.float32), rpc=rpc)
        records.append(ViewRecord(name=name, image=f"images/{name}.tif", width=size, height=size, bands=1,
                                  dtype="float32", gsd=GSD_M, date=f"2024-0{k + 1}-01"))
    scene = Scene(root=root, name="plane", origin=FRAME.to_dict(), crs="EPSG:32740", gsd=GSD_M,
                  height_range=(FRAME.alt0 - 20.0, FRAME.alt0 + 20.0),
                  bounds_enu=(-HALF_M, -HALF_M, HALF_M, HALF_M), views=tuple(records),
                  source=f"tests/mvs_fixtures.py plane, RPC fit max {max_fit_px:.2e} px")
    save_scene_json(scene)
    return scene


def plane_truth_on_grid(crs: str, transform, shape) -> np.ndarray:
    """Ellipsoidal height of the plane at each cell centre of a grid in `crs` (two fixed-point steps)."""
    from pyproj import Transformer

    from earthsynth.io.raster import pixel_centers

    x, y = pixel_centers(transform, *shape)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    h = np.full(x.shape, FRAME.alt0)
    for _ in range(3):
        enu = FRAME.to_enu(lon, lat, h)
        h = h + plane_height_enu(enu[..., 0], enu[..., 1]) - enu[..., 2]
    return h
