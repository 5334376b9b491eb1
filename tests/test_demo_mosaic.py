"""The demo's MetaEarth part: a georeferenced map around the scene origin, refined in two cascaded stages."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from pyproj import Transformer

from earthsynth.demo_mosaic import DemoMosaicConfig, run_demo_mosaic, write_demo_map
from earthsynth.generate.weights import default_weights_available
from earthsynth.io.raster import raster_info, read_raster

ORIGIN = {"lon": 55.45, "lat": -20.88, "alt": 0.0}
CRS = "EPSG:32740"


def test_map_is_centred_on_the_scene_origin(tmp_path):
    config = DemoMosaicConfig(map_px=30, map_m=64.0)
    info = raster_info(write_demo_map(tmp_path / "map.tif", CRS, ORIGIN, config))
    assert (info.width, info.height, info.crs) == (30, 30, CRS)
    east, north = Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(ORIGIN["lon"], ORIGIN["lat"])
    centre = info.transform * (15, 15)
    assert np.allclose(centre, (east, north), atol=1e-6) and info.transform.a == 64.0


@pytest.mark.skipif(not default_weights_available(), reason="shipped MetaEarth weights absent")
def test_two_stages_with_the_shipped_model(tmp_path):
    scene = SimpleNamespace(crs=CRS, origin=ORIGIN)
    config = DemoMosaicConfig(map_px=12, stage1_crop_px=8, stage2_crop_px=16, steps=2, window_px=64)
    stages = run_demo_mosaic(tmp_path, scene, config=config, log=lambda _: None)
    assert [(s.width, s.m_per_px) for s in stages] == [(32, 16.0), (64, 4.0)]
    final = read_raster(stages[1].path)
    assert final.data.shape == (3, 64, 64) and final.data.std() > 0
    listing = json.loads((tmp_path / "mosaic" / "mosaic.json").read_text())
    assert listing["crops_px"] == [8, 16] and (tmp_path / "mosaic" / "map_preview.png").is_file()
