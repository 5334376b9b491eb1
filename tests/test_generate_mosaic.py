"""Cascaded unbounded mosaics: stage sizes, georeferencing through crops, determinism, resume, previews."""

import json

import numpy as np
import pytest
import torch
from affine import Affine
from PIL import Image

from earthsynth.errors import ConfigError
from earthsynth.generate.config import DenoiserConfig
from earthsynth.generate.model import MetaEarthDenoiser
from earthsynth.generate.mosaic import MosaicConfig, cascade_mosaic, centred_window
from earthsynth.generate.tiles import TileConfig
from earthsynth.io.raster import raster_info, read_raster, write_raster
from earthsynth.world.landscape import landscape_tile

CRS = "EPSG:32633"
TRANSFORM = Affine(64.0, 0.0, 500_000.0, 0.0, -64.0, 4_000_000.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # timings stay sane on 2 cores


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MetaEarthDenoiser(DenoiserConfig.tiny()).eval()   # 16 px windows, x4


@pytest.fixture(scope="module")
def map_tif(tmp_path_factory):
    rgb, _ = landscape_tile(3, x0=0.0, y0=0.0, width_px=9, height_px=7, gsd=64.0)
    return write_raster(tmp_path_factory.mktemp("map") / "map.tif", np.moveaxis(rgb, -1, 0), transform=TRANSFORM,
                        crs=CRS)


CONFIG = MosaicConfig(stages=2, crops_px=(None, 20), tile=TileConfig(steps=3), preview_px=32)


def test_two_stages_with_a_crop_are_georeferenced(model, map_tif, tmp_path):
    stages = cascade_mosaic(model, map_tif, tmp_path / "m", seed=4, config=CONFIG)
    assert [(s.width, s.height, s.m_per_px) for s in stages] == [(36, 28, 16.0), (80, 80, 4.0)]
    first, second = (raster_info(s.path) for s in stages)
    assert first.crs == second.crs == CRS
    assert tuple(first.transform) == tuple(TRANSFORM @ Affine.scale(0.25))
    # stage 2 conditions on the centred 20 x 20 window of stage 1 (rows 4.., cols 8..), refined x4
    assert stages[1].condition_window == (4, 8, 20, 20) == centred_window(28, 36, 20)
    assert tuple(second.transform) == tuple(first.transform @ Affine.translation(8, 4) @ Affine.scale(0.25))
    preview = Image.open(stages[1].preview)
    assert max(preview.size) == 32 and preview.mode == "RGB"
    listing = json.loads((tmp_path / "m" / "mosaic.json").read_text())
    assert [s["width"] for s in listing["stages"]] == [36, 80] and listing["crops_px"] == [None, 20]


def test_same_seed_same_bytes_and_resume(model, map_tif, tmp_path):
    a = cascade_mosaic(model, map_tif, tmp_path / "a", seed=1, config=CONFIG)
    b = cascade_mosaic(model, map_tif, tmp_path / "b", seed=1, config=CONFIG)
    c = cascade_mosaic(model, map_tif, tmp_path / "c", seed=2, config=CONFIG)
    data = [read_raster(r[1].path).data for r in (a, b, c)]
    assert np.array_equal(data[0], data[1]) and not np.array_equal(data[0], data[2])
    again = cascade_mosaic(model, map_tif, tmp_path / "a", seed=1, config=CONFIG)   # every band is reused
    assert all(s.bands_resumed == -1 for s in again)
    assert np.array_equal(read_raster(again[1].path).data, data[0])
    assert (tmp_path / "a" / "mosaic.json").read_bytes() == (tmp_path / "b" / "mosaic.json").read_bytes()


def test_bad_configs_and_ungeoreferenced_input(model, tmp_path):
    with pytest.raises(ConfigError, match="stages"):
        MosaicConfig(stages=0)
    with pytest.raises(ConfigError, match="crops_px"):
        MosaicConfig(stages=1, crops_px=(8, 8))
    png = tmp_path / "map.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    with pytest.raises(ConfigError, match="m/px"):
        cascade_mosaic(model, png, tmp_path / "out", config=CONFIG)
    assert not (tmp_path / "out" / "stage_1.tif").exists()
