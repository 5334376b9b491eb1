"""`earthsynth scene import DIR --out SCENE`: a folder of satellite GeoTIFFs with RPCs -> a scene folder.

Every view is rewritten as a GeoTIFF carrying its RPC in the standard tags (normalised to the project's
pixel convention), so the scene is self-contained whatever sidecar format the RPC came in.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from earthsynth.errors import InputFileError, MissingRPCError, SceneError
from earthsynth.geo.frames import ENUFrame
from earthsynth.io.scene import Scene, ViewRecord, save_scene_json, utm_crs_for
from earthsynth.io.scene_height import sweep_ground_height

TIFF_SUFFIXES = {".tif", ".tiff", ".TIF", ".TIFF"}
MAX_GSD_RATIO = 3.0          # views whose GSDs differ more than this are not one scene
DEFAULT_HALF_HEIGHT_M = 100.0


def rpc_gsd(rpc, col: float, row: float, alt: float, frame: ENUFrame | None = None) -> float:
    """Ground sampling distance (m/px) at a pixel: sqrt of the ground area of one pixel."""
    lon, lat = rpc.localization(np.array([col, col + 1, col]), np.array([row, row, row + 1]), np.full(3, alt))
    frame = frame or ENUFrame(float(lon[0]), float(lat[0]), alt)
    p = frame.to_enu(lon, lat, np.full(3, alt))
    a, b = p[1, :2] - p[0, :2], p[2, :2] - p[0, :2]
    return float(np.sqrt(abs(a[0] * b[1] - a[1] * b[0])))


def list_view_files(src: Path) -> list[Path]:
    if not src.is_dir():
        raise InputFileError("not a folder", path=src, hint="give the folder that holds the satellite GeoTIFFs")
    files = sorted(p for p in src.iterdir() if p.suffix in TIFF_SUFFIXES and p.is_file())
    if not files:
        raise InputFileError("no GeoTIFF files found", path=src, hint="put the satellite views (*.tif) in it")
    return files


def _is_georeferenced_product(path: Path) -> bool:
    """A map-projected raster (DSM, orthophoto) rather than a satellite view: it has a CRS and no RPC."""
    from earthsynth.io.raster import raster_info
    info = raster_info(path)
    return info.crs is not None and not info.has_rpc


def _read_view(path: Path, rpc_overrides: dict[str, Path]):
    from earthsynth.geo.rpc_readers import find_rpc_for_image, read_rpc
    from earthsynth.io.raster import read_raster

    raster = read_raster(path)
    if path.stem in rpc_overrides:
        rpc_path = rpc_overrides[path.stem]
        rpc = read_rpc(rpc_path)
    else:
        rpc, rpc_path = find_rpc_for_image(path)
    if np.issubdtype(raster.data.dtype, np.floating) and np.isnan(raster.data).any():
        raise SceneError("image has NaN pixels", path=path,
                         hint="fill or mask them (set a nodata value) before importing")
    return raster, rpc, rpc_path


def _sidecar_metadata(rpc_path: Path) -> dict:
    """Sun angles and date from a Sat-NeRF / DFC2019 JSON, when that is where the RPC came from."""
    if rpc_path.suffix.lower() != ".json":
        return {}
    import json
    d = json.loads(rpc_path.read_text())
    out = {}
    if "sun_elevation" in d:
        out["sun_elevation"] = float(d["sun_elevation"])
        out["sun_azimuth"] = float(d["sun_azimuth"])
    if "acquisition_date" in d:
        s = str(d["acquisition_date"])
        out["date"] = f"{s[:4]}-{s[4:6]}-{s[6:8]}T{s[8:10]}:{s[10:12]}:{s[12:14]}Z" if len(s) >= 14 else s
    if "min_alt" in d and "max_alt" in d:
        out["alt_range"] = (float(d["min_alt"]), float(d["max_alt"]))
    return out


def _view_name(path: Path, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    base, k = name, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def _as_gray(data: np.ndarray) -> np.ndarray:
    return data.astype(np.float64).mean(axis=0)


def _scene_height(rasters, rpcs, metas) -> float:
    alt_ranges = [m["alt_range"] for m in metas if "alt_range" in m]
    if alt_ranges:
        return float(np.mean([(lo + hi) / 2 for lo, hi in alt_ranges]))
    if len(rasters) >= 2:
        h = sweep_ground_height([_as_gray(r.data) for r in rasters], rpcs)
        if h is not None:
            return h
    return float(rpcs[0].alt_offset)


def import_scene(src: str | Path, out: str | Path, *, rpc_files: list[Path] = (),
                 height_range: tuple[float, float] | None = None, name: str | None = None,
                 log=print) -> Scene:
    """Import every satellite view in `src` into a new scene folder `out` (written atomically)."""
    from earthsynth.io.atomic import atomic_dir, ensure_writable_parent
    from earthsynth.io.raster import write_raster

    src, out = Path(src), Path(out)
    ensure_writable_parent(out)   # fail before the slow part, not after
    overrides = {Path(p).stem: Path(p) for p in rpc_files}
    views, skipped = [], []
    for path in list_view_files(src):
        try:
            views.append((path, *_read_view(path, overrides)))
        except MissingRPCError:
            if _is_georeferenced_product(path):
                skipped.append(path)   # e.g. a reference DSM shipped beside the views
                continue
            raise
    if not views:
        raise MissingRPCError("no satellite view with an RPC found", path=src,
                              hint="each image needs RPC tags or a sidecar RPC file")
    for p in skipped:
        log(f"skipped {p.name}: map-projected raster without RPC (not a satellite view)")
    rasters = [v[1] for v in views]
    rpcs = [v[2] for v in views]
    metas = [_sidecar_metadata(v[3]) for v in views]

    alt0 = _scene_height(rasters, rpcs, metas)
    ref = rasters[0]
    h0, w0 = ref.data.shape[1:]
    lon0, lat0 = (float(np.ravel(x)[0]) for x in rpcs[0].localization(
        np.array([(w0 - 1) / 2]), np.array([(h0 - 1) / 2]), np.array([alt0])))
    frame = ENUFrame(lon0, lat0, alt0)
    gsds = [rpc_gsd(rpc, (r.data.shape[2] - 1) / 2, (r.data.shape[1] - 1) / 2, alt0, frame)
            for r, rpc in zip(rasters, rpcs)]
    if max(gsds) / min(gsds) > MAX_GSD_RATIO:
        worst = views[int(np.argmax(np.array(gsds) / min(gsds)))][0]
        raise SceneError(
            f"views have very different ground sampling distances ({min(gsds):.2f} to {max(gsds):.2f} m/px)",
            path=worst, hint="import views of similar resolution, or resample them first")
    if height_range is None:
        height_range = (alt0 - DEFAULT_HALF_HEIGHT_M, alt0 + DEFAULT_HALF_HEIGHT_M)

    taken: set[str] = set()
    records = []
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir(parents=True)
        (tmp / "cameras").mkdir()
        for (path, raster, rpc, rpc_path), gsd, meta in zip(views, gsds, metas):
            vname = _view_name(path, taken)
            write_raster(tmp / "images" / f"{vname}.tif", raster.data, nodata=raster.nodata, rpc=rpc)
            records.append(ViewRecord(
                name=vname, image=f"images/{vname}.tif", width=int(raster.data.shape[2]),
                height=int(raster.data.shape[1]), bands=int(raster.data.shape[0]), dtype=str(raster.data.dtype),
                gsd=round(gsd, 4), date=meta.get("date"), sun_elevation=meta.get("sun_elevation"),
                sun_azimuth=meta.get("sun_azimuth"), source=f"{path} (RPC: {rpc_path})"))
        bounds = _common_bounds(rasters, rpcs, frame, alt0)
        scene = Scene(root=out, name=name or out.name, origin=frame.to_dict(), crs=utm_crs_for(lon0, lat0),
                      gsd=round(float(np.median(gsds)), 4), height_range=tuple(map(float, height_range)),
                      bounds_enu=bounds, views=tuple(records), source=f"imported from {src}")
        save_scene_json(scene, tmp)
    return scene


def _common_bounds(rasters, rpcs, frame: ENUFrame, alt: float) -> tuple[float, float, float, float]:
    """ENU box seen by every view at the scene height (intersection of the footprints' boxes)."""
    boxes = []
    for r, rpc in zip(rasters, rpcs):
        h, w = r.data.shape[1:]
        cols = np.array([0, w - 1, w - 1, 0], float)
        rows = np.array([0, 0, h - 1, h - 1], float)
        lon, lat = rpc.localization(cols, rows, np.full(4, alt))
        p = frame.to_enu(lon, lat, np.full(4, alt))
        boxes.append((p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()))
    b = np.array(boxes)
    return (float(b[:, 0].max()), float(b[:, 1].max()), float(b[:, 2].min()), float(b[:, 3].min()))
