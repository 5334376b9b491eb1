"""The MetaEarth part of the demo: a 300 x 300 px map at 64 m/px of the synthetic landscape around the demo
scene, refined by the shipped model in two cascaded x4 stages (64 -> 16 -> 4 m/px), each a tiled, streamed COG.

Stage 1 refines the map's centred 128 x 128 px (8.2 km) into 512 x 512 px at 16 m/px; stage 2 refines all of it
into 2048 x 2048 px at 4 m/px (8.2 km). Each x4 stage multiplies the pixel count by 16, so the finest level covers
a part of the map. Stage 2 is 961 windows of 128 px x 5 DDIM steps: ~13 min on the 2 CPU cores with nothing else
running (a 768 px centre, 121 windows, took ~95 s). Interrupted runs resume band by band.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class DemoMosaicConfig:
    map_px: int = 300
    map_m: float = 64.0           # MetaEarth's coarsest level of the 64 / 16 / 4 m pyramid
    landscape_seed: int = 1007    # a landscape the shipped model never saw (it trained on seeds 0..9), with forest,
                                  # town, grass and sea near the centre (1000..1006 are mostly one biome at 19 km)
    stage1_crop_px: int = 128     # -> 512 x 512 px at 16 m/px
    stage2_crop_px: int = 512     # all of stage 1 -> 2048 x 2048 px at 4 m/px
    steps: int = 5                # DDIM steps per window (strength 0.6 of the residual model: see sample.py;
                                  # benchmarks/sample_quality.py: 5 steps keep ~90 % of the texture of 10)
    window_px: int = 128          # twice the training crop: ~2x fewer model evaluations per pixel than 64
    batch_windows: int = 4


def write_demo_map(path: Path, scene_crs: str, origin: dict, config: DemoMosaicConfig) -> Path:
    """The landscape's orthoimage at map_m m/px, centred on the scene origin, as a GeoTIFF in the scene's CRS."""
    from affine import Affine
    from pyproj import Transformer

    from earthsynth.io.raster import write_raster
    from earthsynth.world.landscape import landscape_tile

    half = config.map_px * config.map_m / 2
    rgb, _ = landscape_tile(config.landscape_seed, x0=-half, y0=half, width_px=config.map_px,
                            height_px=config.map_px, gsd=config.map_m)
    east, north = Transformer.from_crs("EPSG:4326", scene_crs, always_xy=True).transform(origin["lon"],
                                                                                          origin["lat"])
    transform = Affine(config.map_m, 0.0, east - half, 0.0, -config.map_m, north + half)
    return write_raster(path, np.moveaxis(rgb, -1, 0), transform=transform, crs=scene_crs, cog=True)


def run_demo_mosaic(out: Path, scene, *, seed: int = 0, config: DemoMosaicConfig = DemoMosaicConfig(),
                    log=print) -> list:
    """out/mosaic/: map_64m.tif + its preview, stage_1.tif (16 m), stage_2.tif (4 m), previews, mosaic.json."""
    from earthsynth.generate.mosaic import MosaicConfig, cascade_mosaic, write_preview
    from earthsynth.generate.tiles import TileConfig
    from earthsynth.generate.weights import load_default_model
    from earthsynth.io.raster import read_raster

    folder = out / "mosaic"
    folder.mkdir(parents=True, exist_ok=True)
    map_path = folder / f"map_{config.map_m:g}m.tif"
    if not map_path.is_file():
        write_demo_map(map_path, scene.crs, scene.origin, config)
    write_preview(np.moveaxis(read_raster(map_path).data[:3], 0, -1), folder / "map_preview.png", 1024)
    mosaic = MosaicConfig(stages=2, crops_px=(config.stage1_crop_px, config.stage2_crop_px),
                          tile=TileConfig(steps=config.steps, window_px=config.window_px,
                                          batch_windows=config.batch_windows))
    return cascade_mosaic(load_default_model(), map_path, folder, seed=seed, config=mosaic, progress=True, log=log)
