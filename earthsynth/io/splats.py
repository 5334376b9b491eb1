"""3D Gaussian splats as PLY in the Inria (original 3DGS) layout, which SuperSplat and the web viewers open.

One `vertex` element, float32 properties in this order:
    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{3(K-1)-1} opacity scale_0..2 rot_0..3
- f_dc_c is SH coefficient 0 of colour channel c; f_rest is stored channel-major as Inria's
  `_features_rest.transpose(1, 2).flatten(1)` does: coefficient k >= 1 of channel c is f_rest_{c(K-1) + k-1};
- opacity is a logit (sigmoid gives alpha), scale_i a log standard deviation, rot a w, x, y, z quaternion
  (not necessarily normalised, as in Inria's files); normals are written as zeros and ignored on read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.io.atomic import atomic_path
from earthsynth.io.pointcloud import read_ply

SH_C0 = 0.28209479177387814          # Y_0^0 = 1 / (2 sqrt(pi)); rgb = 0.5 + SH_C0 * f_dc, as in Inria's code
_COEFFICIENTS_BY_DEGREE = {(d + 1) ** 2: d for d in range(4)}   # K -> SH degree, degrees 0..3


def rgb_to_sh_dc(rgb_n3) -> np.ndarray:
    """Colour in [0, 1] -> degree-0 SH coefficient (f_dc)."""
    return ((np.asarray(rgb_n3, np.float64) - 0.5) / SH_C0).astype(np.float32)


def sh_dc_to_rgb(dc_n3) -> np.ndarray:
    """Degree-0 SH coefficient -> colour (unclamped; viewers clamp to [0, 1])."""
    return (np.asarray(dc_n3, np.float64) * SH_C0 + 0.5).astype(np.float32)


@dataclass
class GaussianSplats:
    """N Gaussians with activation-free parameters, as trained and as stored in the PLY (all float32)."""

    means_n3: np.ndarray             # centres, world (ENU) metres
    quats_n4: np.ndarray             # rotations w, x, y, z
    log_scales_n3: np.ndarray        # log standard deviations along the rotated axes
    opacity_logits_n: np.ndarray     # logit of opacity
    sh_n_k_3: np.ndarray             # SH coefficients, K = (degree + 1)^2, DC first, RGB last axis

    def __post_init__(self):
        for name in ("means_n3", "quats_n4", "log_scales_n3", "opacity_logits_n", "sh_n_k_3"):
            setattr(self, name, np.asarray(getattr(self, name), np.float32))
        n = len(self.means_n3)
        expected = {"means_n3": (n, 3), "quats_n4": (n, 4), "log_scales_n3": (n, 3), "opacity_logits_n": (n,)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ConfigError(f"{name} must have shape {shape}, got {getattr(self, name).shape}")
        sh = self.sh_n_k_3
        if sh.ndim != 3 or sh.shape[0] != n or sh.shape[2] != 3 or sh.shape[1] not in _COEFFICIENTS_BY_DEGREE:
            raise ConfigError(f"sh_n_k_3 must be ({n}, K, 3) with K in 1, 4, 9, 16; got {sh.shape}")

    @property
    def num(self) -> int:
        return int(len(self.means_n3))

    @property
    def sh_degree(self) -> int:
        return _COEFFICIENTS_BY_DEGREE[self.sh_n_k_3.shape[1]]


def splat_property_names(sh_degree: int) -> list[str]:
    """The PLY vertex properties, in file order, for a given SH degree."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def _check_writable(splats: GaussianSplats) -> None:
    """Viewers crash on NaN and cannot normalise a zero quaternion: refuse them rather than write them."""
    for name in ("means_n3", "quats_n4", "log_scales_n3", "opacity_logits_n", "sh_n_k_3"):
        values = getattr(splats, name)
        n_bad = int((~np.isfinite(values)).sum())
        if n_bad:
            raise ConfigError(f"{name} holds {n_bad} NaN or infinite values; these Gaussians cannot be saved")
    n_zero = int((np.linalg.norm(splats.quats_n4, axis=1) == 0).sum())
    if n_zero:
        raise ConfigError(f"quats_n4 holds {n_zero} zero quaternions (no rotation can be derived from them)")


def write_splats_ply(path, splats: GaussianSplats) -> Path:
    """Write `splats` as a binary little-endian Inria-layout PLY (atomic). Returns the path."""
    _check_writable(splats)
    n, k = splats.num, splats.sh_n_k_3.shape[1]
    # channel-major rest coefficients: (N, K-1, 3) -> (N, 3, K-1) -> (N, 3(K-1))
    f_rest = splats.sh_n_k_3[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (k - 1))
    columns = np.concatenate([
        splats.means_n3, np.zeros((n, 3), np.float32), splats.sh_n_k_3[:, 0, :], f_rest,
        splats.opacity_logits_n[:, None], splats.log_scales_n3, splats.quats_n4], axis=1)
    names = splat_property_names(splats.sh_degree)
    vertex = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        vertex[name] = columns[:, i]
    ply = PlyData([PlyElement.describe(vertex, "vertex")], byte_order="<")
    with atomic_path(path) as tmp:
        ply.write(str(tmp))
    return Path(path)


def _f_rest_names(present: tuple[str, ...], path: Path) -> list[str]:
    """f_rest_* names sorted by their number, checked to be 0..3(K-1)-1 for a supported K."""
    names = sorted((p for p in present if p.startswith("f_rest_")), key=lambda p: int(p[len("f_rest_"):]))
    numbers = [int(p[len("f_rest_"):]) for p in names]
    k = len(names) // 3 + 1
    if numbers != list(range(len(names))) or len(names) % 3 or k not in _COEFFICIENTS_BY_DEGREE:
        raise InputFileError(f"has {len(names)} f_rest properties; an Inria 3DGS PLY has 0, 9, 24 or 45 "
                             f"(SH degree 0..3) numbered from f_rest_0", path=path,
                             hint="export the splats again in the Inria 3DGS layout")
    return names


def read_splats_ply(path) -> GaussianSplats:
    """Read an Inria-layout 3DGS PLY; the SH degree follows from the number of f_rest properties."""
    path = Path(path)
    ply = read_ply(path)
    if "vertex" not in ply:
        raise InputFileError("has no 'vertex' element", path=path, hint="is it really a 3DGS PLY?")
    vertex = ply["vertex"].data
    present = vertex.dtype.names
    required = [p for p in splat_property_names(0) if p not in ("nx", "ny", "nz")]
    missing = [p for p in required if p not in present]
    if missing:
        raise InputFileError(f"is not an Inria 3DGS PLY: the properties {', '.join(missing)} are missing",
                             path=path, hint="export the splats in the Inria 3DGS layout "
                                             "(x y z f_dc_0..2 f_rest_* opacity scale_0..2 rot_0..3)")
    rest_names = _f_rest_names(present, path)

    def stack(names):
        return np.stack([np.asarray(vertex[name], np.float32) for name in names], axis=1) if names \
            else np.zeros((len(vertex), 0), np.float32)

    n, k = len(vertex), len(rest_names) // 3 + 1
    sh = np.empty((n, k, 3), np.float32)
    sh[:, 0, :] = stack(["f_dc_0", "f_dc_1", "f_dc_2"])
    sh[:, 1:, :] = stack(rest_names).reshape(n, 3, k - 1).transpose(0, 2, 1)
    return GaussianSplats(means_n3=stack(["x", "y", "z"]), quats_n4=stack(["rot_0", "rot_1", "rot_2", "rot_3"]),
                          log_scales_n3=stack(["scale_0", "scale_1", "scale_2"]),
                          opacity_logits_n=np.asarray(vertex["opacity"], np.float32), sh_n_k_3=sh)
