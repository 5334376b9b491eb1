"""3DGS PLY in the Inria layout."""

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.io.splats import (SH_C0, GaussianSplats, read_splats_ply, rgb_to_sh_dc, sh_dc_to_rgb,
                                  splat_property_names, write_splats_ply)


def random_splats(n=200, degree=3, seed=0) -> GaussianSplats:
    rng = np.random.default_rng(seed)
    return GaussianSplats(means_n3=rng.normal(0, 10, (n, 3)), quats_n4=rng.normal(0, 1, (n, 4)),
                          log_scales_n3=rng.normal(-2, 0.5, (n, 3)), opacity_logits_n=rng.normal(0, 2, n),
                          sh_n_k_3=rng.normal(0, 0.5, (n, (degree + 1) ** 2, 3)))


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_is_exact(tmp_path, degree):
    splats = random_splats(degree=degree, seed=degree)
    back = read_splats_ply(write_splats_ply(tmp_path / "s.ply", splats))
    assert back.sh_degree == degree and back.num == 200
    for name in ("means_n3", "quats_n4", "log_scales_n3", "opacity_logits_n", "sh_n_k_3"):
        np.testing.assert_array_equal(getattr(back, name), getattr(splats, name), err_msg=name)
    assert [p.name for p in tmp_path.iterdir()] == ["s.ply"]


def test_header_is_the_inria_layout(tmp_path):
    ply = PlyData.read(str(write_splats_ply(tmp_path / "s.ply", random_splats(n=3, degree=3))))
    names = [p.name for p in ply["vertex"].properties]
    assert names == splat_property_names(3)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:54] == [f"f_rest_{i}" for i in range(45)]
    assert names[54:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert all(p.val_dtype == "f4" for p in ply["vertex"].properties)
    assert ply.byte_order == "<" and not ply.text


def test_f_rest_is_channel_major_like_inria(tmp_path):
    n, degree = 2, 2
    k = (degree + 1) ** 2
    sh = np.zeros((n, k, 3), np.float32)
    for i in range(n):
        for kk in range(k):
            for c in range(3):
                sh[i, kk, c] = 1000 * i + 10 * kk + c          # readable: 10 * coefficient + channel
    splats = GaussianSplats(np.zeros((n, 3)), np.tile([1, 0, 0, 0], (n, 1)), np.zeros((n, 3)), np.zeros(n), sh)
    vertex = PlyData.read(str(write_splats_ply(tmp_path / "s.ply", splats)))["vertex"]
    for i in range(n):
        for c in range(3):
            assert vertex[f"f_dc_{c}"][i] == sh[i, 0, c]
            for kk in range(1, k):
                assert vertex[f"f_rest_{c * (k - 1) + kk - 1}"][i] == sh[i, kk, c]
    # exactly what Inria's save_ply does: _features_rest (N, K-1, 3).transpose(1, 2).flatten(start_dim=1)
    inria = sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1)
    stored = np.stack([vertex[f"f_rest_{j}"] for j in range(3 * (k - 1))], axis=1)
    np.testing.assert_array_equal(stored, inria)
    assert stored[0, :3].tolist() == [10, 20, 30]                 # channel 0 of coefficients 1, 2, 3


def _write_raw_ply(path, names):
    vertex = np.zeros(4, dtype=[(name, "<f4") for name in names])
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))
    return path


def test_missing_properties_are_an_input_file_error(tmp_path):
    path = _write_raw_ply(tmp_path / "points.ply", ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"])
    with pytest.raises(InputFileError) as info:
        read_splats_ply(path)
    message = str(info.value)
    assert "points.ply" in message and "scale_0" in message and "rot_3" in message and "What to do" in message


def test_wrong_number_of_f_rest_is_an_input_file_error(tmp_path):
    names = [n for n in splat_property_names(0)] + [f"f_rest_{i}" for i in range(10)]
    with pytest.raises(InputFileError, match="10 f_rest"):
        read_splats_ply(_write_raw_ply(tmp_path / "odd.ply", names))


def test_properties_in_another_order_and_without_normals_are_read(tmp_path):
    names = [n for n in splat_property_names(1) if n not in ("nx", "ny", "nz")][::-1]
    vertex = np.zeros(2, dtype=[(name, "<f4") for name in names])
    for j in range(9):
        vertex[f"f_rest_{j}"] = j
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp_path / "rev.ply"))
    splats = read_splats_ply(tmp_path / "rev.ply")
    assert splats.sh_degree == 1
    np.testing.assert_array_equal(splats.sh_n_k_3[0, 1:, :], np.arange(9).reshape(3, 3).T)


def test_truncated_and_missing_files(tmp_path):
    blob = write_splats_ply(tmp_path / "ok.ply", random_splats(n=100, degree=1)).read_bytes()
    (tmp_path / "cut.ply").write_bytes(blob[: len(blob) // 2])
    for name in ("cut.ply", "missing.ply"):
        with pytest.raises(InputFileError, match=name):
            read_splats_ply(tmp_path / name)


def test_nan_and_zero_quaternions_are_refused_on_write(tmp_path):
    bad = random_splats(n=5)
    bad.means_n3[2, 0] = np.nan
    with pytest.raises(ConfigError, match="means_n3 holds 1 NaN"):
        write_splats_ply(tmp_path / "bad.ply", bad)
    bad = random_splats(n=5)
    bad.quats_n4[1] = 0
    with pytest.raises(ConfigError, match="zero quaternions"):
        write_splats_ply(tmp_path / "bad.ply", bad)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="sh_n_k_3"):
        GaussianSplats(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 3)), np.zeros(2), np.zeros((2, 5, 3)))


def test_dc_colour_helpers():
    rgb = np.array([[0.0, 0.5, 1.0]])
    np.testing.assert_allclose(sh_dc_to_rgb(rgb_to_sh_dc(rgb)), rgb, atol=1e-6)
    assert rgb_to_sh_dc([[0.5 + SH_C0, 0.5, 0.5]])[0, 0] == pytest.approx(1.0)
