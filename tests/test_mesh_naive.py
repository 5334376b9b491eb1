"""The naive DSM -> voxels -> iso-surface baseline: closed, in metres, oriented, quantised as designed."""

import math
import time

import numpy as np
import pytest
import torch
from affine import Affine

from earthsynth.errors import ConfigError
from earthsynth.io.mesh import TexturedMesh, is_watertight
from earthsynth.mesh.naive import naive_mesh_from_dsm


def _box_dsm():
    dsm = np.full((40, 60), 10.0)
    dsm[10:24, 21:45] = 30.0                       # a 14 x 24 px building, 20 m tall
    return dsm


def _volume(vertices, faces) -> float:
    v = vertices
    return float(np.einsum("ij,ij->i", v[faces[:, 0]], np.cross(v[faces[:, 1]], v[faces[:, 2]])).sum() / 6)


def test_box_building_with_a_gsd():
    dsm = _box_dsm()
    # R = 20: voxel columns of 3 x 2 px and 2 m layers, aligned with the building's edges and heights
    vertices, faces = naive_mesh_from_dsm(dsm, 0.5, z_range=(0.0, 40.0), resolution=20)
    assert vertices.dtype == np.float64 and faces.dtype == np.int64
    assert is_watertight(TexturedMesh(vertices, faces))
    # footprint: pixel edges; top-left pixel centre at (0, 0), north-up (rows go to -y)
    assert np.allclose(vertices.min(0), [-0.25, -(40 - 0.5) * 0.5, 0.0])
    assert np.allclose(vertices.max(0)[:2], [(60 - 0.5) * 0.5, 0.25])
    assert vertices[:, 2].max() == pytest.approx(30.0)    # the roof lies on a voxel face
    assert set(np.round(vertices[:, 2], 9)) >= {0.0, 10.0, 30.0}
    expected = 0.5 * 0.5 * np.sum(dsm)                # solid between z = 0 and the DSM
    assert _volume(vertices, faces) > 0               # outward faces despite the north-up mirror
    assert abs(_volume(vertices, faces) - expected) / expected < 0.03   # edges are chamfered, not square


def test_affine_transform_places_the_mesh_in_map_coordinates():
    dsm = _box_dsm()
    transform = Affine(2.0, 0.0, 500000.0, 0.0, -2.0, 4100000.0)     # top-left corner of the raster
    vertices, faces = naive_mesh_from_dsm(dsm, transform, (0.0, 40.0), 24)
    assert np.allclose(vertices.min(0)[:2], [500000.0, 4100000.0 - 80.0])
    assert np.allclose(vertices.max(0)[:2], [500000.0 + 120.0, 4100000.0])
    assert _volume(vertices, faces) > 0
    same, _ = naive_mesh_from_dsm(dsm, (2.0, 0.0, 500000.0, 0.0, -2.0, 4100000.0), (0.0, 40.0), 24)
    assert np.array_equal(same, vertices)


def test_stair_steps_and_holes_of_the_baseline():
    slope = np.tile(np.linspace(0.0, 10.0, 32), (32, 1))     # a smooth ramp becomes terraces
    vertices, faces = naive_mesh_from_dsm(slope, 1.0, (-1.0, 11.0), 24)
    assert is_watertight(TexturedMesh(vertices, faces))
    dz = 12.0 / 24
    top = vertices[vertices[:, 2] > -1.0 + 1e-9, 2]
    levels = (top - (-1.0)) / (0.5 * dz)                      # every vertex on a voxel face or half way
    assert np.allclose(levels, np.round(levels))
    holed = slope.copy()
    holed[10:20, 10:20] = np.nan                              # no data: an empty column, a hole
    v2, f2 = naive_mesh_from_dsm(holed, 1.0, (-1.0, 11.0), 24)
    assert is_watertight(TexturedMesh(v2, f2))                # a tunnel, still a closed surface
    assert _volume(v2, f2) < _volume(vertices, faces)


def test_resolution_128_is_quick():
    dsm = np.tile(np.linspace(5.0, 8.0, 200), (150, 1))
    dsm[30:70, 40:90] += 20.0
    dsm[100:140, 120:180] += 12.0
    start = time.perf_counter()
    vertices, faces = naive_mesh_from_dsm(torch.from_numpy(dsm), 0.5, (0.0, 30.0), 128)
    elapsed = time.perf_counter() - start
    print(f"naive 128: {elapsed:.2f} s, {len(faces)} faces")
    assert len(faces) > 10000 and np.isfinite(vertices).all() and elapsed < 10


def test_bad_inputs_are_reported():
    dsm = _box_dsm()
    with pytest.raises(ConfigError, match="z_range"):
        naive_mesh_from_dsm(dsm, 1.0, (0.0, 20.0), 32)
    with pytest.raises(ConfigError, match="resolution"):
        naive_mesh_from_dsm(dsm, 1.0, (0.0, 40.0), 1)
    with pytest.raises(ConfigError, match="GSD"):
        naive_mesh_from_dsm(dsm, -1.0, (0.0, 40.0), 32)
    with pytest.raises(ConfigError, match="finite"):
        naive_mesh_from_dsm(np.full((4, 4), math.nan), 1.0, (0.0, 40.0), 32)
    with pytest.raises(ConfigError, match="singular"):
        naive_mesh_from_dsm(dsm, (1.0, 0.0, 0.0, 0.0, 0.0, 0.0), (0.0, 40.0), 32)
