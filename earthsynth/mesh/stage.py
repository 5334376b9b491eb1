"""The geometry stage folder of Orbit to Ground: MVS points -> out_dir/{mesh.glb, dsm_from_mesh.tif, geometry.json}.

    out_dir/
      mesh.glb            the merged, closed, untextured 2.5D mesh in ENU metres (origin in asset.extras)
      dsm_from_mesh.tif   the mesh's top-down heights in the scene CRS, ellipsoidal metres (as truth/dsm.tif and
                          the MVS dsm.tif), NaN outside the scene box
      geometry.json       config, inputs, z range, per-division losses (first / last / every `log_every` steps),
                          timings, mesh statistics

The folder is written under a temporary name and renamed when complete (`atomic_dir`). A re-run whose
geometry.json records the same inputs and config returns the existing folder without recomputing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earthsynth.errors import InputFileError
from earthsynth.mesh.geometry import GeometryConfig, optimise_geometry

STAGE_FORMAT = "earthsynth-geometry/1"


@dataclass(frozen=True)
class GeometryResult:
    out_dir: Path
    mesh_path: Path
    dsm_path: Path
    meta_path: Path
    num_faces: int
    seconds: float
    skipped: bool = False     # True when an identical completed run was found


def resolve_points_path(points_or_mvs_dir) -> Path:
    """A points .ply file, or an MVS output folder holding points.ply."""
    path = Path(points_or_mvs_dir)
    if path.is_dir():
        path = path / "points.ply"
    if not path.is_file():
        raise InputFileError("no MVS point cloud here", path=path,
                             hint="pass the MVS output folder (with points.ply) or a .ply of ENU points")
    return path


def scene_z_range(scene, points_n3: np.ndarray, margin_m: float = 2.0) -> tuple[float, float]:
    """ENU z range of the iso-surface grid: the points' span plus a margin, inside the scene's height range
    (ellipsoidal heights less the origin's; ENU up and the ellipsoid normal differ by < 1 cm per km here)."""
    scene_lo, scene_hi = (float(h) - float(scene.origin.get("alt", 0.0)) for h in scene.height_range)
    z = points_n3[np.isfinite(points_n3).all(axis=1), 2]
    if z.size == 0:
        return scene_lo, scene_hi
    low, high = max(scene_lo, float(z.min()) - margin_m), min(scene_hi, float(z.max()) + margin_m)
    return (low, high) if high > low else (scene_lo, scene_hi)


def dsm_in_scene_crs(mesh, scene, gsd_m: float):
    """(dsm_hw float32 ellipsoidal metres, NaN outside; affine transform; crs) of the mesh seen from above, on the
    scene CRS grid of `gsd_m` cells aligned to multiples of gsd_m (the truth DSM's convention): the mesh is
    rendered top-down in ENU at gsd / 2, then every cell centre takes the nearest ENU height."""
    from pyproj import Transformer
    from affine import Affine

    from earthsynth.geo.pinhole import OrthoCamera
    from earthsynth.render.mesh import render_height

    frame, crs = scene.frame, scene.crs
    x0, y0, x1, y1 = scene.bounds_enu
    fine = gsd_m / 2.0
    nx, ny = int(np.ceil((x1 - x0) / fine)), int(np.ceil((y1 - y0) / fine))
    enu_hw = render_height(mesh.vertices_n3, mesh.faces_f3, OrthoCamera.top_down(x0, y1, fine, nx, ny))
    edge = np.linspace(0.0, 1.0, 9)
    ex = np.concatenate([x0 + (x1 - x0) * edge, np.full(9, x1), x1 - (x1 - x0) * edge, np.full(9, x0)])
    ey = np.concatenate([np.full(9, y0), y0 + (y1 - y0) * edge, np.full(9, y1), y1 - (y1 - y0) * edge])
    lon, lat, _ = frame.to_geodetic(np.stack([ex, ey, np.zeros_like(ex)], axis=-1))
    e, n = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    e0, n1 = np.floor(np.min(e) / gsd_m) * gsd_m, np.ceil(np.max(n) / gsd_m) * gsd_m
    width, height = int(np.ceil((np.max(e) - e0) / gsd_m)), int(np.ceil((n1 - np.min(n)) / gsd_m))
    ee, nn = np.meshgrid(e0 + (np.arange(width) + 0.5) * gsd_m, n1 - (np.arange(height) + 0.5) * gsd_m)
    lon_c, lat_c = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(ee, nn)
    enu = frame.to_enu(lon_c, lat_c, np.full(ee.shape, frame.alt0))
    col = np.floor((enu[..., 0] - x0) / fine).astype(np.int64)
    row = np.floor((y1 - enu[..., 1]) / fine).astype(np.int64)
    inside = (col >= 0) & (col < nx) & (row >= 0) & (row < ny)
    dsm = np.full(ee.shape, np.nan, np.float32)
    dsm[inside] = enu_hw[row[inside], col[inside]] + frame.alt0
    return dsm, Affine(gsd_m, 0.0, e0, 0.0, -gsd_m, n1), crs


def _thin_logs(report: dict, log_every: int) -> dict:
    """The report with each division's loss log kept every `log_every` steps (and the last step)."""
    out = dict(report)
    out["divisions"] = []
    for division in report["divisions"]:
        log = division["log"]
        kept = [r for r in log if r["step"] % log_every == 0 or r is log[-1]]
        out["divisions"].append({**division, "log": kept})
    return out


def _inputs_record(scene_root: Path, points_path: Path, config: GeometryConfig, seed: int, dsm_gsd_m) -> dict:
    stat = points_path.stat()
    return {"scene": str(Path(scene_root).absolute()), "points": str(points_path.absolute()),
            "points_size": stat.st_size, "points_mtime_ns": stat.st_mtime_ns, "config": config.to_dict(),
            "seed": int(seed), "dsm_gsd_m": dsm_gsd_m}


def _completed(out_dir: Path, inputs: dict) -> GeometryResult | None:
    meta_path = out_dir / "geometry.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("format") != STAGE_FORMAT or meta.get("inputs") != json.loads(json.dumps(inputs)):
        return None
    if not (out_dir / "mesh.glb").is_file() or not (out_dir / "dsm_from_mesh.tif").is_file():
        return None
    return GeometryResult(out_dir, out_dir / "mesh.glb", out_dir / "dsm_from_mesh.tif", meta_path,
                          int(meta["report"]["num_faces"]), float(meta["seconds"]), skipped=True)


def run_geometry(scene_root, points, out_dir, config: GeometryConfig = GeometryConfig(), *, device=None,
                 seed: int = 0, dsm_gsd_m: float | None = None, progress=None, log_every: int = 10,
                 force: bool = False) -> GeometryResult:
    """The geometry stage: scene folder + MVS points (a points.ply or the MVS output folder; ENU metres) ->
    out_dir/{mesh.glb, dsm_from_mesh.tif, geometry.json}, written atomically. dsm_gsd_m: the DSM cell (None: the
    scene's GSD). A completed identical run is reused unless `force`."""
    from earthsynth.io.atomic import atomic_dir
    from earthsynth.io.mesh import is_watertight, write_glb
    from earthsynth.io.pointcloud import read_point_cloud_ply
    from earthsynth.io.raster import write_raster
    from earthsynth.io.scene import load_scene

    started = time.perf_counter()
    scene = load_scene(scene_root)
    points_path = resolve_points_path(points)
    out_dir = Path(out_dir)
    inputs = _inputs_record(Path(scene_root), points_path, config, seed, dsm_gsd_m)
    if not force and (done := _completed(out_dir, inputs)) is not None:
        return done
    points_n3, _, _ = read_point_cloud_ply(points_path)
    z_range = scene_z_range(scene, points_n3)
    mesh = optimise_geometry(points_n3, scene.bounds_enu, z_range, config, device=device, seed=seed,
                             progress=progress)
    dsm, transform, crs = dsm_in_scene_crs(mesh, scene, float(dsm_gsd_m or scene.gsd))
    report = _thin_logs(mesh.metadata["geometry"], max(1, int(log_every)))
    with atomic_dir(out_dir) as tmp:
        write_glb(tmp / "mesh.glb", mesh, origin=scene.frame)
        write_raster(tmp / "dsm_from_mesh.tif", dsm, transform=transform, crs=crs, nodata=float("nan"))
        meta = {"format": STAGE_FORMAT, "inputs": inputs, "report": report, "watertight": is_watertight(mesh),
                "frame": "ENU metres at the scene origin", "origin": scene.origin, "crs": crs,
                "seconds": time.perf_counter() - started}
        (tmp / "geometry.json").write_text(json.dumps(meta, indent=1))
    return GeometryResult(out_dir, out_dir / "mesh.glb", out_dir / "dsm_from_mesh.tif", out_dir / "geometry.json",
                          mesh.num_faces, meta["seconds"])
