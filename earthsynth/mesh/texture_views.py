"""Views for texture optimisation: rasterised once, rendered many times; back-projection; colour fits.

The geometry and cameras do not change while a texture is optimised, so each view is rasterised once
(`prepare_views`) and only the uv of every covered (sub-)pixel is kept: rendering is then one bilinear lookup
(`render.mesh.sample_texture`, the same convention as `render_textured`) and a scatter into the image, which is
what makes hundreds of Adam steps affordable on a CPU. Memory: 16 bytes per covered sub-pixel (uv, index) plus
the target image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from earthsynth.errors import ConfigError
from earthsynth.geo.pinhole import Camera, OrthoCamera
from earthsynth.io.mesh import TexturedMesh
from earthsynth.render.mesh import downsample, face_normals, rasterize, sample_texture


@dataclass(frozen=True, eq=False)
class PreparedView:
    target_hw3: torch.Tensor      # float32 in [0, 1], the image to match
    mask_hw: torch.Tensor         # bool: pixels whose every sub-pixel sees the mesh (the loss is taken there)
    pixel_index_m: torch.Tensor   # int64 flat index of each covered sub-pixel in the (H s, W s) grid
    uv_m2: torch.Tensor           # float32 glTF uv of each covered sub-pixel
    cosine_m: torch.Tensor        # float32 |cos| between the view ray and the face normal (back-projection weight)
    supersample: int

    @property
    def height(self) -> int:
        return int(self.target_hw3.shape[0])

    @property
    def width(self) -> int:
        return int(self.target_hw3.shape[1])


def image_to_float(image, name: str) -> torch.Tensor:
    """(H, W, 3) uint8 -> / 255; float must already lie in [0, 1] (no silent clamp)."""
    t = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if not isinstance(t, torch.Tensor):
        raise ConfigError(f"{name}: expected a numpy array or torch tensor, got {type(image).__name__}")
    t = t.detach().cpu()
    if t.ndim != 3 or t.shape[-1] != 3:
        raise ConfigError(f"{name}: expected an (H, W, 3) RGB image, got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if not t.is_floating_point():
        raise ConfigError(f"{name}: expected uint8 or float pixels, got {t.dtype}")
    t = t.float()
    if not bool(torch.isfinite(t).all()) or float(t.min()) < 0.0 or float(t.max()) > 1.0:
        raise ConfigError(f"{name}: float pixels must be finite and lie in [0, 1] "
                          f"(got [{float(t.min()):.3g}, {float(t.max()):.3g}])", hint="scale the image to [0, 1]")
    return t


def _view_rays(camera, points_m3: np.ndarray) -> np.ndarray:
    if isinstance(camera, Camera):
        rays = points_m3 - camera.center
        return rays / np.linalg.norm(rays, axis=1, keepdims=True).clip(min=1e-12)
    return np.broadcast_to(camera.rotation[2], points_m3.shape)   # orthographic: the optical axis


def prepare_view(mesh: TexturedMesh, camera, image, *, supersample: int, index: int, device) -> PreparedView:
    name = f"views[{index}]"
    if not isinstance(camera, (Camera, OrthoCamera)):
        raise ConfigError(f"{name}: expected a Camera or OrthoCamera, got {type(camera).__name__}",
                          hint="use the scene's pinhole approximation for satellite views")
    target = image_to_float(image, f"{name} image")
    if tuple(target.shape[:2]) != (camera.height, camera.width):
        raise ConfigError(f"{name}: the image is {target.shape[1]}x{target.shape[0]} px but its camera is "
                          f"{camera.width}x{camera.height} px", hint="resize the image or the camera (.resized)")
    fragments = rasterize(mesh.vertices_n3, mesh.faces_f3, camera, supersample=supersample)
    ids = fragments.triangle_id_hw.reshape(-1).numpy()
    pixels = np.flatnonzero(ids >= 0)
    if pixels.size == 0:
        raise ConfigError(f"{name}: the camera sees no part of the mesh", hint="check the camera pose")
    faces_m3 = mesh.faces_f3[ids[pixels]]
    bary_m3 = fragments.barycentrics_hw3.reshape(-1, 3).numpy()[pixels].astype(np.float64)
    uv_m2 = np.einsum("mk,mkc->mc", bary_m3, np.asarray(mesh.uvs_n2, np.float64)[faces_m3])
    points_m3 = np.einsum("mk,mkc->mc", bary_m3, mesh.vertices_n3[faces_m3])
    normals_m3 = face_normals(mesh.vertices_n3, mesh.faces_f3)[ids[pixels]]
    cosine_m = np.abs((normals_m3 * _view_rays(camera, points_m3)).sum(axis=1))
    full_hw = downsample(fragments.mask_hw.float(), supersample) >= 1.0
    if not bool(full_hw.any()):
        raise ConfigError(f"{name}: the mesh covers no whole pixel of this view", hint="check the camera pose")
    return PreparedView(target.to(device), full_hw.to(device), torch.from_numpy(pixels).to(device),
                        torch.from_numpy(uv_m2.astype(np.float32)).to(device),
                        torch.from_numpy(cosine_m.astype(np.float32)).to(device), int(supersample))


def prepare_views(mesh: TexturedMesh, views, *, supersample: int, device) -> list[PreparedView]:
    if not isinstance(views, (list, tuple)) or len(views) == 0:
        raise ConfigError("optimize_texture: no views given", hint="pass a list of (camera, image) pairs")
    prepared = []
    for k, item in enumerate(views):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ConfigError(f"views[{k}]: expected a (camera, image) pair, got {type(item).__name__}")
        prepared.append(prepare_view(mesh, item[0], item[1], supersample=supersample, index=k, device=device))
    return prepared


def render_view(texture_hw3: torch.Tensor, view: PreparedView) -> torch.Tensor:
    """(H, W, 3) albedo render of the view's covered pixels (0 elsewhere), differentiable w.r.t. the texture."""
    s = view.supersample
    values_m3 = sample_texture(texture_hw3, view.uv_m2[None])[0]
    grid = texture_hw3.new_zeros((view.height * s * view.width * s, 3)).index_copy(0, view.pixel_index_m, values_m3)
    return downsample(grid.reshape(view.height * s, view.width * s, 3), s)


def _bilinear_taps(uv_m2: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 texels (flat index (M, 4)) and weights (M, 4) that `sample_texture` blends at each uv (the border
    clamp included), so splatting with them is the adjoint of sampling."""
    x = (uv_m2[:, 0] * width - 0.5).clamp(0, width - 1)
    y = (uv_m2[:, 1] * height - 0.5).clamp(0, height - 1)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
    index = torch.stack([y0 * width + x0, y0 * width + x1, y1 * width + x0, y1 * width + x1], dim=1)
    weight = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1)
    return index, weight


def back_project(views: list[PreparedView], height: int, width: int, *, gains_v3=None, biases_v3=None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean of the pixel colours landing on each texel over all views -> (texture (H, W, 3), weight
    (H, W)). Each covered sub-pixel splats its pixel's colour with its bilinear weights times the view-angle
    cosine (so grazing views, which smear a pixel over many texels, count less). Visibility is the rasteriser's
    depth test: only visible fragments were kept. With gains/biases, colours are first mapped back through each
    view's appearance, (c - b) / g."""
    device = views[0].target_hw3.device
    total = torch.zeros((height * width, 3), device=device)
    weight = torch.zeros(height * width, device=device)
    for k, view in enumerate(views):
        s = view.supersample
        rows = torch.div(view.pixel_index_m, view.width * s, rounding_mode="floor") // s
        cols = (view.pixel_index_m % (view.width * s)) // s
        colour_m3 = view.target_hw3[rows, cols]
        if gains_v3 is not None:
            colour_m3 = (colour_m3 - biases_v3[k]) / gains_v3[k]
        index_m4, weight_m4 = _bilinear_taps(view.uv_m2, height, width)
        weight_m4 = weight_m4 * view.cosine_m[:, None]
        total.index_add_(0, index_m4.reshape(-1), (weight_m4[..., None] * colour_m3[:, None]).reshape(-1, 3))
        weight.index_add_(0, index_m4.reshape(-1), weight_m4.reshape(-1))
    texture = total / weight.clamp(min=1e-12)[:, None]
    return texture.reshape(height, width, 3), weight.reshape(height, width)


def fit_gain_bias(rendered_hw3: torch.Tensor, target_hw3: torch.Tensor, mask_hw: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel least squares target = gain * rendered + bias over the masked pixels -> (gain (3,), bias (3,))."""
    r, t = rendered_hw3[mask_hw], target_hw3[mask_hw]
    r_mean, t_mean = r.mean(0), t.mean(0)
    variance = ((r - r_mean) ** 2).mean(0)
    gain = ((r - r_mean) * (t - t_mean)).mean(0) / variance.clamp(min=1e-8)
    # a flat render (variance 0) says nothing about the gain; the clamp keeps one odd view from inverting colours
    gain = torch.where(variance > 1e-8, gain, torch.ones_like(gain)).clamp(0.2, 5.0)
    return gain, t_mean - gain * r_mean
