"""Consistency checks of a synthetic scene against its own truth."""

from __future__ import annotations

import json

import numpy as np
from pyproj import Transformer

from earthsynth.geo.pinhole import camera_from_dict


def truth_dsm_points(scene, step: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """lon, lat, alt of every `step`-th pixel centre of the truth DSM (NaNs dropped)."""
    from earthsynth.io.raster import pixel_centers, read_raster

    dsm = read_raster(scene.truth_path("dsm"))
    x, y = pixel_centers(dsm.transform, dsm.data.shape[1], dsm.data.shape[2])
    h = dsm.data[0]
    x, y, h = x[::step, ::step].ravel(), y[::step, ::step].ravel(), h[::step, ::step].ravel()
    ok = np.isfinite(h)
    to_lonlat = Transformer.from_crs(dsm.crs, "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(x[ok], y[ok])
    return np.asarray(lon), np.asarray(lat), h[ok].astype(np.float64)


def rpc_vs_exact_camera_px(scene) -> dict[str, float]:
    """Max distance (px) between each view's RPC projection and its exact camera's, over the truth DSM."""
    lon, lat, alt = truth_dsm_points(scene)
    enu = scene.frame.to_enu(lon, lat, alt)
    errors = {}
    for view in scene.views:
        exact = camera_from_dict(json.loads((scene.root / "truth" / "cameras" / f"{view.name}.json").read_text()))
        col, row = scene.rpc(view.name).projection(lon, lat, alt)
        uv, _ = exact.project(enu)
        errors[view.name] = float(np.max(np.hypot(col - uv[:, 0], row - uv[:, 1])))
    return errors
