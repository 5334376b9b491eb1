"""`scene synth`: satellite views with fitted RPCs, the truth, and the whole camera path end to end."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from earthsynth.cli import app
from earthsynth.geo.pinhole import camera_from_dict
from earthsynth.io.raster import read_raster
from earthsynth.io.scene import load_scene
from earthsynth.io.scene_cameras import approximate_scene_cameras
from earthsynth.io.scene_import import import_scene
from earthsynth.world.checks import rpc_vs_exact_camera_px, truth_dsm_points
from earthsynth.world.synth import SynthConfig, synthesize_scene

SMALL = SynthConfig(seed=3, size_m=120.0, num_views=3, view_size=192, cars_per_view=8,
                    truth_points=20_000, test_view_size=64)


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "scene"
    synthesize_scene(SMALL, out)
    return load_scene(out)


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_scene_folder_is_complete(small_scene):
    assert [v.name for v in small_scene.views] == ["view_00", "view_01", "view_02"]
    for key in ("dsm", "points", "mesh", "views"):
        assert small_scene.truth_path(key).is_file(), key
    img = read_raster(small_scene.image_path("view_00"))
    assert img.data.shape == (3, 192, 192) and img.data.dtype == np.uint8 and img.rpc is not None
    assert img.data.std() > 10   # not a blank render
    views = json.loads(small_scene.truth_path("views").read_text())
    assert len(views) >= 8
    assert all((small_scene.root / "truth" / "views" / f"{n}.png").is_file() for n in views)


def test_fitted_rpcs_reproject_the_truth_dsm_like_the_exact_cameras(small_scene):
    errors = rpc_vs_exact_camera_px(small_scene)
    assert max(errors.values()) < 0.01, errors   # goal: 0.5 px; the fit is far better


def test_import_and_pinhole_approximation_recover_the_exact_cameras(small_scene, tmp_path):
    imported = import_scene(small_scene.root / "images", tmp_path / "imported",
                            height_range=small_scene.height_range, log=lambda *_: None)
    approx = dict(approximate_scene_cameras(imported.root))
    lon, lat, alt = truth_dsm_points(small_scene)
    for name, a in approx.items():
        assert a.max_px < 0.05, (name, a.max_px)
        exact = camera_from_dict(json.loads((small_scene.root / "truth" / "cameras" / f"{name}.json").read_text()))
        uv_exact, _ = exact.project(small_scene.frame.to_enu(lon, lat, alt))
        uv_approx, _ = a.camera.project(imported.frame.to_enu(lon, lat, alt))
        assert np.abs(uv_exact - uv_approx).max() < 0.1


def test_truth_dsm_is_the_top_of_the_truth_points(small_scene):
    from pyproj import Transformer
    from earthsynth.io.pointcloud import read_point_cloud_ply

    dsm = read_raster(small_scene.truth_path("dsm"))
    points, colors, _ = read_point_cloud_ply(small_scene.truth_path("points"))
    assert colors is not None and len(points) == SMALL.truth_points
    lon, lat, alt = small_scene.frame.to_geodetic(points)
    e, n = Transformer.from_crs("EPSG:4326", dsm.crs, always_xy=True).transform(lon, lat)
    col, row = (~dsm.transform) @ (e, n)
    col, row = col.astype(int), row.astype(int)
    ok = (col >= 0) & (col < dsm.data.shape[2]) & (row >= 0) & (row < dsm.data.shape[1])
    from scipy.ndimage import maximum_filter
    # facade points lie on cell boundaries: compare with the highest DSM cell around them
    top = maximum_filter(np.nan_to_num(dsm.data[0], nan=-1e9), size=3)[row[ok], col[ok]]
    finite = top > -1e8
    assert finite.mean() > 0.95
    # nothing sticks out above the DSM by more than a 45-degree roof rises over one 0.5 m cell
    assert np.quantile(alt[ok][finite] - top[finite], 0.999) < 0.6
    # and the DSM spans ground to rooftops
    assert np.nanmax(dsm.data) - np.nanmin(dsm.data) > 8.0


def test_same_seed_same_bytes(small_scene, tmp_path):
    again = tmp_path / "scene"   # same folder name: scene.json records it
    synthesize_scene(SMALL, again)
    assert _digest(again) == _digest(small_scene.root)


def test_cli_render_truth(small_scene, tmp_path):
    res = CliRunner().invoke(app, ["render", "truth", str(small_scene.root), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    rendered = np.asarray(Image.open(tmp_path / "r" / "oblique_080m_000.png"), float)
    reference = np.asarray(Image.open(small_scene.root / "truth" / "views" / "oblique_080m_000.png"), float)
    # the GLB round trip (float32 positions) renders the same picture
    assert np.abs(rendered - reference).mean() < 1.0
