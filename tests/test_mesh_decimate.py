"""Quadric decimation before the UV atlas: under the face budget, still closed, close to the input, exact
deviation numbers, pass-through of small meshes, clear errors, and no broken mesh ever returned."""

import numpy as np
import pytest
import trimesh

from earthsynth.errors import ConfigError
from earthsynth.mesh.decimate import decimate_mesh, remove_folds, surface_distance
from earthsynth.mesh.naive import naive_mesh_from_dsm

ENU_OFFSET = np.array([500_000.0, 4_100_000.0, 0.0])   # large coordinates: the work must stay precise
MAX_DEVIATION_M = 0.3


def city_dsm(n: int = 48) -> np.ndarray:
    """1 m DSM: a smooth hill (terraced by the voxels), flat roofs and a pitched roof on flat ground."""
    y, x = np.mgrid[0:n, 0:n] + 0.5
    dsm = 2.0 + 4.0 * np.exp(-((x - 12) ** 2 + (y - 34) ** 2) / 60.0)
    dsm[6:16, 26:40] = 14.0
    dsm[24:34, 30:42] = 9.0
    dsm[4:14, 4:16] = 8.0 + 0.6 * np.minimum(np.arange(12), 11 - np.arange(12))[None, :]
    return dsm


def closed(vertices, faces) -> bool:
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    return bool(mesh.is_watertight and mesh.is_winding_consistent)


def volume(vertices, faces) -> float:
    v = vertices - vertices.mean(axis=0)
    return float(np.einsum("ij,ij->i", v[faces[:, 0]], np.cross(v[faces[:, 1]], v[faces[:, 2]])).sum() / 6)


@pytest.fixture(scope="module")
def city():
    vertices, faces = naive_mesh_from_dsm(city_dsm(), 1.0, (0.0, 20.0), 48)
    assert closed(vertices, faces) and len(faces) > 50_000
    return vertices + ENU_OFFSET, faces


@pytest.fixture(scope="module")
def decimated(city):
    return decimate_mesh(*city, target_faces=2000)


def test_decimated_city_is_small_closed_and_close(city, decimated):
    vertices, faces, report = decimated
    assert vertices.dtype == np.float64 and faces.dtype == np.int64
    assert 1800 <= len(faces) <= 2000 < len(city[1]) / 30
    assert report["faces_in"] == len(city[1]) and report["faces_out"] == len(faces) and report["decimated"]
    assert "warning" not in report
    assert closed(vertices, faces)
    assert np.array_equal(np.unique(faces), np.arange(len(vertices)))            # no unreferenced vertex
    assert (np.sort(faces, axis=1)[:, :-1] != np.sort(faces, axis=1)[:, 1:]).all()   # no degenerate face
    assert len(np.unique(np.sort(faces, axis=1), axis=0)) == len(faces)            # no repeated face
    assert volume(vertices, faces) == pytest.approx(volume(*city), rel=0.01)
    # coordinates stay in the input's frame (the centring is undone) and the bounds are kept
    assert np.allclose(vertices.min(0), city[0].min(0), atol=0.05)
    assert np.allclose(vertices.max(0), city[0].max(0), atol=0.05)
    # 30x fewer faces: the terraced hill is simplified, measurably but within the bound
    assert 0.01 < report["max_deviation_m"] < MAX_DEVIATION_M
    assert report["mean_deviation_m"] < 0.01
    assert report["max_deviation_m"] == max(report["out_to_in_max_m"], report["in_to_out_max_m"])
    # the reported deviation is the real one: check it at the output vertices, independently of the report
    d = surface_distance(vertices, *city)
    assert 0.0 < d.max() <= report["out_to_in_max_m"] + 1e-9


def test_flat_faces_collapse_without_error_far_from_the_origin(city):
    # 17x fewer faces only merges coplanar faces on this mesh; done around the centroid, 4,000 km from the
    # ENU origin, that costs nothing (without the centring fast_simplification misplaces vertices by ~0.17 m)
    vertices, faces, report = decimate_mesh(*city, target_faces=4000, deviation_samples=5000)
    assert len(faces) <= 4000 and closed(vertices, faces)
    assert report["max_deviation_m"] < 1e-6


def test_surface_distance_is_exact(city, decimated):
    vertices, faces, _ = decimated
    rng = np.random.default_rng(1)
    points = city[0][rng.choice(len(city[0]), 150, replace=False)] + rng.normal(0, 0.5, (150, 3))
    fast = surface_distance(points, vertices, faces)
    triangles = vertices[faces]
    brute = [np.linalg.norm(trimesh.triangles.closest_point(triangles, np.repeat(p[None], len(faces), 0)) - p,
                            axis=1).min() for p in points]
    assert np.allclose(fast, brute, atol=1e-9)
    # a flat square 2 m below the points: the distance is the height wherever the point is above the square
    square_v = np.array([[0, 0, 0], [10, 0, 0], [10, 10, 0], [0, 10, 0]], float) + ENU_OFFSET
    above = np.array([[5.0, 5.0, 2.0], [1.0, 9.0, 2.0], [13.0, 5.0, 0.0]]) + ENU_OFFSET
    assert np.allclose(surface_distance(above, square_v, np.array([[0, 1, 2], [0, 2, 3]])), [2.0, 2.0, 3.0])


def test_pass_through_when_already_small(city):
    vertices, faces, report = decimate_mesh(*city, target_faces=len(city[1]))
    assert np.array_equal(vertices, city[0]) and np.array_equal(faces, city[1])
    assert report == {"faces_in": len(city[1]), "target_faces": len(city[1]), "faces_out": len(city[1]),
                      "decimated": False, "seconds": 0.0}


def test_bad_input_is_a_config_error(city):
    vertices, faces = city
    nan = vertices.copy()
    nan[3, 2] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        decimate_mesh(nan, faces, target_faces=100)
    with pytest.raises(ConfigError, match="non-empty"):
        decimate_mesh(vertices, np.zeros((0, 3), np.int64), target_faces=100)
    with pytest.raises(ConfigError, match="indices"):
        decimate_mesh(vertices, np.vstack([faces, [[0, 1, len(vertices)]]]), target_faces=100)
    with pytest.raises(ConfigError, match="target_faces"):
        decimate_mesh(vertices, faces, target_faces=0)


def test_remove_folds():
    faces = np.array([[0, 1, 2], [1, 0, 3], [3, 0, 1],     # (0 1 3) and (3 0 1) face opposite ways: a fin
                      [2, 3, 4], [3, 4, 2],                # the same face twice, same orientation: keep one
                      [4, 4, 5]])                          # degenerate
    assert remove_folds(faces).tolist() == [[0, 1, 2], [2, 3, 4]]


def test_broken_decimation_is_retried_then_refused(city, monkeypatch):
    import fast_simplification

    real = fast_simplification.simplify
    calls = []

    def opens_a_hole_at(bad_aggressions):
        def simplify(points, triangles, *, target_count, agg):
            calls.append(agg)
            v, f = real(points, triangles, target_count=target_count, agg=agg)
            return (v, f[1:]) if agg in bad_aggressions else (v, f)
        return simplify

    monkeypatch.setattr(fast_simplification, "simplify", opens_a_hole_at({7.0}))
    vertices, faces, report = decimate_mesh(*city, target_faces=20_000, deviation_samples=500)
    assert calls == [7.0, 5.0] and report["aggression"] == 5.0 and closed(vertices, faces)
    assert [a["closed"] for a in report["attempts"]] == [False, True]

    monkeypatch.setattr(fast_simplification, "simplify", opens_a_hole_at({7.0, 5.0, 3.0}))
    with pytest.warns(RuntimeWarning, match="closed"):
        vertices, faces, report = decimate_mesh(*city, target_faces=20_000)
    assert np.array_equal(vertices, city[0]) and np.array_equal(faces, city[1])     # the input, unchanged
    assert not report["decimated"] and "unchanged" in report["warning"]
