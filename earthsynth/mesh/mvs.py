"""Satellite multi-view stereo as a height sweep over the ground grid -> DSM, confidence, ENU point cloud.

This replaces the learned MVS of Orbit to Ground (MVSFormer++ / COLMAP, appendix B.1), which cannot run here:
its only job in the paper is to hand the geometry stage a point cloud of roofs and ground, and a classic
photogrammetric sweep does that from the RPCs directly.

For every cell of a UTM ground grid and every height hypothesis (`mvs_setup`), each view is sampled where the
3D point (x, y, h) projects, and pairs of views are compared by ZNCC over a window of ground cells (`mvs_cost`).
SGM (`mvs_sgm`) aggregates 1 - ZNCC along 8 directions, the winner gets a parabolic sub-step fit, and a cell is
kept only if its peak ZNCC is high enough, its minimum is distinctive, enough pairs whose views both see it agree
(z-buffer occlusion test per view), it is not next to a height jump (where window matching fattens raised
objects) and it is not an isolated speckle (`mvs_filter`). Relative pointing errors between views are corrected
first (`mvs_pointing`). The grid is processed in
overlapping tiles so memory stays bounded whatever the scene size.

Outputs (one folder, written atomically): dsm.tif (scene CRS, ellipsoidal heights, NaN = no estimate),
confidence.tif (fused peak ZNCC of every cell, also where rejected), points.ply (ENU metres around the scene
origin, colours from the most nadir view), mvs.json (config, grid, pairs, heights, timings, statistics).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from earthsynth.errors import ConfigError, OutputError, SceneError
from earthsynth.mesh.mvs_setup import GroundGrid, HeightSweep, ViewModel, ground_grid, plan_heights, select_pairs


@dataclass(frozen=True)
class MVSConfig:
    gsd_m: float | None = None                      # ground grid cell; None = the scene's GSD
    roi_enu: tuple[float, float, float, float] | None = None   # (xmin, ymin, xmax, ymax) ENU m inside the scene
    height_range: tuple[float, float] | None = None  # ellipsoidal metres; None = the scene's height_range
    step_px: float = 0.5                            # height step = this many px of parallax on the widest pair
    max_hypotheses: int = 384
    projection: str = "rpc"                         # "rpc" (exact) or "pinhole" (cameras/<view>.json or fitted)
    window_radius: int = 2                          # ZNCC window (2r+1)^2 ground cells: 5x5
    min_std: float = 0.02                           # textureless below this local std (image robust-std units)
    max_pairs: int = 8
    min_base_to_height: float = 0.04
    max_base_to_height: float = 1.2
    target_base_to_height: float = 0.3
    pair_keep_fraction: float = 0.5                 # fuse the best half of the valid pairs (occlusion-robust)
    sgm_p1: float = 0.2                             # cost units (1 - ZNCC), one height step
    sgm_p2: float = 4.0                             # larger height jumps
    sgm_directions: int = 8
    min_ncc: float = 0.5                            # reject cells whose fused peak ZNCC is lower
    max_uniqueness: float = 0.85                    # reject if best / second-best aggregated cost is higher
    min_support_pairs: int = 2                      # pairs (both views see the cell, ZNCC >= min_ncc); clipped
    occlusion_tolerance_m: float | None = None      # None: 2 height steps
    edge_jump_m: float = 3.0                        # drop cells near a step of the dense heights larger than this
    edge_radius: int | None = None                  # ... within this many cells; None: window_radius; 0: off
    speckle_max_step_m: float | None = None         # None: 2 height steps
    speckle_min_cells: int = 25
    pointing_search_px: float = 3.0                 # relative pointing correction search (0: off)
    pointing_window_cells: int = 128                # central window used to estimate it
    tile_cells: int = 256
    tile_margin: int = 24
    reference_view: str | None = None               # colours of the points; None = the most nadir view

    def validate(self) -> None:
        checks = [
            (self.gsd_m is None or self.gsd_m > 0, "gsd_m must be positive"),
            (self.step_px > 0, "step_px must be positive"),
            (self.max_hypotheses >= 3, "max_hypotheses must be >= 3"),
            (self.projection in ("rpc", "pinhole"), "projection must be 'rpc' or 'pinhole'"),
            (self.window_radius >= 1, "window_radius must be >= 1"),
            (self.max_pairs >= 1, "max_pairs must be >= 1"),
            (0 < self.min_base_to_height < self.max_base_to_height, "need 0 < min_base_to_height < max"),
            (0 < self.pair_keep_fraction <= 1, "pair_keep_fraction must be in (0, 1]"),
            (0 <= self.sgm_p1 <= self.sgm_p2, "need 0 <= sgm_p1 <= sgm_p2"),
            (self.sgm_directions in (4, 8), "sgm_directions must be 4 or 8"),
            (-1 <= self.min_ncc < 1, "min_ncc must be in [-1, 1)"),
            (self.edge_jump_m > 0 and (self.edge_radius is None or self.edge_radius >= 0), "bad edge filter"),
            (self.pointing_search_px >= 0, "pointing_search_px must be >= 0"),
            (self.pointing_window_cells >= 32, "pointing_window_cells must be >= 32"),
            (self.tile_cells >= 16 and self.tile_margin >= self.window_radius + 1, "tile too small"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"MVSConfig: {message}")


@dataclass(frozen=True)
class MVSResult:
    out_dir: Path
    dsm_path: Path
    confidence_path: Path
    points_path: Path
    meta_path: Path
    grid: GroundGrid
    sweep: HeightSweep
    pairs: tuple[tuple[str, str, float], ...]
    valid_fraction: float
    num_points: int
    seconds: float


@dataclass
class _TileResult:
    heights: np.ndarray      # (H, W) float64, NaN = rejected
    confidence: np.ndarray   # (H, W) float32 fused peak ZNCC (also where rejected)
    interp_error_px: float


def _tile_windows(grid: GroundGrid, size: int):
    for r0 in range(0, grid.height, size):
        for c0 in range(0, grid.width, size):
            yield slice(r0, min(r0 + size, grid.height)), slice(c0, min(c0 + size, grid.width))


def _expanded(window: slice, margin: int, limit: int) -> slice:
    return slice(max(window.start - margin, 0), min(window.stop + margin, limit))


def _sweep_tile(config: MVSConfig, grid: GroundGrid, views, pair_index, sweep: HeightSweep, to_lonlat,
                window, offsets) -> _TileResult:
    from earthsynth.mesh.mvs_tile import reject_cells, sweep_heights, tile_geometry

    rows = _expanded(window[0], config.tile_margin, grid.height)
    cols = _expanded(window[1], config.tile_margin, grid.width)
    lon, lat = (np.asarray(v) for v in to_lonlat(*grid.centers(rows, cols)))
    geometry = tile_geometry(views, lon, lat, sweep, offsets)
    heights, uniqueness = sweep_heights(config, geometry, pair_index, sweep)
    confidence, keep = reject_cells(config, sweep, geometry, pair_index, heights, uniqueness)
    heights = np.where(keep, heights, np.nan)
    inner = (slice(window[0].start - rows.start, window[0].stop - rows.start),
             slice(window[1].start - cols.start, window[1].stop - cols.start))
    return _TileResult(heights[inner], confidence[inner], geometry.interp_error_px)


def _load_views(scene, config: MVSConfig, grid_gsd: float | None = None) -> list[ViewModel]:
    if len(scene.views) < 2:
        raise SceneError(f"multi-view stereo needs at least 2 views; this scene has {len(scene.views)}",
                         path=scene.root / "scene.json",
                         hint="import or synthesise a scene with two or more views of the same area")
    return [ViewModel(scene, v.name, config.projection, grid_gsd) for v in scene.views]


def _reference_index(views, config: MVSConfig) -> int:
    if config.reference_view is not None:
        names = [v.name for v in views]
        if config.reference_view not in names:
            raise ConfigError(f"reference_view {config.reference_view!r} is not a view of the scene ({names})")
        return names.index(config.reference_view)
    return int(np.argmin([np.linalg.norm(v.viewing_tangent()) for v in views]))


def run_mvs(scene_root, out_dir, config: MVSConfig = MVSConfig(), *, progress: bool = False) -> MVSResult:
    """Height-sweep MVS of a scene folder -> out_dir/{dsm.tif, confidence.tif, points.ply, mvs.json}."""
    from pyproj import Transformer
    from rich.progress import Progress

    from earthsynth.io.atomic import ensure_writable_parent
    from earthsynth.io.scene import load_scene
    from earthsynth.mesh.mvs_filter import remove_speckles

    started = time.perf_counter()
    config.validate()
    scene = load_scene(scene_root)
    out_dir = ensure_writable_parent(Path(out_dir))   # fail before the slow part, not after
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError("the output path is an existing file, not a folder", path=out_dir,
                          hint="choose another output folder name or remove that file")
    views = _load_views(scene, config, config.gsd_m or scene.gsd)
    grid = ground_grid(scene, config.gsd_m or scene.gsd, config.roi_enu)
    pairs = select_pairs(views, max_pairs=config.max_pairs, min_bh=config.min_base_to_height,
                         max_bh=config.max_base_to_height, target_bh=config.target_base_to_height)
    sweep = plan_heights(config.height_range or scene.height_range, grid.gsd, max(bh for *_, bh in pairs),
                         config.step_px, config.max_hypotheses)
    to_lonlat = Transformer.from_crs(scene.crs, "EPSG:4326", always_xy=True).transform
    pair_index = np.array([(i, j) for i, j, _ in pairs], np.int64).reshape(-1, 2)
    reference = _reference_index(views, config)
    offsets, pointing = np.zeros((len(views), 2)), {"skipped": "disabled (pointing_search_px = 0)"}
    if config.pointing_search_px > 0:
        from earthsynth.mesh.mvs_pointing import estimate_pointing_offsets
        offsets, pointing = estimate_pointing_offsets(config, grid, views, pairs, sweep, to_lonlat, reference)
    heights = np.full((grid.height, grid.width), np.nan)
    confidence = np.full((grid.height, grid.width), np.nan, np.float32)
    windows = list(_tile_windows(grid, config.tile_cells))
    interp_error = 0.0
    t_setup = time.perf_counter() - started
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"height sweep ({sweep.count} heights, {len(pairs)} pairs)", total=len(windows))
        for window in windows:
            tile = _sweep_tile(config, grid, views, pair_index, sweep, to_lonlat, window, offsets)
            heights[window], confidence[window] = tile.heights, tile.confidence
            interp_error = max(interp_error, tile.interp_error_px)
            bar.advance(task)
    t_sweep = time.perf_counter() - started - t_setup
    heights = remove_speckles(heights, config.speckle_max_step_m or 2.0 * sweep.step, config.speckle_min_cells)
    from earthsynth.mesh.mvs_output import write_mvs_outputs
    meta = {
        "config": asdict(config), "scene": str(scene.root), "grid": grid.to_dict(), "heights": sweep.to_dict(),
        "pairs": [{"views": [views[i].name, views[j].name], "base_to_height": round(bh, 4)} for i, j, bh in pairs],
        "projection": {"model": config.projection, "height_interpolation_max_px": interp_error,
                       "pinhole_max_px": {v.name: v.pinhole_max_px for v in views}
                       if config.projection == "pinhole" else None},
        "pointing": {"reference_view": views[reference].name, **pointing},
        "timing_s": {"setup": round(t_setup, 3), "sweep": round(t_sweep, 3)},
    }
    return write_mvs_outputs(out_dir, scene, grid, sweep, heights, confidence, views,
                             reference, pairs, meta, started)
