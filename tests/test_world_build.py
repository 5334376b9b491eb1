"""The synthetic world: determinism, watertightness, UVs, buildings on the ground, LoD pairs, cars."""

import time

import numpy as np
import pytest
import trimesh

from earthsynth.errors import ConfigError
from earthsynth.world import PART_NAMES, WorldConfig, build_world, sample_cars
from earthsynth.world.city import FOUNDATION_DEPTH_M
from earthsynth.world.landcover import LANDCOVER_NAMES, PARKING, ROAD
from earthsynth.world.noise import fbm_grid, fbm_points
from earthsynth.world.primitives import PART_ID, points_in_polygon

SMALL = dict(size_m=120.0, min_towers=1)


@pytest.fixture(scope="module")
def world():
    start = time.perf_counter()
    w = build_world(WorldConfig(seed=0))
    print(f"\nbuild_world(300 m): {time.perf_counter() - start:.2f} s, full {w.mesh_full.num_faces} faces, "
          f"lod {w.mesh_lod.num_faces} faces, atlas {w.mesh_full.texture_hw3.shape}, {len(w.buildings)} buildings, "
          f"{len(w.trees)} trees, facade texel {w.mesh_full.metadata['facade_texel_m']} m")
    return w


def _mesh_arrays(w):
    return [w.mesh_full.vertices_n3, w.mesh_full.faces_f3, w.mesh_full.uvs_n2, w.mesh_full.texture_hw3,
            w.mesh_lod.vertices_n3, w.mesh_lod.faces_f3, w.mesh_lod.texture_hw3, w.landcover_hw]


def test_same_seed_same_bytes_and_different_seeds_differ():
    a, b = build_world(WorldConfig(seed=5, **SMALL)), build_world(WorldConfig(seed=5, **SMALL))
    for x, y in zip(_mesh_arrays(a), _mesh_arrays(b)):
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    c = build_world(WorldConfig(seed=6, **SMALL))
    assert a.mesh_full.vertices_n3.shape != c.mesh_full.vertices_n3.shape or \
        not np.array_equal(a.mesh_full.vertices_n3, c.mesh_full.vertices_n3)
    assert not np.array_equal(a.landcover_hw, c.landcover_hw)


def test_noise_grid_and_point_forms_agree():
    xs, ys = np.linspace(-37.0, 41.0, 57), np.linspace(25.0, -12.0, 33)
    grid = fbm_grid(xs, ys, wavelength_m=20.0, seed=4, octaves=5, min_wavelength_m=2.0)
    points = fbm_points(*np.meshgrid(xs, ys), wavelength_m=20.0, seed=4, octaves=5, min_wavelength_m=2.0)
    np.testing.assert_array_equal(grid, points)
    assert 0.1 < grid.std() < 0.6


@pytest.mark.parametrize("lod", [False, True])
def test_meshes_are_watertight_with_uvs_in_the_unit_square(world, lod):
    mesh = world.mesh_lod if lod else world.mesh_full
    welded = trimesh.Trimesh(mesh.vertices_n3, mesh.faces_f3, process=False)
    welded.merge_vertices(merge_tex=True, merge_norm=True)        # weld by position only (UV seams)
    _, uses = np.unique(welded.edges_sorted, axis=0, return_counts=True)
    assert np.all(uses == 2), f"edges used {np.unique(uses)} times"
    assert welded.is_winding_consistent and welded.volume > 0
    assert mesh.uvs_n2.dtype == np.float32 and np.all((mesh.uvs_n2 >= 0) & (mesh.uvs_n2 <= 1))
    assert mesh.texture_hw3.dtype == np.uint8 and max(mesh.texture_hw3.shape[:2]) <= 4096
    assert 50_000 <= world.mesh_full.num_faces <= 300_000


def test_terrain_is_the_ground_height_and_the_pond_is_flat(world):
    top = world.face_parts_full == PART_ID["terrain"]
    v = world.mesh_full.vertices_n3[np.unique(world.mesh_full.faces_f3[top])]
    surface = v[v[:, 2] > world.height_range[0] - 1e-9]
    np.testing.assert_allclose(world.ground_height(surface[:, 0], surface[:, 1]), surface[:, 2], atol=1e-9)
    pond = world.terrain.ponds[0]
    wet = surface[pond.signed_distance(surface[:, 0], surface[:, 1]) < -0.5]
    assert len(wet) > 20 and np.all(wet[:, 2] == pond.water_z)
    relief = np.ptp(surface[:, 2])
    assert 1.0 < relief < 12.0


def test_buildings_inside_bounds_on_the_ground_and_spanning_heights(world):
    xmin, ymin, xmax, ymax = world.bounds_xy
    for b in world.buildings:
        fp = b.footprint_n2
        assert np.all((fp >= [xmin, ymin]) & (fp <= [xmax, ymax]))
        lowest = world.ground_height(fp[:, 0], fp[:, 1]).min()
        assert b.base_z == pytest.approx(lowest - FOUNDATION_DEPTH_M, abs=0.35)
        assert b.ground_z == pytest.approx(float(world.ground_height(*b.center_xy)), abs=1e-9)
    heights = np.array([b.height_m for b in world.buildings])
    assert heights.min() < 12 and np.any((heights > 15) & (heights < 40)) and heights.max() >= 50
    assert {b.roof_kind for b in world.buildings} == {"flat", "gable", "hip"}
    assert {b.shape for b in world.buildings} >= {"rect", "L"}


def test_lod_has_the_same_footprints_and_heights(world):
    for mesh, parts, owners, full in ((world.mesh_lod, world.face_parts_lod, world.face_buildings_lod, False),
                                      (world.mesh_full, world.face_parts_full, world.face_buildings_full, True)):
        body = np.isin(parts, [PART_ID["wall"], PART_ID["roof"]])
        for b in world.buildings[::5]:
            v = mesh.vertices_n3[np.unique(mesh.faces_f3[body & (owners == b.index)])]
            np.testing.assert_allclose(v[:, :2].min(0), b.footprint_n2.min(0), atol=1e-9)
            np.testing.assert_allclose(v[:, :2].max(0), b.footprint_n2.max(0), atol=1e-9)
            assert v[:, 2].min() == pytest.approx(b.base_z)
            assert v[:, 2].max() == pytest.approx(b.top_z if full else b.roof_top_z)
    assert not np.any(world.face_parts_lod == PART_ID["roof_detail"])
    assert np.any(world.face_parts_full == PART_ID["roof_detail"])


def _wall_colour_std(mesh, parts, owners, rng):
    """Mean over buildings of the colour spread sampled on their vertical wall faces."""
    tris = mesh.vertices_n3[mesh.faces_f3]
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    vertical = (parts == PART_ID["wall"]) & (np.abs(normals[:, 2]) < 1e-6 * np.linalg.norm(normals, axis=1) + 1e-9)
    spreads = []
    h, w = mesh.texture_hw3.shape[:2]
    for b in np.unique(owners[vertical])[:40]:
        faces = np.nonzero(vertical & (owners == b))[0]
        pick = rng.choice(faces, size=400)
        bary = rng.dirichlet(np.ones(3), size=400)
        uv = np.einsum("nk,nkc->nc", bary, mesh.uvs_n2[mesh.faces_f3[pick]])
        rows, cols = np.clip((uv[:, 1] * h).astype(int), 0, h - 1), np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
        texel = mesh.texture_hw3[rows, cols]
        spreads.append(texel.astype(float).std(axis=0).mean())
    return float(np.mean(spreads))


def test_facades_have_windows_in_full_detail_only(world):
    full = _wall_colour_std(world.mesh_full, world.face_parts_full, world.face_buildings_full, np.random.default_rng(0))
    lod = _wall_colour_std(world.mesh_lod, world.face_parts_lod, world.face_buildings_lod, np.random.default_rng(0))
    print(f"\nwall colour spread: full {full:.1f}, LoD {lod:.1f} (0..255)")
    assert full > 15.0 and lod < 2.0


def test_landcover_has_every_class_and_blocks_are_polygons(world):
    present = set(np.unique(world.landcover_hw))
    assert present == set(range(len(LANDCOVER_NAMES)))
    assert len(world.layout.blocks) >= 9
    for block in world.layout.blocks:
        assert block.polygon_n2.shape[1] == 2 and len(block.polygon_n2) >= 3
    # Full texture has the fine detail; the LoD one is its blurred, down-sampled version.
    r, c = world.region_origins["topdown"]
    h, w = world.grid.size_px
    full = world.mesh_full.texture_hw3[r:r + h, c:c + w].astype(float)
    lod = world.mesh_lod.texture_hw3[r:r + h, c:c + w].astype(float)
    assert np.abs(np.diff(full, axis=1)).mean() > 2.0 * np.abs(np.diff(lod, axis=1)).mean()
    assert np.abs(full.mean((0, 1)) - lod.mean((0, 1))).max() < 2.0


def test_cars_sit_on_roads_and_change_with_the_rng(world):
    cars = sample_cars(world, np.random.default_rng(1), 30)
    again = sample_cars(world, np.random.default_rng(1), 30)
    other = sample_cars(world, np.random.default_rng(2), 30)
    assert cars.metadata["count"] == 30 and cars.num_faces == 30 * 24
    assert np.array_equal(cars.vertices_n3, again.vertices_n3)
    assert not np.array_equal(cars.vertices_n3, other.vertices_n3)
    assert cars.texture_hw3 is world.mesh_full.texture_hw3
    centres = cars.vertices_n3.reshape(-1, 16, 3)[:, :8].mean(axis=1)       # body box of each car
    col_row = np.floor(world.grid.texel_of(centres[:, 0], centres[:, 1])).astype(int)
    assert np.isin(world.landcover_hw[col_row[:, 1], col_row[:, 0]], [ROAD, PARKING]).all()
    assert np.all(np.abs(centres[:, 2] - 0.45 - world.ground_height(centres[:, 0], centres[:, 1])) < 1e-6)
    for b in world.buildings:
        assert not points_in_polygon(centres[:, 0], centres[:, 1], b.footprint_n2).any()
    with pytest.raises(ConfigError):
        sample_cars(world, np.random.default_rng(0), -1)


def test_part_labels_cover_every_face(world):
    assert len(world.face_parts_full) == world.mesh_full.num_faces
    names = {PART_NAMES[k] for k in np.unique(world.face_parts_full)}
    assert names == {"terrain", "wall", "roof", "roof_detail", "trunk", "crown"}


@pytest.mark.parametrize("bad", [dict(size_m=10.0), dict(ground_texel_m=0.0), dict(tower_fraction=2.0),
                                 dict(size_m=2000.0)])
def test_bad_config_is_refused(bad):
    with pytest.raises(ConfigError):
        WorldConfig(**bad)
