"""Gaussian-splatting rasteriser with gsplat's arguments: gsplat on an accelerator, our tile-based CPU backend
elsewhere.

`rasterize_gaussians` mirrors `gsplat.rasterization` (non-packed, pinhole). The CPU backend follows gsplat's
algorithm step by step (see splat_project for the projection, splat_kernel for the per-pixel rules), so both
backends give the same images within float32 rounding; it is differentiable w.r.t. means, quats, scales,
opacities, colours / SH coefficients and viewmats, and through `meta["means2d"]` (call `.retain_grad()` on it
before backward to read the view-space positional gradient used for densification).

Footprints: the CPU backend uses gsplat >= 1.5's opacity-aware box (radius = ceil(sqrt(2 ln(255 opacity)) sigma)
per axis, at most 3.33 sigma) rather than the older ceil(3 sigma) of the larger eigenvalue: the box then holds every
pixel where alpha >= 1/255, so images do not depend on the tiling (older gsplat drops faint 3-3.3 sigma fringes
at tile edges). meta["radii"] is the larger of the two half-sizes.

Pixel convention: `Ks_c33` are earthsynth's (pixel (0, 0)'s centre at (0, 0)); gsplat puts pixel centres at
(x + 0.5, y + 0.5), so both backends work internally with cx, cy + 0.5, and `meta["means2d"]` is in gsplat's
convention (add 0.5 to an earthsynth projection) whichever backend ran, so densification code sees one thing.
"""

from __future__ import annotations

import functools
import importlib
import os

import torch

from earthsynth.errors import ConfigError
from earthsynth.render.splat_checks import check_arguments
from earthsynth.render.splat_composite import CompositeGaussians, bin_gaussians
from earthsynth.render.splat_project import project_gaussians, sh_colors

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")
BACKENDS = ("auto", "torch", "cpu", "gsplat")
MAX_SH_DEGREE = 3
PIXEL_CENTRE_SHIFT = 0.5  # earthsynth pixel centre (0, 0) -> gsplat (0.5, 0.5)
# What backend="auto" means can be pinned for a whole run (training code passes no backend): "cpu" keeps our
# compositor even on a GPU with gsplat installed (same images as a CPU-only machine), "gsplat" insists on it.
BACKEND_ENV = "EARTHSYNTH_SPLAT_BACKEND"


def rasterize_gaussians(means_n3, quats_n4, scales_n3, opacities_n, colors, viewmats_c44, Ks_c33, width, height, *,
                        near_plane=0.01, far_plane=1e10, radius_clip=0.0, eps2d=0.3, sh_degree=None,
                        backgrounds_c3=None, render_mode="RGB", tile_size=16, rasterize_mode="classic",
                        backend="auto"):
    """Render N Gaussians into C cameras.

    means_n3, quats_n4 (w, x, y, z, any norm), scales_n3 (linear std devs), opacities_n (in [0, 1]);
    colors [N, D] / [C, N, D], or SH coefficients [N, K, 3] / [C, N, K, 3] with `sh_degree` (0..3, K >=
    (sh_degree + 1)^2); viewmats_c44 world-to-camera (OpenCV), Ks_c33 earthsynth pixel convention.
    render_mode: "RGB" | "D" (sum w_i z_i) | "ED" (D / alpha) | "RGB+D" | "RGB+ED"; backgrounds_c3 [C, D] are
    composited as colour + (1 - alpha) background (depth channels get no background, like gsplat).

    Returns (render_colors [C, H, W, D'], render_alphas [C, H, W, 1], meta) with D' = D (+1 for depth modes,
    1 for "D"/"ED"). meta: means2d [C, N, 2] (gsplat pixel convention, carries the positional gradient), radii
    [C, N] int32 (max of the box half-sizes, 0 = not visible), radii_xy [C, N, 2], depths, conics, opacities
    [C, N] (compensated in "antialiased" mode), width, height, n_cameras, tile_size, backend, ...
    """
    args = check_arguments(
        means_n3=means_n3, quats_n4=quats_n4, scales_n3=scales_n3, opacities_n=opacities_n, colors=colors,
        viewmats_c44=viewmats_c44, Ks_c33=Ks_c33, width=width, height=height, near_plane=near_plane,
        far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d, sh_degree=sh_degree,
        backgrounds_c3=backgrounds_c3, render_mode=render_mode, tile_size=tile_size,
        rasterize_mode=rasterize_mode, backend=backend, render_modes=RENDER_MODES, rasterize_modes=RASTERIZE_MODES,
        backends=BACKENDS, max_sh_degree=MAX_SH_DEGREE)
    chosen = _choose_backend(backend, means_n3.device)
    # gsplat puts pixel centres at (x + 0.5, y + 0.5), earthsynth at (x, y): shift the principal point.
    ks_gsplat = Ks_c33.clone()
    ks_gsplat[:, 0, 2] += PIXEL_CENTRE_SHIFT
    ks_gsplat[:, 1, 2] += PIXEL_CENTRE_SHIFT
    if chosen == "gsplat":
        return _rasterize_gsplat(ks_gsplat=ks_gsplat, **args)
    return _rasterize_cpu(ks_gsplat=ks_gsplat, **args)


def _rasterize_cpu(*, means_n3, quats_n4, scales_n3, opacities_n, colors, viewmats_c44, ks_gsplat, width, height,
                   near_plane, far_plane, radius_clip, eps2d, sh_degree, backgrounds_c3, render_mode, tile_size,
                   rasterize_mode):
    proj = project_gaussians(means_n3, quats_n4, scales_n3, opacities_n, viewmats_c44, ks_gsplat, width, height,
                             near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
                             antialiased=rasterize_mode == "antialiased")
    n_cameras, n = proj.depths_cn.shape
    features = _features(colors, sh_degree, means_n3, viewmats_c44, n_cameras, n, render_mode, proj.depths_cn)
    bins = bin_gaussians(proj.means2d_cn2, proj.radii_cn2, proj.depths_cn, width=width, height=height,
                         tile_size=tile_size)
    render_colors, render_alphas = CompositeGaussians.apply(proj.means2d_cn2, proj.conics_cn3, features,
                                                            proj.opacities_cn, bins, torch.get_num_threads())
    render_colors = _finish(render_colors, render_alphas, backgrounds_c3, render_mode)
    meta = {
        "means2d": proj.means2d_cn2, "radii": proj.radii_cn2.amax(dim=-1), "radii_xy": proj.radii_cn2,
        "depths": proj.depths_cn, "conics": proj.conics_cn3, "opacities": proj.opacities_cn,
        "compensations": proj.compensations_cn, "gaussian_ids": None, "camera_ids": None,
        "width": width, "height": height, "n_cameras": n_cameras, "tile_size": tile_size,
        "tile_width": bins.tiles_w, "tile_height": bins.tiles_h, "n_isects": bins.n_isects, "backend": "ours",
    }
    return render_colors, render_alphas, meta


def _features(colors, sh_degree, means_n3, viewmats_c44, n_cameras, n, render_mode, depths_cn):
    """Per-camera features [C, N, D] to composite: colours (from SH when sh_degree is set) and/or depth."""
    if render_mode in ("D", "ED"):
        return depths_cn[..., None]
    if sh_degree is not None:
        rgb = sh_colors(sh_degree, colors, means_n3, viewmats_c44)
    else:
        rgb = colors if colors.dim() == 3 else colors[None]
    rgb = rgb.expand(n_cameras, n, rgb.shape[-1])
    if render_mode in ("RGB+D", "RGB+ED"):
        return torch.cat([rgb, depths_cn[..., None]], dim=-1)
    return rgb


def _finish(render_colors, render_alphas, backgrounds_c3, render_mode):
    """Background under the colour channels, and expected depth = accumulated depth / alpha (gsplat)."""
    if backgrounds_c3 is not None and render_mode not in ("D", "ED"):
        n_bg = backgrounds_c3.shape[-1]
        colour = render_colors[..., :n_bg] + (1.0 - render_alphas) * backgrounds_c3[:, None, None, :]
        render_colors = torch.cat([colour, render_colors[..., n_bg:]], dim=-1)
    if render_mode in ("ED", "RGB+ED"):
        depth = render_colors[..., -1:] / render_alphas.clamp_min(1e-10)
        render_colors = torch.cat([render_colors[..., :-1], depth], dim=-1)
    return render_colors


def _rasterize_gsplat(*, means_n3, quats_n4, scales_n3, opacities_n, colors, viewmats_c44, ks_gsplat, width, height,
                      near_plane, far_plane, radius_clip, eps2d, sh_degree, backgrounds_c3, render_mode, tile_size,
                      rasterize_mode):
    gsplat = importlib.import_module("gsplat")
    render_colors, render_alphas, meta = gsplat.rasterization(
        means_n3, quats_n4, scales_n3, opacities_n, colors, viewmats_c44, ks_gsplat, width, height,
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d, sh_degree=sh_degree,
        packed=False, tile_size=tile_size, backgrounds=backgrounds_c3, render_mode=render_mode,
        rasterize_mode=rasterize_mode)
    meta = dict(meta)
    radii = meta["radii"]
    if radii.dim() == 3:  # gsplat >= 1.5: per-axis box half-sizes
        meta["radii_xy"], meta["radii"] = radii, radii.amax(dim=-1)
    meta.update(width=width, height=height, n_cameras=viewmats_c44.shape[0], tile_size=tile_size, backend="gsplat")
    return render_colors, render_alphas, meta


@functools.lru_cache(maxsize=1)
def _gsplat_available() -> bool:
    """Whether gsplat imports (looked up once: a failed import is slow to repeat every frame)."""
    try:
        importlib.import_module("gsplat")
    except ImportError:
        return False
    return True


def _choose_backend(backend: str, device: torch.device) -> str:
    if backend == "auto" and os.environ.get(BACKEND_ENV, "auto") != "auto":
        backend = os.environ[BACKEND_ENV]
        if backend not in BACKENDS:
            raise ConfigError(f"${BACKEND_ENV} must be one of {BACKENDS}, got {backend!r}",
                              hint=f"unset {BACKEND_ENV} to let earthsynth choose")
    if backend in ("torch", "cpu"):
        return "cpu"
    if backend == "gsplat":
        if device.type == "cpu":
            raise ConfigError("backend='gsplat' needs the tensors on a CUDA device (gsplat has no CPU kernels); "
                              "these are on the CPU", hint="use backend='cpu' (or 'auto'), or move the tensors "
                              "to the GPU")
        if not _gsplat_available():
            raise ConfigError("backend='gsplat' but the gsplat package is not installed",
                              hint="pip install gsplat, or use backend='auto' / 'cpu'")
        return "gsplat"
    return "gsplat" if device.type != "cpu" and _gsplat_available() else "cpu"
