"""The height sweep's output folder: dsm.tif, confidence.tif, points.ply (ENU), mvs.json -- written atomically."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

POINT_CHUNK = 200_000


def _to_uint8(pixels_chw: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """First three bands (grey repeated if fewer) stretched from the 1st to the 99th percentile to 0..255."""
    bands = pixels_chw[:3] if pixels_chw.shape[0] >= 3 else np.repeat(pixels_chw[:1], 3, axis=0)
    if bands.dtype == np.uint8:
        return bands, (0.0, 255.0)
    lo, hi = (float(v) for v in np.percentile(bands, [1, 99]))
    scaled = (bands.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-9))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8), (lo, hi)


def _bilinear_chw(image_chw: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    from scipy.ndimage import map_coordinates
    return np.stack([map_coordinates(band.astype(np.float32), [rows, cols], order=1, mode="nearest")
                     for band in image_chw], axis=1)


def point_cloud(scene, grid, heights_hw: np.ndarray, reference) -> tuple[np.ndarray, np.ndarray]:
    """ENU points (n, 3) of the valid cells (row-major order) and their colours (n, 3) uint8 sampled
    (bilinear) in the reference view where each point projects."""
    from pyproj import Transformer

    rows, cols = np.nonzero(np.isfinite(heights_hw))
    x, y = grid.centers(slice(0, grid.height), slice(0, grid.width))
    to_lonlat = Transformer.from_crs(scene.crs, "EPSG:4326", always_xy=True).transform
    colours_chw, _ = _to_uint8(reference.pixels)
    points = np.empty((len(rows), 3))
    colours = np.empty((len(rows), 3), np.uint8)
    for start in range(0, len(rows), POINT_CHUNK):
        part = slice(start, start + POINT_CHUNK)
        r, c = rows[part], cols[part]
        lon, lat = (np.asarray(v) for v in to_lonlat(x[r, c], y[r, c]))
        h = heights_hw[r, c]
        points[part] = scene.frame.to_enu(lon, lat, h)
        col, row = reference.project(lon, lat, h)
        colours[part] = np.clip(np.round(_bilinear_chw(colours_chw, col, row)), 0, 255).astype(np.uint8)
    return points, colours


def write_mvs_outputs(out_dir: Path, scene, grid, sweep, heights, confidence, views, reference_index: int,
                      pairs, meta: dict, started: float):
    from earthsynth.io.atomic import atomic_dir
    from earthsynth.io.pointcloud import write_point_cloud_ply
    from earthsynth.io.raster import write_raster
    from earthsynth.mesh.mvs import MVSResult

    t0 = time.perf_counter()
    reference = views[reference_index]
    points, colours = point_cloud(scene, grid, heights, reference)
    origin = scene.frame
    comments = [
        "earthsynth height-sweep MVS point cloud",
        "frame: local ENU metres (x east, y north, z up), not the DSM's CRS",
        f"origin: lon {origin.lon0:.9f} lat {origin.lat0:.9f} alt {origin.alt0:.3f} (WGS84, ellipsoidal height)",
        f"colours: view {reference.name}",
        f"dsm crs: {grid.crs}",
    ]
    valid_fraction = float(np.isfinite(heights).mean()) if heights.size else 0.0
    with atomic_dir(out_dir) as tmp:
        tags = {"heights": "metres above the WGS84 ellipsoid", "source": "earthsynth height-sweep MVS"}
        write_raster(tmp / "dsm.tif", heights.astype(np.float32), transform=grid.transform, crs=grid.crs,
                     nodata=float("nan"), tags=tags, band_descriptions=["height"])
        write_raster(tmp / "confidence.tif", confidence.astype(np.float32), transform=grid.transform,
                     crs=grid.crs, nodata=float("nan"), band_descriptions=["fused peak ZNCC"],
                     tags={"meaning": "fused ZNCC of the view pairs at the chosen height, kept or not"})
        write_point_cloud_ply(tmp / "points.ply", points, colors_n3=colours, comments=comments)
        meta = dict(meta)
        meta["timing_s"] = dict(meta["timing_s"], outputs=round(time.perf_counter() - t0, 3),
                                total=round(time.perf_counter() - started, 3))
        meta.update(reference_view=reference.name, valid_fraction=valid_fraction, num_points=int(len(points)),
                    points_frame="ENU metres around scene.json origin",
                    files=["dsm.tif", "confidence.tif", "points.ply", "mvs.json"])
        (tmp / "mvs.json").write_text(json.dumps(meta, indent=2))
    out_dir = Path(out_dir)
    return MVSResult(
        out_dir=out_dir, dsm_path=out_dir / "dsm.tif", confidence_path=out_dir / "confidence.tif",
        points_path=out_dir / "points.ply", meta_path=out_dir / "mvs.json", grid=grid, sweep=sweep,
        pairs=tuple((views[i].name, views[j].name, float(bh)) for i, j, bh in pairs),
        valid_fraction=valid_fraction, num_points=int(len(points)), seconds=time.perf_counter() - started)
