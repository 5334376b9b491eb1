"""Geometry metrics. DSM part: an estimated height map against a reference one.

`compare_dsm` brings the estimate onto the reference grid (rasterio.warp, bilinear, NaN-aware) when their CRS
or grids differ, optionally removes a vertical offset (the median height difference: RPC-based DSMs carry a
bias of the order of the relative pointing error, which s2p corrects and a raw sweep does not), and reports:

    mae, rmse, median_abs, nmad   of the (aligned) differences estimate - reference, over the cells where both
                                  are valid (NMAD = 1.4826 * median |d - median d|, robust spread)
    vertical_shift                the offset that was removed (median of the raw differences; 0 if align="none")
    completeness                  fraction of reference-valid cells whose estimate is valid AND within
                                  `threshold_m` of the reference after alignment (default 1 m)
    completeness_valid            fraction of reference-valid cells with any valid estimate
    threshold_m, n_reference, n_compared, align, extent

`extent="estimate"` counts only the reference cells inside the estimate's grid (to score a crop of a larger
reference); the default counts every valid reference cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from earthsynth.errors import ConfigError, InputFileError

NMAD_SCALE = 1.4826
ALIGN_MODES = ("median", "mean", "none")
EXTENTS = ("reference", "estimate")


def _as_height_grid(source, *, transform=None, crs=None, name: str):
    """(H, W) float64 heights with NaN for nodata, and its transform / CRS (None when given as a bare array)."""
    if isinstance(source, (str, Path)):
        from earthsynth.io.raster import read_raster
        raster = read_raster(source)
        data = raster.data[0].astype(np.float64)
        if raster.nodata is not None and not np.isnan(raster.nodata):
            data[data == raster.nodata] = np.nan
        return data, raster.transform, raster.crs, Path(source)
    data = np.asarray(source, dtype=np.float64)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise ConfigError(f"compare_dsm: {name} must be a (H, W) array or a raster path, got shape {data.shape}")
    return data, transform, crs, None


def _same_grid(shape_a, transform_a, crs_a, shape_b, transform_b, crs_b) -> bool:
    if shape_a != shape_b:
        return False
    if transform_a is None or transform_b is None:
        return True      # a bare array without georeferencing is taken to be on the other grid
    from rasterio.crs import CRS
    same_crs = crs_a is None or crs_b is None or CRS.from_user_input(crs_a) == CRS.from_user_input(crs_b)
    return same_crs and transform_a.almost_equals(transform_b, precision=1e-9)


def reproject_heights(heights, transform, crs, dst_shape, dst_transform, dst_crs) -> np.ndarray:
    """Resample a NaN-holed height grid onto another grid (bilinear; NaN where no valid source)."""
    from rasterio.warp import Resampling, reproject

    out = np.full(dst_shape, np.nan, np.float64)
    reproject(np.ascontiguousarray(heights, np.float64), out, src_transform=transform, src_crs=crs,
              dst_transform=dst_transform, dst_crs=dst_crs, src_nodata=np.nan, dst_nodata=np.nan,
              resampling=Resampling.bilinear)
    return out


def _aligned_differences(estimate, reference, align: str):
    both = np.isfinite(estimate) & np.isfinite(reference)
    diff = estimate[both] - reference[both]
    if align == "none" or diff.size == 0:
        shift = 0.0
    elif align == "median":
        shift = float(np.median(diff))
    else:
        shift = float(np.mean(diff))
    return both, diff - shift, shift


def compare_dsm(estimate, reference, *, align: str = "median", threshold_m: float = 1.0,
                extent: str = "reference", estimate_transform=None, estimate_crs=None) -> dict:
    """Compare an estimated DSM (raster path or (H, W) array) with a reference DSM (raster path, or array on
    the same grid). See the module docstring for the metrics. An array estimate with `estimate_transform` /
    `estimate_crs` is reprojected like a file; without them it must have the reference's shape."""
    if align not in ALIGN_MODES:
        raise ConfigError(f"compare_dsm: align must be one of {ALIGN_MODES}, got {align!r}")
    if extent not in EXTENTS:
        raise ConfigError(f"compare_dsm: extent must be one of {EXTENTS}, got {extent!r}")
    if not threshold_m > 0:
        raise ConfigError(f"compare_dsm: threshold_m must be positive, got {threshold_m}")
    ref, ref_transform, ref_crs, ref_path = _as_height_grid(reference, name="reference")
    est, est_transform, est_crs, est_path = _as_height_grid(
        estimate, transform=estimate_transform, crs=estimate_crs, name="estimate")
    if not _same_grid(est.shape, est_transform, est_crs, ref.shape, ref_transform, ref_crs):
        if est_transform is None or ref_transform is None:
            where = est_path if est_transform is None else ref_path
            raise InputFileError(f"DSM grids differ ({est.shape} vs {ref.shape}) and one has no georeferencing",
                                 path=where, hint="give both DSMs a transform and CRS, or the same shape")
        footprint = reproject_heights(np.ones_like(est), est_transform, est_crs or ref_crs, ref.shape,
                                      ref_transform, ref_crs or est_crs)
        est = reproject_heights(est, est_transform, est_crs or ref_crs, ref.shape, ref_transform,
                                ref_crs or est_crs)
        if extent == "estimate":
            ref = np.where(np.isfinite(footprint), ref, np.nan)
    n_reference = int(np.isfinite(ref).sum())
    if n_reference == 0:
        raise InputFileError("the reference DSM has no valid cell", path=ref_path,
                             hint="check its nodata value and that it covers the area")
    both, diff, shift = _aligned_differences(est, ref, align)
    absolute = np.abs(diff)
    nan = float("nan")
    return {
        "mae": float(absolute.mean()) if diff.size else nan,
        "rmse": float(np.sqrt(np.mean(diff ** 2))) if diff.size else nan,
        "median_abs": float(np.median(absolute)) if diff.size else nan,
        "nmad": float(NMAD_SCALE * np.median(np.abs(diff - np.median(diff)))) if diff.size else nan,
        "vertical_shift": shift,
        "completeness": float((absolute <= threshold_m).sum() / n_reference),
        "completeness_valid": float(both.sum() / n_reference),
        "threshold_m": float(threshold_m),
        "n_reference": n_reference,
        "n_compared": int(both.sum()),
        "align": align,
        "extent": extent,
    }
