"""Argument checks of `rasterize_gaussians`: one ConfigError per mistake, naming the argument and the fix."""

from __future__ import annotations

import numbers

import torch

from earthsynth.errors import ConfigError


def _shape(name: str, tensor, expected: tuple, hint: str) -> None:
    """`expected` holds ints and None (any size); raise unless the tensor matches."""
    if not isinstance(tensor, torch.Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}", hint=hint)
    ok = tensor.dim() == len(expected) and all(e is None or s == e for s, e in zip(tensor.shape, expected))
    if not ok:
        want = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise ConfigError(f"{name} has shape {list(tensor.shape)}, expected {want}", hint=hint)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")
    return value


def _colors(colors, sh_degree, n: int, n_cameras: int, max_sh_degree: int) -> int:
    """Check the colour / SH tensor; return the number of colour channels it yields."""
    if sh_degree is None:
        hint = "pass colours as [N, D] or [C, N, D] (or SH coefficients [N, K, 3] with sh_degree=...)"
        _shape("colors", colors, (n, None) if colors.dim() == 2 else (n_cameras, n, None), hint)
        return int(colors.shape[-1])
    if isinstance(sh_degree, bool) or not isinstance(sh_degree, numbers.Integral) or not (
            0 <= sh_degree <= max_sh_degree):
        raise ConfigError(f"sh_degree={sh_degree!r} is not an integer in 0..{max_sh_degree}")
    hint = "SH coefficients are [N, K, 3] or [C, N, K, 3] with K >= (sh_degree + 1)^2"
    _shape("colors", colors, (n, None, 3) if colors.dim() == 3 else (n_cameras, n, None, 3), hint)
    if colors.shape[-2] < (sh_degree + 1) ** 2:
        raise ConfigError(f"colors holds {colors.shape[-2]} SH coefficients per Gaussian but sh_degree={sh_degree} "
                          f"needs {(sh_degree + 1) ** 2}", hint="lower sh_degree or pass more coefficients")
    return 3


def _same_kind(tensors: dict) -> None:
    """One floating dtype (float32 or float64) and one device for all the tensors."""
    ref_name, ref = next(iter(tensors.items()))
    for name, t in tensors.items():
        if t.dtype not in (torch.float32, torch.float64):
            raise ConfigError(f"{name} has dtype {t.dtype}; expected float32 or float64",
                              hint="convert with .float()")
        if t.dtype != ref.dtype or t.device != ref.device:
            raise ConfigError(f"{name} is {t.dtype} on {t.device} but {ref_name} is {ref.dtype} on {ref.device}",
                              hint="pass every tensor with one dtype, on one device")


def check_arguments(*, means_n3, quats_n4, scales_n3, opacities_n, colors, viewmats_c44, Ks_c33, width, height,
                    near_plane, far_plane, radius_clip, eps2d, sh_degree, backgrounds_c3, render_mode, tile_size,
                    rasterize_mode, backend, render_modes, rasterize_modes, backends, max_sh_degree) -> dict:
    _choice("render_mode", render_mode, render_modes)
    _choice("rasterize_mode", rasterize_mode, rasterize_modes)
    _choice("backend", backend, backends)
    width, height, tile_size = _positive_int("width", width), _positive_int("height", height), _positive_int(
        "tile_size", tile_size)
    _shape("means_n3", means_n3, (None, 3), "Gaussian centres are [N, 3]")
    n = means_n3.shape[0]
    _shape("quats_n4", quats_n4, (n, 4), "one (w, x, y, z) quaternion per Gaussian: [N, 4]")
    _shape("scales_n3", scales_n3, (n, 3), "linear (activated) standard deviations: [N, 3]")
    _shape("opacities_n", opacities_n, (n,), "activated opacities in [0, 1]: [N]")
    _shape("viewmats_c44", viewmats_c44, (None, 4, 4), "world-to-camera matrices: [C, 4, 4]")
    n_cameras = viewmats_c44.shape[0]
    if n_cameras == 0:
        raise ConfigError("viewmats_c44 holds no camera", hint="pass at least one [4, 4] world-to-camera matrix")
    _shape("Ks_c33", Ks_c33, (n_cameras, 3, 3), "one intrinsics matrix per viewmat: [C, 3, 3]")
    if not isinstance(colors, torch.Tensor):
        raise ConfigError(f"colors must be a torch.Tensor, got {type(colors).__name__}")
    n_channels = _colors(colors, sh_degree, n, n_cameras, max_sh_degree)
    tensors = dict(means_n3=means_n3, quats_n4=quats_n4, scales_n3=scales_n3, opacities_n=opacities_n,
                   colors=colors, viewmats_c44=viewmats_c44, Ks_c33=Ks_c33)
    if backgrounds_c3 is not None:
        _shape("backgrounds_c3", backgrounds_c3, (n_cameras, n_channels),
               "one background colour per camera, as many channels as the colours: [C, D]")
        tensors["backgrounds_c3"] = backgrounds_c3
    _same_kind(tensors)
    if not (0.0 < near_plane < far_plane):
        raise ConfigError(f"near_plane={near_plane}, far_plane={far_plane}: need 0 < near_plane < far_plane",
                          hint="near_plane > 0 is what culls Gaussians at or behind the camera")
    if radius_clip < 0 or eps2d < 0:
        raise ConfigError(f"radius_clip={radius_clip}, eps2d={eps2d}: both must be >= 0")
    return dict(means_n3=means_n3, quats_n4=quats_n4, scales_n3=scales_n3, opacities_n=opacities_n, colors=colors,
                viewmats_c44=viewmats_c44, width=width, height=height, near_plane=float(near_plane),
                far_plane=float(far_plane), radius_clip=float(radius_clip), eps2d=float(eps2d), sh_degree=sh_degree,
                backgrounds_c3=backgrounds_c3, render_mode=render_mode, tile_size=tile_size,
                rasterize_mode=rasterize_mode)
