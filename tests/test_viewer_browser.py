"""The web viewer in a real browser: headless Chromium with software WebGL (SwiftShader) renders an exported
splats PLY (GaussianSplats3D) and GLB mesh (three.js), and the screenshots are checked pixel by pixel.

Needs Debian's `chromium` and `npm ci --prefix earthsynth/viewer`; the browser tests are skipped without them.
The server tests need neither.
"""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest
import trimesh
from PIL import Image

from earthsynth.errors import ConfigError, EarthsynthError
from earthsynth.io.mesh import TexturedMesh, write_glb
from earthsynth.io.splats import GaussianSplats, rgb_to_sh_dc, write_splats_ply
from earthsynth.viewer.screenshot import find_chromium, screenshot
from earthsynth.viewer.server import NODE_MODULES_ENV, find_node_modules, serve, viewer_url

BACKGROUND_RGB = (0x1D, 0x21, 0x26)    # viewer.css / viewer.js background
RED, GREEN, BLUE = (0.9, 0.1, 0.1), (0.1, 0.8, 0.1), (0.1, 0.2, 0.9)
MAGENTA, YELLOW, GREY = (1.0, 0.0, 1.0), (1.0, 1.0, 0.0), (0.75, 0.75, 0.75)
GREEN_BOX_XY, BLUE_BOX_XY = (-20.0, 10.0), (20.0, -15.0)   # splats: north-west and south-east of the origin
TOWER_XY, SLAB_XY = (-30.0, -30.0), (30.0, 28.0)           # mesh: south-west and north-east


def _box_surface(centre_xy, width_m, height_m, per_side=10):
    """Points on the top and the four walls of an axis-aligned box standing on z = 0."""
    t = np.linspace(-0.5, 0.5, per_side)
    a, b = (g.ravel() for g in np.meshgrid(t, t))
    faces = [np.stack([a * width_m, b * width_m, np.full_like(a, height_m)], axis=1)]
    for side in (-0.5, 0.5):
        faces.append(np.stack([np.full_like(a, side * width_m), a * width_m, (b + 0.5) * height_m], axis=1))
        faces.append(np.stack([a * width_m, np.full_like(a, side * width_m), (b + 0.5) * height_m], axis=1))
    return np.concatenate(faces) + [*centre_xy, 0.0]


def write_test_splats(path):
    """3500 Gaussians (SH degree 3, the layout the pipelines export): a red 100 m ground plane, a green
    box to the north-west and a blue box to the south-east, in ENU metres."""
    grid = np.linspace(-50.0, 50.0, 50)
    xx, yy = np.meshgrid(grid, grid)
    parts = [(np.stack([xx.ravel(), yy.ravel(), np.zeros(xx.size)], axis=1), RED),
             (_box_surface(GREEN_BOX_XY, 20.0, 25.0), GREEN), (_box_surface(BLUE_BOX_XY, 16.0, 15.0), BLUE)]
    means = np.concatenate([p for p, _ in parts])
    rgb = np.concatenate([np.tile(colour, (len(p), 1)) for p, colour in parts])
    n = len(means)
    sh = np.zeros((n, 16, 3), np.float32)
    sh[:, 0] = rgb_to_sh_dc(rgb)
    write_splats_ply(path, GaussianSplats(
        means_n3=means, quats_n4=np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)), log_scales_n3=np.full((n, 3), np.log(1.3)),
        opacity_logits_n=np.full(n, 4.0), sh_n_k_3=sh))


def write_test_mesh(path):
    """A mesh with vertex colours (no texture): a grey 100 m ground 2 m below the splats' ground, a magenta
    16 x 16 x 40 m tower to the south-west and a yellow 24 x 16 x 6 m slab to the north-east."""
    parts = [(trimesh.creation.box(extents=(100.0, 100.0, 1.0)), (0.0, 0.0, -2.5), GREY)]
    for centre_xy, extents, colour in ((TOWER_XY, (16.0, 16.0, 40.0), MAGENTA),
                                       (SLAB_XY, (24.0, 16.0, 6.0), YELLOW)):
        parts.append((trimesh.creation.box(extents=extents), (*centre_xy, extents[2] / 2), colour))
    for box, centre, colour in parts:
        box.apply_translation(centre)
        box.visual.vertex_colors = np.tile([*(np.asarray(colour) * 255), 255], (len(box.vertices), 1))
    scene = trimesh.util.concatenate([box for box, _, _ in parts])
    write_glb(path, TexturedMesh(scene.vertices, scene.faces,
                                 vertex_colors_n3=np.asarray(scene.visual.vertex_colors)[:, :3] / 255.0))


@pytest.fixture(scope="module")
def viewer_url_base(tmp_path_factory):
    try:
        find_chromium()
        find_node_modules()
    except EarthsynthError as exc:
        pytest.skip(f"browser test needs Debian chromium and the viewer's npm libraries: {exc}")
    run_dir = tmp_path_factory.mktemp("viewer_run")
    write_test_splats(run_dir / "splats" / "point_cloud.ply")
    write_test_mesh(run_dir / "mesh.glb")
    server, url = serve(run_dir)
    yield url
    server.stop()


def _render(url, tmp_path, name):
    result = screenshot(url, tmp_path / f"{name}.png", width=640, height=480, timeout_s=90)
    assert result["ready"], result
    assert result["error"] is None and not result["page_errors"] and not result["console_errors"], result
    assert result["frames"] >= 1
    return np.asarray(Image.open(result["png"]).convert("RGB")).astype(np.int16)


def _mask(image, colour, tolerance=60):
    return np.abs(image - np.asarray(colour) * 255).max(axis=2) < tolerance


def _assert_framed(content_mask, min_fraction=0.2):
    """Content covers a good part of the view and sits about its middle (not a speck, not off to a side)."""
    h, w = content_mask.shape
    rows, cols = np.nonzero(content_mask)
    assert content_mask.mean() > min_fraction, f"only {content_mask.mean():.1%} of the view shows content"
    assert np.ptp(cols) > 0.5 * w and np.ptp(rows) > 0.5 * h, "content spans too little of the view"
    assert abs(cols.mean() / w - 0.5) < 0.15 and abs(rows.mean() / h - 0.5) < 0.15, "content is off-centre"


def test_splats_ply_renders_framed_in_enu(viewer_url_base, tmp_path):
    image = _render(viewer_url(viewer_url_base, splats="splats/point_cloud.ply", ui=0), tmp_path, "splats")
    content = np.abs(image - BACKGROUND_RGB).max(axis=2) > 30
    _assert_framed(content)
    red, green, blue = _mask(image, RED), _mask(image, GREEN), _mask(image, BLUE)
    assert red.mean() > 0.15 and green.mean() > 0.01 and blue.mean() > 0.01, (red.mean(), green.mean(), blue.mean())
    # z up, north up the screen, east to the right: the north-west box is left of and above the south-east one
    green_rc, blue_rc = np.argwhere(green).mean(axis=0), np.argwhere(blue).mean(axis=0)
    assert green_rc[1] < blue_rc[1] - 40 and green_rc[0] < blue_rc[0] - 20, (green_rc, blue_rc)


def _lit(image, colour):
    """Pixels of a lit pure colour: its full channels bright, its empty channels dark."""
    on, off = np.asarray(colour) > 0.5, np.asarray(colour) < 0.5
    return (image[..., on] > 90).all(axis=-1) & (image[..., off] < 40).all(axis=-1)


def test_glb_mesh_renders_upright_alone_and_with_splats(viewer_url_base, tmp_path):
    mesh_only = _render(viewer_url(viewer_url_base, mesh="mesh.glb", ui=0), tmp_path, "mesh")
    magenta, yellow = _lit(mesh_only, MAGENTA), _lit(mesh_only, YELLOW)
    _assert_framed(np.abs(mesh_only - BACKGROUND_RGB).max(axis=2) > 30)
    assert magenta.mean() > 0.015 and yellow.mean() > 0.005, (magenta.mean(), yellow.mean())
    # glTF's Y-up turned back to z up (north up the screen): the south-west tower is left of and below the
    # north-east slab (kept Y-up, north would point down and put the tower above the slab)
    tower_rc, slab_rc = np.argwhere(magenta).mean(axis=0), np.argwhere(yellow).mean(axis=0)
    assert tower_rc[1] < slab_rc[1] - 40 and tower_rc[0] > slab_rc[0] + 20, (tower_rc, slab_rc)

    both = _render(viewer_url(viewer_url_base, mesh="mesh.glb", splats="splats/point_cloud.ply", ui=0),
                   tmp_path, "both")
    red, magenta, yellow = _mask(both, RED), _lit(both, MAGENTA), _lit(both, YELLOW)
    assert red.mean() > 0.1 and magenta.mean() > 0.01 and yellow.mean() > 0.003, \
        (red.mean(), magenta.mean(), yellow.mean())


def test_the_page_lists_the_run_files_without_a_query(viewer_url_base, tmp_path):
    result = screenshot(viewer_url_base, tmp_path / "list.png", timeout_s=60)
    assert result["ready"] and result["error"] is None and result["frames"] == 0, result


def test_a_missing_file_is_the_page_error_not_a_hang(viewer_url_base, tmp_path):
    result = screenshot(viewer_url(viewer_url_base, mesh="no_such_mesh.glb"), tmp_path / "missing.png", timeout_s=60)
    assert not result["ready"] and "no_such_mesh.glb" in result["error"] and "404" in result["error"], result
    assert result["seconds"] < 30


# ------------------------------------------------------------------------------- the server (no browser needed)

def _get(url_base, path):
    host, port = url_base.removeprefix("http://").rstrip("/").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", path)   # sent as written: http.client does not normalise `..`
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


@pytest.fixture
def plain_server(tmp_path):
    """The server over a run folder with a secret file beside it and a fake node_modules folder."""
    (tmp_path / "secret.txt").write_text("SECRET-OUTSIDE-THE-RUN")
    run_dir = tmp_path / "run"
    (run_dir / "splats").mkdir(parents=True)
    (run_dir / "splats" / "a b#1.ply").write_bytes(b"ply-bytes")
    (run_dir / "splats" / ".earthsynth-tmp-half-written.ply").write_bytes(b"ply")   # not listed
    (run_dir / "escape.txt").symlink_to(tmp_path / "secret.txt")
    node_modules = tmp_path / "node_modules"
    (node_modules / "three").mkdir(parents=True)
    (node_modules / "three" / "x.js").write_text("export {};")
    server, url = serve(run_dir, node_modules=node_modules)
    yield url
    server.stop()


def test_server_serves_the_page_the_libraries_and_the_run(plain_server):
    status, body = _get(plain_server, "/")
    assert status == 200 and b"importmap" in body
    assert _get(plain_server, "/node_modules/three/x.js") == (200, b"export {};")
    assert _get(plain_server, "/run/splats/a%20b%231.ply") == (200, b"ply-bytes")
    status, body = _get(plain_server, "/run-files.json")
    assert status == 200 and json.loads(body) == {"files": ["splats/a b#1.ply"]}
    assert _get(plain_server, "/run/missing.ply")[0] == 404
    assert _get(plain_server, "/run/splats/%00.ply")[0] == 400


@pytest.mark.parametrize("path", ["/run/../secret.txt", "/run/%2e%2e/secret.txt", "/run/splats/../../secret.txt",
                                  "/node_modules/../secret.txt", "/../secret.txt", "/run//etc/passwd",
                                  "/run/escape.txt", "/%2e%2e/%2e%2e/server.py"])
def test_server_refuses_paths_outside_its_folders(plain_server, path):
    status, body = _get(plain_server, path)
    assert status == 403, (status, body[:200])
    assert b"SECRET" not in body and b"root:" not in body


def test_server_binds_loopback_only_and_needs_a_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="loopback"):
        serve(tmp_path, host="0.0.0.0", node_modules=tmp_path)
    with pytest.raises(EarthsynthError, match="not a folder"):
        serve(tmp_path / "missing", node_modules=tmp_path)


def test_missing_npm_libraries_say_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setenv(NODE_MODULES_ENV, str(tmp_path))
    with pytest.raises(EarthsynthError, match="npm ci --prefix"):
        find_node_modules()
