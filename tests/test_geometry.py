"""The Orbit to Ground geometry stage: binning (Eqs. A1-A2), the fast step against the reference ops, the
optimisation on two boxes (loss, heights, watertight merge without seam jump, determinism), the stage folder."""

import json

import numpy as np
import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.geo.pinhole import OrthoCamera
from earthsynth.io.mesh import is_watertight, read_glb
from earthsynth.mesh.geometry import GeometryConfig, optimise_geometry, plan_divisions
from earthsynth.mesh.geometry_step import (GridSampler, interior_laplacian_loss, open_surface, rim_vertices,
                                           sign_change_loss, top_down_render)
from earthsynth.mesh.heightmap import GridBox, bin_points, fill_holes
from earthsynth.mesh.isosurface import extract_isosurface
from earthsynth.mesh.regularizers import laplacian_loss, sdf_sign_change_loss
from earthsynth.mesh.zsdf import ZMonotonicSDF, ZSDFConfig
from earthsynth.render.mesh import render_height, render_height_torch

torch.set_num_threads(1)
BOUNDS = (0.0, 0.0, 64.0, 64.0)
Z_RANGE = (-2.0, 20.0)


def two_boxes(x, y):
    """Ground at 2 m; box A (14 m) straddles the y = 32 seam, box B (9 m) the x = 32 seam of a 2 x 2 split."""
    h = np.full(np.shape(x), 2.0)
    h[(x >= 12) & (x < 28) & (y >= 24) & (y < 40)] = 14.0
    h[(x >= 26) & (x < 38) & (y >= 6) & (y < 18)] = 9.0
    return h


def two_box_points(seed=0, spacing=0.5):
    rng = np.random.default_rng(seed)
    g = np.arange(spacing / 2, 64, spacing)
    x, y = (a.ravel() for a in np.meshgrid(g, g))
    keep = ~((x > 44) & (x < 52) & (y > 44) & (y < 52))          # a hole: no MVS point there
    x, y = x[keep], y[keep]
    return np.stack([x, y, two_boxes(x, y) + rng.normal(0, 0.05, x.shape)], axis=1)


@pytest.fixture(scope="module")
def two_box_run():
    mesh = optimise_geometry(two_box_points(), BOUNDS, Z_RANGE, GeometryConfig.tiny(), seed=0)
    return mesh


# ------------------------------------------------------------------------------------------------ binning


def test_binning_is_eqs_a1_a2():
    box = GridBox((0, 0, 4, 2), (0, 10), (2, 4))              # 1 m cells, rows follow +y
    points = np.array([[0.5, 0.5, 3.0], [0.7, 0.2, 5.0], [3.9, 1.9, 1.0], [4.0, 2.0, 2.0],   # max edge -> last cell
                       [5.0, 1.0, 9.0], [1.5, 0.5, 11.0], [np.nan, 0.5, 1.0]])               # outside / bad
    hm = bin_points(points, box)
    expected = np.full((2, 4), np.nan)
    expected[0, 0], expected[1, 3] = 5.0, 2.0
    np.testing.assert_array_equal(hm.heights_hw, expected)
    assert hm.counts_hw.sum() == 4 and hm.mask_hw.sum() == 2 and hm.valid_fraction == 0.25
    np.testing.assert_array_equal(hm.north_up()[1, 0], 5.0)   # south row last in a north-up raster
    rows, cols, inside = box.cell_index(np.array([[0.0, 0.0], [3.99, 1.01], [-0.1, 1.0]]))
    assert rows.tolist()[:2] == [0, 1] and cols.tolist()[:2] == [0, 3] and inside.tolist() == [True, True, False]


def test_box_mappings_and_sub_boxes():
    box = GridBox((-10, 0, 30, 20), (-5, 15), (4, 8))
    p = np.array([[-10, 0, -5], [30, 20, 15], [10, 10, 5]], float)
    n = box.to_normalised(p)
    np.testing.assert_allclose(n, [[-1, -1, -1], [1, 1, 1], [0, 0, 0]])
    np.testing.assert_allclose(box.from_normalised(n), p)
    np.testing.assert_allclose(box.from_normalised(torch.tensor(n)).numpy(), p)
    sub = box.sub_box(slice(1, 3), slice(2, 8))
    assert sub.bounds_xy == (0.0, 5.0, 30.0, 15.0) and sub.shape_hw == (2, 6) and sub.z_range == box.z_range
    xs, ys = box.cell_centres_xy()
    assert xs[0] == -7.5 and ys[-1] == 17.5
    with pytest.raises(ConfigError):
        GridBox((0, 0, 0, 1), (0, 1), (1, 1))


def test_fill_holes_near_from_the_nearest_cell_deep_from_the_low_side():
    h = np.array([[1.0, np.nan, np.nan, 4.0]])
    np.testing.assert_array_equal(fill_holes(h), [[1.0, 1.0, 4.0, 4.0]])       # a narrow gap splits
    occluded = np.full((1, 12), np.nan)
    occluded[0, :2], occluded[0, -1] = 30.0, 2.0                                # roof | hole | ground
    filled = fill_holes(occluded, near_cells=2.0, low_quantile=0.0)
    np.testing.assert_array_equal(filled[0], [30, 30, 30, 30, 2, 2, 2, 2, 2, 2, 2, 2])
    with pytest.raises(ConfigError):
        fill_holes(np.full((2, 2), np.nan))


# ------------------------------------------------------------------------------------------------ the step


def _random_field(seed=0):
    gen = torch.Generator().manual_seed(seed)
    field = ZMonotonicSDF(ZSDFConfig(grid_hw=(10, 12), sharpness=20.0))
    with torch.no_grad():
        field.offsets_hw.copy_(0.4 * torch.rand((10, 12), generator=gen) - 0.3)
        field.offsets_hw[3:6, 4:8] += 0.5                      # a "building"
    return field


def test_fast_surface_matches_extract_isosurface_values_and_gradients():
    field = _random_field()
    samples = (14, 11, 13)
    sampler = GridSampler(field, samples)
    reference_grid = field.sample_grid(samples, sampler.lo, sampler.hi)
    torch.testing.assert_close(sampler.grid(), reference_grid)
    vertices, faces, _ = open_surface(sampler)
    ref_vertices, ref_faces = extract_isosurface(reference_grid, sampler.lo, sampler.hi, closed=False)
    assert torch.equal(faces, ref_faces)
    torch.testing.assert_close(vertices, ref_vertices)
    weights = torch.randn(vertices.shape, generator=torch.Generator().manual_seed(1))
    (fast,) = torch.autograd.grad((vertices * weights).sum(), field.offsets_hw)
    (slow,) = torch.autograd.grad((ref_vertices * weights).sum(), field.offsets_hw)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


def test_fast_regularisers_match_the_reference_ones():
    field = _random_field(2)
    sampler = GridSampler(field, (12, 12, 12))
    vertices, faces, grid = open_surface(sampler)
    fast = sign_change_loss(sampler, grid)
    slow = sdf_sign_change_loss(sampler.grid())
    torch.testing.assert_close(fast, slow)
    (g_fast,) = torch.autograd.grad(fast, field.offsets_hw)
    (g_slow,) = torch.autograd.grad(slow, field.offsets_hw)
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-4, atol=1e-6)
    interior = ~rim_vertices(vertices, sampler.lo, sampler.hi)
    assert 0 < interior.sum() < len(vertices)
    torch.testing.assert_close(interior_laplacian_loss(vertices, faces, interior),
                               laplacian_loss(vertices, faces, interior))


def test_top_down_render_is_render_height_torch():
    field = _random_field(3)
    vertices, faces, _ = open_surface(GridSampler(field, (12, 12, 12)))
    heights, normals, covered = top_down_render(vertices, faces, (16, 20), torch.tensor([30.0, 20.0, 10.0]))
    pixel = (vertices + torch.tensor([1.0, 1.0, 0.0])) * torch.tensor([10.0, 8.0, 1.0])
    reference = render_height_torch(pixel, faces, OrthoCamera.top_down(0.0, 16.0, 1.0, 20, 16)).flip(0)
    assert torch.equal(covered, torch.isfinite(reference))
    torch.testing.assert_close(heights[covered], reference[covered])
    assert torch.allclose(normals[covered].norm(dim=-1), torch.ones(())) and (normals[covered][:, 2] != 0).all()


# ------------------------------------------------------------------------------------------------ optimisation


def test_config_defaults_and_checks():
    paper = GeometryConfig.paper()
    assert (paper.divisions, paper.heightmap_resolution, paper.zsdf_resolution, paper.grid_resolution,
            paper.steps, paper.lr, paper.curve_sharpness) == ((2, 2), 1024, 256, 128, 2000, 0.01, 80.0)
    assert (paper.weights.laplacian, paper.weights.normal_tv, paper.weights.sdf_sign) == (0.5, 0.01, 0.1)
    assert GeometryConfig(grid_resolution=64).curve_sharpness == 40.0      # the paper's k per grid step
    assert GeometryConfig().without_regularizers().weights.laplacian == 0.0
    with pytest.raises(ConfigError):
        GeometryConfig(heightmap_resolution=100, zsdf_resolution=64)
    with pytest.raises(ConfigError):
        GeometryConfig(divisions=(0, 2))


def test_divisions_tile_the_node_grid_with_halos():
    config = GeometryConfig.tiny()
    scene = GridBox(BOUNDS, Z_RANGE, (64, 64))
    divisions = plan_divisions(scene, config)
    owned = np.zeros((32, 32), int)
    for d in divisions:
        rows = range(d.node_rows.start, d.node_rows.stop)[d.own_rows]
        cols = range(d.node_cols.start, d.node_cols.stop)[d.own_cols]
        owned[rows.start:rows.stop, cols.start:cols.stop] += 1
        assert d.box.shape_hw == (2 * len(range(d.node_rows.start, d.node_rows.stop)),
                                  2 * len(range(d.node_cols.start, d.node_cols.stop)))
    assert (owned == 1).all()
    assert divisions[0].box.bounds_xy == (0.0, 0.0, 36.0, 36.0)            # 16 nodes + a 2-node halo, 2 m each


def test_loss_decreases_and_heights_match(two_box_run):
    report = two_box_run.metadata["geometry"]
    for division in report["divisions"]:
        assert division["last"]["total"] < division["first"]["total"]
    first, last = (sum(d[key]["height"] for d in report["divisions"]) for key in ("first", "last"))
    assert last < 0.8 * first
    heights = render_height(two_box_run.vertices_n3, two_box_run.faces_f3, OrthoCamera.top_down(0, 64, 0.5, 128, 128))
    x, y = np.meshgrid(np.arange(128) * 0.5 + 0.25, 64 - (np.arange(128) * 0.5 + 0.25))
    truth = two_boxes(x, y)
    from scipy import ndimage
    away = ndimage.minimum_filter(truth, 9) == ndimage.maximum_filter(truth, 9)    # >= 2 m from a box edge
    away[:2], away[-2:], away[:, :2], away[:, -2:] = False, False, False, False    # the rim bevel (1 m here)
    assert np.isfinite(heights[2:-2, 2:-2]).all()
    error = np.abs(heights - truth)[away]
    assert np.median(error) < 0.2 and np.quantile(error, 0.95) < 0.5


def test_merged_mesh_is_watertight_without_seam_jump(two_box_run):
    assert is_watertight(two_box_run)
    lo, hi = two_box_run.vertices_n3.min(0), two_box_run.vertices_n3.max(0)
    np.testing.assert_allclose([lo[0], lo[1], lo[2], hi[0], hi[1]], [0, 0, -2, 64, 64], atol=1e-9)
    step = 0.125                                 # pixel centres 1/16 m either side of x = 32 and y = 32
    heights = render_height(two_box_run.vertices_n3, two_box_run.faces_f3, OrthoCamera.top_down(0, 64, step, 512, 512))
    x = np.arange(512) * step + step / 2         # column centres; row r is at y = 64 - x[r]
    across_x = heights[:, 256] - heights[:, 255]                 # along y (rows), box B crosses x = 32
    across_y = heights[255, :] - heights[256, :]                 # along x (cols), box A crosses y = 32
    for across, along, edges in ((across_x, 64 - x, (6, 18)), (across_y, x, (12, 28))):
        flat = np.all([np.abs(along - e) > 2.0 for e in edges], axis=0)
        assert np.abs(across[flat]).max() < 0.1
    y = 64 - x
    roof_b = heights[(y >= 8) & (y <= 16)][:, 248:264]           # y in [8, 16], x in [31, 33]
    assert np.abs(roof_b - 9.0).max() < 0.5                      # box B's roof is whole across the seam


def test_deterministic():
    points = two_box_points(seed=1)
    config = GeometryConfig(divisions=(1, 2), heightmap_resolution=32, zsdf_resolution=16, grid_resolution=16,
                            steps=4, halo_cells=2)
    a = optimise_geometry(points, BOUNDS, Z_RANGE, config, seed=5)
    b = optimise_geometry(points, BOUNDS, Z_RANGE, config, seed=5)
    assert np.array_equal(a.vertices_n3, b.vertices_n3) and np.array_equal(a.faces_f3, b.faces_f3)
    assert np.array_equal(a.metadata["offsets_hw"], b.metadata["offsets_hw"])


def test_bad_inputs_raise():
    with pytest.raises(ConfigError):
        optimise_geometry(np.zeros((5, 2)), BOUNDS, Z_RANGE, GeometryConfig.tiny())
    with pytest.raises(ConfigError):
        optimise_geometry(np.full((5, 3), 100.0), BOUNDS, Z_RANGE, GeometryConfig.tiny())   # none inside


# ------------------------------------------------------------------------------------------------ the stage


def _scene_folder(root, points):
    from earthsynth.io.pointcloud import write_point_cloud_ply
    from earthsynth.io.scene import Scene, ViewRecord, save_scene_json, utm_crs_for

    (root / "images").mkdir(parents=True)
    (root / "images" / "v0.tif").write_bytes(b"not read by the geometry stage")
    origin = {"lon": 11.5755, "lat": 48.1374, "alt": 520.0}
    view = ViewRecord("v0", "images/v0.tif", 8, 8, 3, "uint8", 0.5)
    scene = Scene(root, "two_boxes", origin, utm_crs_for(origin["lon"], origin["lat"]), 0.5, (515.0, 545.0),
                  BOUNDS, (view,))
    save_scene_json(scene)
    mvs = root / "mvs"
    mvs.mkdir()
    write_point_cloud_ply(mvs / "points.ply", points)
    return mvs


def test_run_geometry_writes_the_stage_folder(tmp_path):
    from earthsynth.io.raster import read_raster
    from earthsynth.mesh.stage import run_geometry

    mvs = _scene_folder(tmp_path / "scene", two_box_points(spacing=1.0))
    config = GeometryConfig(divisions=(1, 1), heightmap_resolution=32, zsdf_resolution=16, grid_resolution=16,
                            steps=5)
    out = tmp_path / "run" / "geometry"
    result = run_geometry(tmp_path / "scene", mvs, out, config)
    assert sorted(p.name for p in out.iterdir()) == ["dsm_from_mesh.tif", "geometry.json", "mesh.glb"]
    mesh, frame = read_glb(result.mesh_path)
    assert frame is not None and frame.alt0 == 520.0 and is_watertight(mesh)
    meta = json.loads(result.meta_path.read_text())
    assert meta["watertight"] and meta["inputs"]["config"]["steps"] == 5
    assert meta["report"]["divisions"][0]["log"][-1]["step"] == 5
    dsm = read_raster(result.dsm_path)
    heights = dsm.data[0][np.isfinite(dsm.data[0])]
    assert heights.size > 0.5 * dsm.data[0].size
    assert np.median(heights) == pytest.approx(522.0, abs=0.3)          # ground at 2 m ENU + alt 520
    assert run_geometry(tmp_path / "scene", mvs / "points.ply", out, config).skipped
