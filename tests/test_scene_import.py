"""`scene import` + `cameras approx` on the real Pleiades pair and WorldView-3 view, and bad inputs."""

import json
import shutil

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from earthsynth.cli import app
from earthsynth.errors import EarthsynthError, InputFileError, MissingRPCError, OutputError, SceneError
from earthsynth.geo.rpc_readers import read_rpc
from earthsynth.io.scene import load_scene
from earthsynth.io.scene_cameras import approximate_scene_cameras
from earthsynth.io.scene_import import import_scene

runner = CliRunner()


@pytest.fixture(scope="module")
def reunion_scene(real_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes") / "reunion"
    import_scene(real_data / "s2p_pair_reunion", out, log=lambda *_: None)
    return load_scene(out)


def test_reunion_imports_as_uint16_with_ground_height_from_the_pair(reunion_scene, real_data):
    assert [v.name for v in reunion_scene.views] == ["img_01", "img_02"]
    assert all(v.dtype == "uint16" and v.bands == 1 for v in reunion_scene.views)
    assert reunion_scene.crs == "EPSG:32740"
    # the s2p reference DSM of this pair spans 2270..2376 m; the RPC height offset (1295 m) would be wrong
    assert 2270 <= reunion_scene.origin["alt"] <= 2376
    with rasterio.open(reunion_scene.image_path("img_01")) as a, \
            rasterio.open(real_data / "s2p_pair_reunion" / "img_01.tif") as b:
        assert np.array_equal(a.read(), b.read())
    assert 0.45 < reunion_scene.gsd < 0.55


def test_reunion_pinhole_approximation_within_0_2_px(reunion_scene):
    result = dict(approximate_scene_cameras(reunion_scene.root))
    for name, approx in result.items():
        assert approx.max_px <= 0.2, (name, approx.max_px)
        assert approx.mean_px < approx.max_px
        saved = json.loads(reunion_scene.camera_path(name).read_text())
        assert saved["max_px"] == approx.max_px
    cam = reunion_scene.camera("img_01")
    assert cam.width == 1024 and cam.height == 1024


def test_cli_cameras_approx_json_lines(reunion_scene):
    res = runner.invoke(app, ["cameras", "approx", str(reunion_scene.root), "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [d["view"] for d in lines] == ["img_01", "img_02"]
    assert all(set(d) == {"view", "max_px", "mean_px"} and d["max_px"] <= 0.2 for d in lines)


def test_xml_sidecar_variant_gives_the_same_cameras_as_the_tags(real_data, tmp_path, reunion_scene):
    out = tmp_path / "xml"
    import_scene(real_data / "s2p_pair_reunion" / "xml_variant_2019", out,
                 height_range=reunion_scene.height_range, log=lambda *_: None)
    xml_scene = load_scene(out)
    lon, lat = np.meshgrid(np.linspace(55.70, 55.72, 5), np.linspace(-21.24, -21.225, 5))
    alt = np.full(lon.shape, 2320.0)
    for name in ("img_01", "img_02"):
        a = np.array(xml_scene.rpc(name).projection(lon, lat, alt))
        b = np.array(reunion_scene.rpc(name).projection(lon, lat, alt))
        assert np.abs(a - b).max() < 1e-6


def test_jax_imports_with_its_json_rpc_and_metadata(real_data, tmp_path):
    out = tmp_path / "jax"
    json_rpc = real_data / "rpcm_rpc_files" / "JAX_068_001_RGB.json"
    res = runner.invoke(app, ["scene", "import", str(real_data / "dfc2019_jax068"), "--out", str(out),
                              "--rpc-file", str(json_rpc)])
    assert res.exit_code == 0, res.output
    scene = load_scene(out)
    (view,) = scene.views
    assert view.dtype == "uint8" and view.bands == 3 and (view.width, view.height) == (746, 815)
    assert view.sun_elevation == 50.8 and view.date.startswith("2014-10-05")
    # the scene carries the JSON (bundle-adjusted) RPC, not the TIFF's own tags
    lon, lat = read_rpc(json_rpc).localization(np.array([300.0]), np.array([400.0]), np.array([5.0]))
    assert np.allclose(scene.rpc(view.name).projection(lon, lat, np.array([5.0])), ([300.0], [400.0]), atol=1e-6)
    ((_, approx),) = approximate_scene_cameras(out)
    assert approx.max_px <= 0.2


# ---- bad input: one clear error naming the file, nothing half-written ----

def _copy_reunion_view(real_data, dst):
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(real_data / "s2p_pair_reunion" / "img_01.tif", dst / "img_01.tif")
    return dst / "img_01.tif"


def test_corrupt_tiff_is_named_and_leaves_no_output(real_data, tmp_path):
    src = tmp_path / "src"
    path = _copy_reunion_view(real_data, src)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputFileError, match="img_01.tif"):
        import_scene(src, tmp_path / "out", height_range=(2200, 2400), log=lambda *_: None)
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".earthsynth-tmp") for p in tmp_path.iterdir())


def test_tiff_without_rpc_or_sidecar(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with rasterio.open(src / "plain.tif", "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(MissingRPCError, match="plain.tif"):
        import_scene(src, tmp_path / "out", log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_unknown_rpc_sidecar_format(real_data, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with rasterio.open(src / "img.tif", "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    shutil.copy(real_data / "rpcm_rpc_files" / "rpc_unsupported.xml", src / "img.xml")
    with pytest.raises(EarthsynthError, match="img"):
        import_scene(src, tmp_path / "out", log=lambda *_: None)


def test_nan_pixels(real_data, tmp_path):
    src = tmp_path / "src"
    rpc = read_rpc(real_data / "s2p_pair_reunion" / "img_01.tif")
    src.mkdir()
    data = np.ones((1, 32, 32), np.float32)
    data[0, 3, 4] = np.nan
    with rasterio.open(src / "nan.tif", "w", driver="GTiff", width=32, height=32, count=1, dtype="float32") as d:
        d.write(data)
        d.rpcs = rpc.to_rasterio()
    with pytest.raises(SceneError, match="nan.tif"):
        import_scene(src, tmp_path / "out", height_range=(2200, 2400), log=lambda *_: None)


def test_views_of_wildly_different_gsd(real_data, tmp_path):
    src = tmp_path / "src"
    _copy_reunion_view(real_data, src)
    rpc = read_rpc(real_data / "s2p_pair_reunion" / "img_02.tif").to_dict()
    for k in ("row_offset", "row_scale", "col_offset", "col_scale"):   # the same strip seen at 8x the GSD
        rpc[k] = rpc[k] / 8.0
    from earthsynth.geo.rpc import RPCModel
    coarse = RPCModel.from_dict(rpc)
    with rasterio.open(src / "coarse.tif", "w", driver="GTiff", width=128, height=128, count=1,
                       dtype="uint16") as d:
        d.write(np.ones((1, 128, 128), np.uint16))
        d.rpcs = coarse.to_rasterio()
    with pytest.raises(SceneError, match="ground sampling"):
        import_scene(src, tmp_path / "out", height_range=(2200, 2400), log=lambda *_: None)


def test_unwritable_output_and_cli_message(real_data, tmp_path):
    src = tmp_path / "src"
    _copy_reunion_view(real_data, src)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        import_scene(src, blocker / "scene", log=lambda *_: None)
    res = runner.invoke(app, ["scene", "import", str(src), "--out", str(blocker / "scene")])
    assert res.exit_code == 2
    assert "afile" in res.output and "Traceback" not in res.output


def test_load_scene_rejects_a_non_scene(tmp_path):
    with pytest.raises(SceneError, match="scene.json"):
        load_scene(tmp_path)
