"""Point-cloud P / R / F1 / Chamfer (Orbit to Ground App. C.3): closed-form cases, mesh sampling, the GSD rule."""

import numpy as np
import pytest

from earthsynth.errors import ConfigError
from earthsynth.metrics.geometry_points import (THRESHOLD_PER_GSD, crop_points, gsd_threshold_m, mesh_point_metrics,
                                                point_cloud_metrics, sample_mesh_points)


def _lattice(spacing=1.0, n=12):
    g = np.arange(n) * spacing
    x, y, z = np.meshgrid(g, g, g[:3], indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


def _square(size=10.0, z=0.0):
    vertices = np.array([[0, 0, z], [size, 0, z], [size, size, z], [0, size, z]], float)
    return vertices, np.array([[0, 1, 2], [0, 2, 3]])


def test_identical_sets_are_perfect():
    points = _lattice()
    m = point_cloud_metrics(points, points.copy(), threshold_m=0.1)
    assert m["precision"] == m["recall"] == m["f1"] == 1.0
    assert m["chamfer"] == 0.0 and m["n_est"] == m["n_truth"] == len(points)


def test_shifted_copy_has_the_shift_as_chamfer():
    points = _lattice(spacing=1.0)
    shift = 0.3                                   # < half the spacing: every nearest neighbour is the copy
    shifted = points + np.array([0.0, 0.0, shift])
    inside = point_cloud_metrics(shifted, points, threshold_m=0.5)
    assert inside["chamfer"] == pytest.approx(shift) and inside["f1"] == 1.0
    outside = point_cloud_metrics(shifted, points, threshold_m=0.2)
    assert outside["precision"] == outside["recall"] == outside["f1"] == 0.0
    assert outside["chamfer"] == pytest.approx(shift)


def test_one_sided_miss_splits_precision_and_recall():
    truth = _lattice(spacing=1.0, n=10)
    est = np.concatenate([truth, truth[:250] + np.array([100.0, 0.0, 0.0])])   # 250 far extra points
    m = point_cloud_metrics(est, truth, threshold_m=0.1)
    assert m["recall"] == 1.0
    assert m["precision"] == pytest.approx(len(truth) / len(est))
    assert m["f1"] == pytest.approx(2 * m["precision"] / (m["precision"] + 1.0))
    assert m["completeness"] == 0.0 and m["chamfer"] == pytest.approx(0.5 * m["accuracy"])


def test_mesh_samples_are_on_the_mesh_uniform_and_seeded():
    vertices, faces = _square(10.0, z=2.0)
    a = sample_mesh_points(vertices, faces, 20000, seed=3)
    assert np.array_equal(a, sample_mesh_points(vertices, faces, 20000, seed=3))
    assert not np.array_equal(a, sample_mesh_points(vertices, faces, 20000, seed=4))
    assert np.allclose(a[:, 2], 2.0) and a[:, :2].min() >= 0 and a[:, :2].max() <= 10 + 1e-9
    counts, _, _ = np.histogram2d(a[:, 0], a[:, 1], bins=4, range=[[0, 10], [0, 10]])
    assert counts.min() > 0.8 * counts.mean()     # area-uniform over both triangles


def test_mesh_against_points_on_it_and_shifted():
    vertices, faces = _square(10.0)
    truth = _lattice(spacing=0.25, n=41)
    truth = truth[truth[:, 2] == 0.0]
    on = mesh_point_metrics(vertices, faces, truth, threshold_m=0.2, samples=20000, seed=0)
    assert on["f1"] == 1.0 and on["chamfer"] < 0.1
    lifted = mesh_point_metrics(vertices + [0, 0, 1.0], faces, truth, threshold_m=0.5, samples=20000, seed=0)
    assert lifted["f1"] == 0.0 and lifted["chamfer"] == pytest.approx(1.0, abs=0.05)


def test_crop_and_z_min():
    points = np.array([[0, 0, 0], [5, 5, -3], [5, 5, 1], [20, 5, 1]], float)
    assert np.array_equal(crop_points(points, (1, 1, 10, 10), z_min=-1), points[[2]])
    vertices, faces = _square(10.0)
    floor = np.concatenate([vertices, vertices + [20, 0, 0]])        # a second square outside the crop
    m = mesh_point_metrics(floor, np.concatenate([faces, faces + 4]), points[[2]] - [0, 0, 1], threshold_m=0.1,
                           samples=5000, seed=1, bounds_xy=(0, 0, 10, 10))
    assert m["n_truth"] == 1 and m["recall"] == 1.0 and m["n_est"] < 5000


def test_gsd_threshold_rule():
    # App. C.3: 0.036 MatrixCity units (100 m) at 0.31 m/px -> 3.6 m; proportional to the GSD
    assert gsd_threshold_m(0.31) == pytest.approx(3.6)
    assert gsd_threshold_m(0.05) == pytest.approx(0.58, abs=0.01)   # ~ the aerial 0.006 units = 0.6 m
    assert THRESHOLD_PER_GSD == pytest.approx(11.61, abs=0.01)
    with pytest.raises(ConfigError):
        gsd_threshold_m(0.0)


def test_bad_inputs_raise():
    with pytest.raises(ConfigError):
        point_cloud_metrics(np.zeros((3, 2)), np.zeros((3, 3)), threshold_m=1.0)
    with pytest.raises(ConfigError):
        point_cloud_metrics(np.zeros((3, 3)), np.zeros((3, 3)), threshold_m=0.0)
    with pytest.raises(ConfigError):
        point_cloud_metrics(np.full((3, 3), np.nan), np.zeros((3, 3)), threshold_m=1.0)
    with pytest.raises(ConfigError):
        sample_mesh_points(np.zeros((3, 3)), np.array([[0, 1, 2]]), 10)     # zero area
