"""Fit an RPC to 3D <-> 2D correspondences (terrain-dependent RPC estimation).

Used by the synthetic world to give its rendered views RPCs fitted to their exact pinhole cameras,
and by anyone who needs an RPC for a camera known only as a projection function.

Method (Tao & Hu 2001, "A comprehensive study of the rational function model for photogrammetric
processing"): with normalised coordinates, r = N(L, P, H) / D(L, P, H) and D's constant term fixed to
1 becomes the linear system N(x) - r * (D(x) - 1) = r in the 39 unknowns of each image axis. Solving it
by least squares minimises D * residual rather than the residual itself, so the system is re-solved
with weights 1 / D from the previous solution (iteratively reweighted). A small ridge (Tikhonov)
term on equilibrated columns keeps the strongly collinear third-order terms bounded, which is what
makes fits over small areas (nearly affine cameras) stable.
"""

from __future__ import annotations

import numpy as np

from earthsynth.errors import ConfigError
from earthsynth.geo.rpc import RPCModel, polynomial_terms

DEFAULT_REGULARIZATION = 1e-14  # relative ridge on unit-norm columns; tiny: it only tames collinearity
_REWEIGHTING_ITERATIONS = 4
_UNKNOWNS_PER_AXIS = 39


def _offset_and_scale(values: np.ndarray) -> tuple[float, float]:
    """Mid-range and half-range, so that normalised values lie in [-1, 1] (scale 1 if constant)."""
    low, high = float(values.min()), float(values.max())
    half_range = (high - low) / 2.0
    return (low + high) / 2.0, half_range if half_range > 0 else 1.0


def _solve_ridge(design: np.ndarray, target: np.ndarray, regularization: float) -> np.ndarray:
    """argmin ||design x - target||² + regularization ||diag(column norms) x||²."""
    column_norms = np.linalg.norm(design, axis=0)
    column_norms[column_norms == 0] = 1.0
    scaled = design / column_norms
    n_unknowns = design.shape[1]
    augmented = np.vstack([scaled, np.sqrt(regularization) * np.eye(n_unknowns)])
    rhs = np.concatenate([target, np.zeros(n_unknowns)])
    solution, *_ = np.linalg.lstsq(augmented, rhs, rcond=None)
    return solution / column_norms


def _fit_rational_axis(terms_20n: np.ndarray, target_n: np.ndarray,
                       regularization: float) -> tuple[np.ndarray, np.ndarray]:
    """Numerator and denominator (20 each, den[0] = 1) of target ≈ N / D over the given terms."""
    terms = terms_20n.T  # (n, 20)
    design = np.hstack([terms, -target_n[:, None] * terms[:, 1:]])
    weights = np.ones_like(target_n)
    numerator = denominator = None
    for _ in range(_REWEIGHTING_ITERATIONS):
        solution = _solve_ridge(design * weights[:, None], target_n * weights, regularization)
        numerator = solution[:20]
        denominator = np.concatenate([[1.0], solution[20:]])
        d_values = terms @ denominator
        if np.any(d_values == 0):
            break
        weights = 1.0 / np.abs(d_values)
    return numerator, denominator


def _validated_points(lon, lat, alt, col, row) -> list[np.ndarray]:
    arrays = [np.asarray(v, np.float64) for v in (lon, lat, alt, col, row)]
    try:
        arrays = [a.reshape(-1) for a in np.broadcast_arrays(*arrays)]
    except ValueError:
        raise ConfigError("fit_rpc: lon, lat, alt, col, row must have the same shape") from None
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ConfigError("fit_rpc: the correspondences contain NaN or infinite values")
    if arrays[0].size < _UNKNOWNS_PER_AXIS:
        raise ConfigError(f"fit_rpc: {arrays[0].size} correspondences; a third-order RPC needs at least "
                          f"{_UNKNOWNS_PER_AXIS} (use a 3D grid of points, e.g. 10 x 10 x 5)")
    return arrays


def fit_rpc(lon, lat, alt, col, row, *, regularization: float = DEFAULT_REGULARIZATION,
            width: int | None = None, height: int | None = None) -> RPCModel:
    """Third-order RPC (RPC00B) fitted to correspondences ground (lon°, lat°, alt m) -> image (col, row).

    Offsets / scales are the mid-range / half-range of the data. Use points spread over the full
    3D volume (several heights!): points on one plane leave the height terms undetermined.
    """
    if not regularization >= 0:
        raise ConfigError(f"fit_rpc: regularization must be >= 0, got {regularization}")
    lon, lat, alt, col, row = _validated_points(lon, lat, alt, col, row)
    (lon_off, lon_scale), (lat_off, lat_scale), (alt_off, alt_scale), (col_off, col_scale), (row_off, row_scale) = (
        _offset_and_scale(v) for v in (lon, lat, alt, col, row))
    terms = polynomial_terms((lon - lon_off) / lon_scale, (lat - lat_off) / lat_scale, (alt - alt_off) / alt_scale)
    col_num, col_den = _fit_rational_axis(terms, (col - col_off) / col_scale, regularization)
    row_num, row_den = _fit_rational_axis(terms, (row - row_off) / row_scale, regularization)
    return RPCModel(row_num=row_num, row_den=row_den, col_num=col_num, col_den=col_den,
                    row_offset=row_off, col_offset=col_off, lat_offset=lat_off, lon_offset=lon_off,
                    alt_offset=alt_off, row_scale=row_scale, col_scale=col_scale, lat_scale=lat_scale,
                    lon_scale=lon_scale, alt_scale=alt_scale, width=width, height=height)


def _grid(lon_range, lat_range, alt_range, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axes = [np.linspace(float(r[0]), float(r[1]), int(n)) for r, n in zip((lon_range, lat_range, alt_range), shape)]
    lon, lat, alt = np.meshgrid(*axes, indexing="ij")
    return lon.ravel(), lat.ravel(), alt.ravel()


def fit_rpc_to_projection(project_fn, lon_range, lat_range, alt_range, *, grid=(12, 12, 6),
                          regularization: float = DEFAULT_REGULARIZATION, width: int | None = None,
                          height: int | None = None) -> tuple[RPCModel, float]:
    """Fit an RPC to a camera given as `project_fn(lon, lat, alt) -> (col, row)` (vectorised, project
    pixel convention) over a lon × lat × alt box sampled on `grid` = (n_lon, n_lat, n_alt) nodes.

    Returns the model and its maximum reprojection error in pixels on a check grid about twice as
    dense as the fitting grid, whose inner nodes fall between the fitting nodes.
    """
    if len(grid) != 3 or min(int(n) for n in grid) < 2:
        raise ConfigError(f"fit_rpc_to_projection: grid must be 3 sizes >= 2, got {grid}")
    if int(np.prod(grid)) < _UNKNOWNS_PER_AXIS:
        raise ConfigError(f"fit_rpc_to_projection: grid {grid} has fewer than {_UNKNOWNS_PER_AXIS} nodes")
    lon, lat, alt = _grid(lon_range, lat_range, alt_range, grid)
    col, row = project_fn(lon, lat, alt)
    model = fit_rpc(lon, lat, alt, col, row, regularization=regularization, width=width, height=height)
    check_shape = tuple(2 * int(n) + 1 for n in grid)
    lon_c, lat_c, alt_c = _grid(lon_range, lat_range, alt_range, check_shape)
    col_true, row_true = project_fn(lon_c, lat_c, alt_c)
    col_fit, row_fit = model.projection(lon_c, lat_c, alt_c)
    max_error_px = float(np.max(np.hypot(col_fit - np.asarray(col_true), row_fit - np.asarray(row_true))))
    return model, max_error_px
