"""compare_dsm on arrays and rasters with closed-form answers: shifts, known error patterns, holes, regridding."""

import numpy as np
import pytest
from affine import Affine

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.io.raster import write_raster
from earthsynth.metrics.geometry import compare_dsm

CRS = "EPSG:32740"


def _reference(shape=(40, 50)):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    return 2300.0 + 0.3 * cols - 0.2 * rows


def test_identical_dsm_is_perfect():
    ref = _reference()
    m = compare_dsm(ref.copy(), ref)
    assert m["mae"] == m["rmse"] == m["median_abs"] == m["nmad"] == m["vertical_shift"] == 0.0
    assert m["completeness"] == m["completeness_valid"] == 1.0
    assert m["n_reference"] == m["n_compared"] == ref.size


@pytest.mark.parametrize("shift", [-2.5, 0.7])
def test_constant_shift_is_the_error_without_alignment_and_the_shift_with_it(shift):
    ref = _reference()
    raw = compare_dsm(ref + shift, ref, align="none")
    assert raw["mae"] == pytest.approx(abs(shift)) and raw["rmse"] == pytest.approx(abs(shift))
    assert raw["vertical_shift"] == 0.0 and raw["nmad"] == pytest.approx(0.0, abs=1e-9)
    assert raw["completeness"] == (1.0 if abs(shift) <= 1.0 else 0.0)
    aligned = compare_dsm(ref + shift, ref)            # default: median alignment
    assert aligned["vertical_shift"] == pytest.approx(shift)
    assert aligned["mae"] == pytest.approx(0.0, abs=1e-9) and aligned["completeness"] == 1.0


def test_known_error_pattern_gives_closed_form_mae_rmse_median_and_nmad():
    ref = _reference((4, 100))
    errors = np.tile(np.array([0.0, 1.0, -2.0, 3.0]), 100).reshape(4, 100)   # each value on a quarter of cells
    m = compare_dsm(ref + errors, ref, align="none")
    assert m["mae"] == pytest.approx(1.5)                        # (0 + 1 + 2 + 3) / 4
    assert m["rmse"] == pytest.approx(np.sqrt(14.0 / 4.0))         # (0 + 1 + 4 + 9) / 4
    assert m["median_abs"] == pytest.approx(1.5)                 # between 1 and 2
    # median of errors is 0.5; |e - 0.5| = 0.5, 0.5, 2.5, 2.5 -> median 1.5
    assert m["nmad"] == pytest.approx(1.4826 * 1.5)
    assert m["completeness"] == pytest.approx(0.5)               # |e| <= 1 m: the 0 and the 1
    mean_aligned = compare_dsm(ref + errors, ref, align="mean")
    assert mean_aligned["vertical_shift"] == pytest.approx(0.5)
    assert mean_aligned["mae"] == pytest.approx(1.5)             # |-0.5|, |0.5|, |-2.5|, |2.5|


def test_gaussian_noise_matches_its_moments():
    rng = np.random.default_rng(0)
    ref = _reference((300, 300))
    m = compare_dsm(ref + rng.normal(0.0, 0.5, ref.shape), ref, align="none")
    assert m["rmse"] == pytest.approx(0.5, rel=0.02)
    assert m["mae"] == pytest.approx(0.5 * np.sqrt(2 / np.pi), rel=0.02)
    assert m["nmad"] == pytest.approx(0.5, rel=0.03)
    assert m["completeness"] == pytest.approx(0.9545, abs=0.01)   # P(|N(0, 0.5)| <= 1) = P(|z| <= 2)


def test_holes_count_against_completeness_not_the_errors():
    ref = _reference((10, 10))
    ref[0, :] = np.nan                                            # 90 valid reference cells
    est = ref + 0.5
    est[1:4, :] = np.nan                                          # 30 of them without estimate
    est[4, :] += 1.0                                              # 10 with error 1.5 m > threshold
    m = compare_dsm(est, ref, align="none", threshold_m=1.0)
    assert m["n_reference"] == 90 and m["n_compared"] == 60
    assert m["completeness_valid"] == pytest.approx(60 / 90)
    assert m["completeness"] == pytest.approx(50 / 90)
    assert m["mae"] == pytest.approx((50 * 0.5 + 10 * 1.5) / 60)


def test_estimate_on_another_grid_is_reprojected_onto_the_reference(tmp_path):
    """A plane sampled on a coarser, offset grid: bilinear reprojection of a plane is exact inside."""
    def plane(transform, shape):
        rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
        x = transform.c + transform.a * (cols + 0.5)
        y = transform.f + transform.e * (rows + 0.5)
        return 2300.0 + 0.05 * (x - 360000.0) - 0.02 * (y - 7651000.0)

    ref_t = Affine(0.5, 0, 360000.0, 0, -0.5, 7651100.0)
    est_t = Affine(1.0, 0, 359990.25, 0, -1.0, 7651110.25)        # twice coarser, shifted by a quarter cell
    write_raster(tmp_path / "ref.tif", plane(ref_t, (200, 200)).astype(np.float32), transform=ref_t, crs=CRS,
                 nodata=float("nan"))
    write_raster(tmp_path / "est.tif", (plane(est_t, (130, 130)) + 1.0).astype(np.float32), transform=est_t,
                 crs=CRS, nodata=float("nan"))
    m = compare_dsm(tmp_path / "est.tif", tmp_path / "ref.tif")
    assert m["vertical_shift"] == pytest.approx(1.0, abs=1e-3)
    assert m["mae"] < 1e-3 and m["completeness"] > 0.97


def test_extent_estimate_scores_a_crop_of_a_large_reference(tmp_path):
    ref_t = Affine(0.5, 0, 360000.0, 0, -0.5, 7651100.0)
    ref = np.full((100, 100), 2300.0, np.float32)
    write_raster(tmp_path / "ref.tif", ref, transform=ref_t, crs=CRS, nodata=float("nan"))
    crop_t = Affine(0.5, 0, 360010.0, 0, -0.5, 7651090.0)         # rows/cols 20..40 of the reference
    m_all = compare_dsm(np.full((20, 20), 2300.0), tmp_path / "ref.tif", estimate_transform=crop_t,
                        estimate_crs=CRS)
    m_crop = compare_dsm(np.full((20, 20), 2300.0), tmp_path / "ref.tif", estimate_transform=crop_t,
                         estimate_crs=CRS, extent="estimate")
    assert m_all["completeness"] == pytest.approx(400 / 10000)
    assert m_crop["completeness"] == pytest.approx(1.0) and m_crop["n_reference"] == 400


def test_bad_inputs_are_named(tmp_path):
    ref = _reference()
    with pytest.raises(ConfigError, match="align"):
        compare_dsm(ref, ref, align="best")
    with pytest.raises(ConfigError, match="threshold"):
        compare_dsm(ref, ref, threshold_m=0.0)
    with pytest.raises(InputFileError, match="no georeferencing"):
        compare_dsm(ref[:10], ref)
    with pytest.raises(InputFileError, match="no valid cell"):
        compare_dsm(ref, np.full(ref.shape, np.nan))
    with pytest.raises(InputFileError) as info:
        compare_dsm(ref, tmp_path / "missing.tif")
    assert "missing.tif" in str(info.value)
