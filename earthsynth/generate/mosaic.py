"""Cascaded unbounded mosaics: MetaEarth's self-cascade with every stage generated as a tiled, streamed COG.

    results = cascade_mosaic(model, "map_64m.tif", "out/mosaic", config=MosaicConfig(stages=2, crops_px=(None, 512)))

Stage k conditions on stage k - 1 (the input map for k = 1) at its own m/px and is written by `generate_tiles`
(sliding windows, half overlap, shared initial noise, streamed into `stage_<k>.tif`, resumable band by band),
so the output size is bounded by disk, not memory. A stage may take only a centred window of the previous
stage as its condition (`crops_px`): each x4 stage multiplies the area by 16, and a user usually wants the
finest level over a part of the map. Every stage is georeferenced (the condition's transform refined x4) and
gets a PNG preview of at most `preview_px` per side; `mosaic.json` lists what was made.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from earthsynth.errors import ConfigError
from earthsynth.generate.data import sample_seed
from earthsynth.generate.tiles import TileConfig, as_condition_chw, generate_tiles, job_key
from earthsynth.io.atomic import atomic_path

_STAGE_STREAM = 31   # seed stream of the stages (each stage gets its own initial noise)


@dataclass(frozen=True)
class MosaicConfig:
    stages: int = 2
    # per stage (1..stages): side (px) of the centred window of the previous stage used as the condition;
    # None = all of it. Shorter than `stages`: the missing entries are None.
    crops_px: Sequence[int | None] = ()
    tile: TileConfig = field(default_factory=TileConfig)
    preview_px: int = 1024

    def __post_init__(self) -> None:
        if not isinstance(self.stages, int) or isinstance(self.stages, bool) or self.stages < 1:
            raise ConfigError(f"MosaicConfig.stages must be a positive integer, got {self.stages!r}")
        if len(self.crops_px) > self.stages:
            raise ConfigError(f"crops_px has {len(self.crops_px)} entries for {self.stages} stages")
        for crop in self.crops_px:
            if crop is not None and (not isinstance(crop, int) or crop < 1):
                raise ConfigError(f"crops_px entries must be positive integers or None, got {crop!r}")
        if self.preview_px < 16:
            raise ConfigError(f"preview_px must be at least 16, got {self.preview_px}")

    def crop_for(self, stage: int) -> int | None:
        return self.crops_px[stage - 1] if stage - 1 < len(self.crops_px) else None


@dataclass(frozen=True)
class MosaicStage:
    stage: int
    path: Path
    preview: Path
    width: int
    height: int
    m_per_px: float
    condition_window: tuple[int, int, int, int] | None   # (row, col, height, width) in the previous stage
    seconds: float
    bands_resumed: int     # bands of an interrupted run reused; -1 when the finished stage was reused whole


def centred_window(height: int, width: int, crop: int | None) -> tuple[int, int, int, int] | None:
    """(row, col, h, w) of the centred crop x crop window (clipped to the image); None for the whole image."""
    if crop is None or (crop >= height and crop >= width):
        return None
    h, w = min(crop, height), min(crop, width)
    return (height - h) // 2, (width - w) // 2, h, w


def cascade_mosaic(model, condition, out_dir: str | Path, *, condition_m: float | None = None, seed: int = 0,
                   config: MosaicConfig = MosaicConfig(), device=None, progress: bool = False,
                   log: Callable[[str], None] = lambda _: None) -> list[MosaicStage]:
    """Run the cascade from `condition` (a raster path with a geotransform, or a path + `condition_m`) into
    `out_dir`/stage_<k>.tif + stage_<k>_preview.png + mosaic.json. Finished stages and bands are reused."""
    from earthsynth.generate.condition import load_condition
    from earthsynth.io.raster import read_raster

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_condition(condition)
    current_m = condition_m if condition_m is not None else loaded.gsd_m
    if current_m is None:
        raise ConfigError(f"{condition} has no geotransform, so its m/px is unknown",
                          hint="state it (condition_m / --input-m)")
    rgb, transform, crs = loaded.rgb_hw3, loaded.transform, loaded.crs
    stages: list[MosaicStage] = []
    for k in range(1, config.stages + 1):
        window = centred_window(rgb.shape[0], rgb.shape[1], config.crop_for(k))
        if window is not None:
            row, col, h, w = window
            rgb = rgb[row:row + h, col:col + w]
            if transform is not None:
                from affine import Affine
                transform = transform @ Affine.translation(col, row)
        path, done_marker = out_dir / f"stage_{k}.tif", out_dir / f"stage_{k}.job.json"
        stage_seed = sample_seed(seed, _STAGE_STREAM, k)
        key = json.dumps(job_key(model, as_condition_chw(rgb), current_m / model.config.scale, config.tile,
                                 stage_seed, transform, crs), sort_keys=True)
        started, resumed = time.perf_counter(), 0
        if path.is_file() and done_marker.is_file() and done_marker.read_text() == key:
            log(f"stage {k}: reusing {path}")
            resumed = -1
        else:
            log(f"stage {k}: {rgb.shape[1]}x{rgb.shape[0]} px at {current_m:g} m/px -> "
                f"x{model.config.scale} at {current_m / model.config.scale:g} m/px")
            done_marker.unlink(missing_ok=True)
            resumed = generate_tiles(model, rgb, path, condition_m=current_m, transform=transform, crs=crs,
                                     seed=stage_seed, config=config.tile, device=device, resume=True,
                                     progress=progress).bands_resumed
            with atomic_path(done_marker) as tmp:
                tmp.write_text(key)
        raster = read_raster(path)
        preview = out_dir / f"stage_{k}_preview.png"
        write_preview(np.moveaxis(raster.data[:3], 0, -1), preview, config.preview_px)
        current_m = current_m / model.config.scale
        stages.append(MosaicStage(k, path, preview, raster.width, raster.height, current_m, window,
                                  time.perf_counter() - started, resumed))
        rgb = np.moveaxis(raster.data[:3], 0, -1).astype(np.float32) / 255.0
        transform = raster.transform
    _write_listing(out_dir / "mosaic.json", condition, seed, config, stages)
    return stages


def write_preview(rgb_hw3: np.ndarray, path: Path, max_px: int) -> Path:
    """PNG of the image, area-downsampled so that its longer side is at most max_px (written atomically)."""
    from PIL import Image
    image = Image.fromarray(np.ascontiguousarray(rgb_hw3, dtype=np.uint8))
    image.thumbnail((max_px, max_px), Image.Resampling.BOX)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def _write_listing(path: Path, condition, seed: int, config: MosaicConfig, stages: list[MosaicStage]) -> None:
    listing = {"condition": str(condition), "seed": seed, "tile": asdict(config.tile),
               "crops_px": list(config.crops_px),
               "stages": [{"stage": s.stage, "path": s.path.name, "preview": s.preview.name, "width": s.width,
                           "height": s.height, "m_per_px": s.m_per_px,
                           "condition_window_row_col_h_w": list(s.condition_window) if s.condition_window else None}
                          for s in stages]}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(listing, indent=2))
