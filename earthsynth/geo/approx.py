"""RPC -> pinhole approximation (the SatelliteSfM method used by Skyfall-GS, supplementary 0.B.2.3).

A satellite push-broom sensor seen over a small area is very close to a (skewed) pinhole camera. We sample
a 3D grid of RPC correspondences over the image and the scene's height range, solve the 3x4 projection by
normalised DLT, polish it by minimising the geometric reprojection error, and decompose it into K [R | t]
in the scene's local ENU frame. The max / mean reprojection error on a denser check grid is reported so
nobody trusts the approximation blindly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import rq
from scipy.optimize import least_squares

from earthsynth.errors import ConfigError
from earthsynth.geo.frames import ENUFrame
from earthsynth.geo.pinhole import Camera


@dataclass(frozen=True)
class ApproxConfig:
    grid_xy: int = 21          # image-space samples per axis for the fit
    grid_z: int = 11           # height levels for the fit
    check_xy: int = 40         # denser, offset grid for the error report
    check_z: int = 9
    refine: bool = True        # polish the DLT by geometric least squares


@dataclass(frozen=True)
class PinholeApproximation:
    camera: Camera
    max_px: float
    mean_px: float

    def to_dict(self) -> dict:
        return {**self.camera.to_dict(), "max_px": self.max_px, "mean_px": self.mean_px}


def _normalising_transform(points: np.ndarray) -> np.ndarray:
    """Hartley normalisation: centroid at 0, mean distance sqrt(dim)."""
    dim = points.shape[1]
    centroid = points.mean(axis=0)
    scale = np.sqrt(dim) / np.mean(np.linalg.norm(points - centroid, axis=1))
    T = np.eye(dim + 1)
    T[:dim, :dim] *= scale
    T[:dim, dim] = -scale * centroid
    return T


def _homogeneous(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points, np.ones((len(points), 1))], axis=1)


def dlt_projection(world_n3: np.ndarray, pixels_n2: np.ndarray) -> np.ndarray:
    """Normalised direct linear transform -> 3x4 projection (world -> homogeneous pixels)."""
    Tw, Tp = _normalising_transform(world_n3), _normalising_transform(pixels_n2)
    X = _homogeneous(world_n3) @ Tw.T
    x = _homogeneous(pixels_n2) @ Tp.T
    n = len(X)
    A = np.zeros((2 * n, 12))
    A[0::2, 0:4] = X
    A[0::2, 8:12] = -x[:, 0:1] * X
    A[1::2, 4:8] = X
    A[1::2, 8:12] = -x[:, 1:2] * X
    _, _, vt = np.linalg.svd(A, full_matrices=False)
    P_normalised = vt[-1].reshape(3, 4)
    P = np.linalg.inv(Tp) @ P_normalised @ Tw
    return P / np.linalg.norm(P)


def _reproject(P: np.ndarray, world_n3: np.ndarray) -> np.ndarray:
    x = _homogeneous(world_n3) @ P.T
    return x[:, :2] / x[:, 2:3]


def refine_projection(P: np.ndarray, world_n3: np.ndarray, pixels_n2: np.ndarray) -> np.ndarray:
    """Minimise the geometric reprojection error over the 11 projective degrees of freedom.

    Done in Hartley-normalised coordinates so the problem is well conditioned even though the camera is
    hundreds of kilometres away."""
    Tw, Tp = _normalising_transform(world_n3), _normalising_transform(pixels_n2)
    Xn = _homogeneous(world_n3) @ Tw.T
    xn = (_homogeneous(pixels_n2) @ Tp.T)[:, :2]
    Pn = Tp @ P @ np.linalg.inv(Tw)
    Pn = Pn / np.linalg.norm(Pn)

    def residuals(p):
        m = p.reshape(3, 4)
        proj = Xn @ m.T
        return (proj[:, :2] / proj[:, 2:3] - xn).ravel()

    result = least_squares(residuals, Pn.ravel(), method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    P_refined = np.linalg.inv(Tp) @ result.x.reshape(3, 4) @ Tw
    return P_refined / np.linalg.norm(P_refined)


def decompose_projection(P: np.ndarray, width: int, height: int) -> Camera:
    """P = K [R | t] with K upper triangular (positive diagonal, K[2,2] = 1) and det(R) = +1."""
    M = P[:, :3]
    if np.linalg.det(M) < 0:
        P = -P
        M = P[:, :3]
    K, R = rq(M)
    signs = np.diag(np.sign(np.diag(K)))
    K, R = K @ signs, signs @ R
    t = np.linalg.solve(K, P[:, 3])   # P = K [R | t] for the unnormalised K
    K = K / K[2, 2]
    if np.linalg.det(R) < 0:  # can only happen for a degenerate P; keep the frame right-handed
        raise ConfigError("pinhole approximation produced a reflected rotation: degenerate correspondences")
    viewmat = np.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = t
    return Camera(K, viewmat, int(width), int(height))


def rpc_correspondences(rpc, frame: ENUFrame, width: int, height: int, alt_range: tuple[float, float],
                        n_xy: int, n_z: int, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A grid over the image (cols x rows) and the height range, localised with the RPC.

    Returns ENU points (N, 3) and their RPC pixel coordinates (N, 2). `offset` (0..1) shifts the grid by a
    fraction of a cell so a check grid does not coincide with the fit grid."""
    step_c, step_r = (width - 1) / (n_xy - 1), (height - 1) / (n_xy - 1)
    cols = np.clip(np.arange(n_xy) * step_c + offset * step_c, 0, width - 1)
    rows = np.clip(np.arange(n_xy) * step_r + offset * step_r, 0, height - 1)
    alts = np.linspace(alt_range[0], alt_range[1], n_z)
    c, r, a = (g.ravel() for g in np.meshgrid(cols, rows, alts, indexing="ij"))
    lon, lat = rpc.localization(c, r, a)
    # project back: the pinhole must match the RPC's forward model, which is what users project with
    col, row = rpc.projection(lon, lat, a)
    enu = frame.to_enu(lon, lat, a)
    return enu, np.stack([col, row], axis=1)


def approximate_rpc(rpc, frame: ENUFrame, width: int, height: int, alt_range: tuple[float, float],
                    config: ApproxConfig = ApproxConfig()) -> PinholeApproximation:
    """Fit a pinhole camera (in the ENU frame of `frame`) to an RPC over the image and a height range."""
    if not alt_range[1] > alt_range[0]:
        raise ConfigError(f"height range must be increasing, got {alt_range}")
    world, pixels = rpc_correspondences(rpc, frame, width, height, alt_range, config.grid_xy, config.grid_z)
    P = dlt_projection(world, pixels)
    if config.refine:
        P = refine_projection(P, world, pixels)
    camera = decompose_projection(P, width, height)
    check_world, check_pixels = rpc_correspondences(
        rpc, frame, width, height, alt_range, config.check_xy, config.check_z, offset=0.5
    )
    uv, depth = camera.project(check_world)
    if np.any(depth <= 0):
        raise ConfigError("pinhole approximation puts scene points behind the camera")
    err = np.linalg.norm(uv - check_pixels, axis=1)
    return PinholeApproximation(camera, float(err.max()), float(err.mean()))
