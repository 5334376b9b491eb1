"""CPU triangle rasteriser (visibility, triangle id, barycentrics, depth) and differentiable interpolation.

`rasterize` runs numba z-buffer kernels (`raster_kernel.py`) on float64 projected vertices; everything after
visibility (attribute interpolation, texture sampling, differentiable barycentrics) is torch, so gradients reach
per-vertex attributes, textures and vertex positions. Pixel (row i, col j) is sampled at its centre u = j, v = i.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch
import torch.nn.functional as F

from earthsynth.errors import ConfigError
from earthsynth.geo.pinhole import Camera, OrthoCamera
from earthsynth.io.mesh import TexturedMesh
from earthsynth.render import raster_kernel

DEFAULT_NEAR = 1e-3  # metres; fragments nearer than this to the camera plane are dropped
STRIPE_SHIFT = 3  # 2**3 rows per work unit of the rasteriser: small enough to balance, large enough to bin cheaply


@dataclass(frozen=True, eq=False)
class Fragments:
    """What the rasteriser saw at each pixel centre, at the rasterised (supersampled) resolution."""

    triangle_id_hw: torch.Tensor    # int64, -1 on the background
    barycentrics_hw3: torch.Tensor  # float32, perspective-correct, w.r.t. the original triangle; 0 on background
    depth_hw: torch.Tensor          # float32 z_cam (depth along the optical axis); +inf on background
    supersample: int                # the factor the camera was scaled by before rasterising

    @property
    def height(self) -> int:
        return int(self.triangle_id_hw.shape[0])

    @property
    def width(self) -> int:
        return int(self.triangle_id_hw.shape[1])

    @property
    def mask_hw(self) -> torch.Tensor:
        return self.triangle_id_hw >= 0


def scaled_camera(camera: Camera | OrthoCamera, supersample: int) -> Camera | OrthoCamera:
    """The camera whose pixel grid is `supersample` times finer, with the same image footprint."""
    s = _check_supersample(supersample)
    if not isinstance(camera, (Camera, OrthoCamera)):
        raise ConfigError(f"expected a Camera or OrthoCamera, got {type(camera).__name__}")
    if s == 1:
        return camera
    if isinstance(camera, Camera):
        return camera.resized(camera.width * s, camera.height * s)
    return OrthoCamera(camera.viewmat.copy(), camera.gsd / s, s * (camera.cx + 0.5) - 0.5,
                       s * (camera.cy + 0.5) - 0.5, camera.width * s, camera.height * s)


def rasterize(vertices_n3, faces_f3, camera: Camera | OrthoCamera, *, supersample: int = 1,
              cull_backfaces: bool = False, near: float = DEFAULT_NEAR) -> Fragments:
    """Z-buffered rasterisation of a triangle mesh seen by `camera` (both windings unless `cull_backfaces`).

    Back faces are those seen clockwise from the camera (faces are counter-clockwise seen from outside).
    Ties in depth go to the smaller triangle id, so the output is deterministic."""
    vertices_n3 = _as_numpy_vertices(vertices_n3)
    faces_f3 = _as_numpy_faces(faces_f3, len(vertices_n3))
    if not near > 0:
        raise ConfigError(f"near plane must be positive, got {near}")
    cam = scaled_camera(camera, supersample)
    projection_34, depth_4 = _projection(cam)
    perspective = isinstance(cam, Camera)
    hom_n3, depth_n, uv_n2 = raster_kernel.project_vertices(vertices_n3, projection_34, depth_4, perspective,
                                                            float(near))
    ids_hw, zbuf_hw, bary_hw3 = raster_kernel.rasterize_arrays(
        hom_n3, depth_n, uv_n2, faces_f3, perspective=perspective, cull_back=bool(cull_backfaces), near=float(near),
        height=cam.height, width=cam.width, n_workers=numba.get_num_threads(), stripe_shift=STRIPE_SHIFT)
    return Fragments(torch.from_numpy(ids_hw), torch.from_numpy(bary_hw3),
                     torch.from_numpy(zbuf_hw.astype(np.float32)), int(supersample))


def _projection(cam) -> tuple[np.ndarray, np.ndarray]:
    """World -> homogeneous image point h = P [x, 1] (pinhole: K [R | t], so h_w = z_cam; ortho: (u, v, 1)),
    and the depth row d with z_cam = d . [x, 1]."""
    world_to_cam_34 = cam.viewmat[:3, :]
    if isinstance(cam, Camera):
        K = cam.K / cam.K[2, 2]
        if K[2, 0] != 0 or K[2, 1] != 0:
            raise ConfigError(f"camera intrinsics must have a last row (0, 0, 1), got {cam.K[2].tolist()}")
        return np.ascontiguousarray(K @ world_to_cam_34), world_to_cam_34[2].copy()
    projection_34 = np.zeros((3, 4))
    projection_34[:2] = world_to_cam_34[:2] / cam.gsd
    projection_34[:2, 3] += [cam.cx, cam.cy]
    projection_34[2, 3] = 1.0
    return projection_34, world_to_cam_34[2].copy()


def _check_supersample(supersample) -> int:
    if int(supersample) != supersample or supersample < 1:
        raise ConfigError(f"supersample must be a positive integer, got {supersample!r}")
    return int(supersample)


def _as_numpy_vertices(vertices_n3) -> np.ndarray:
    if isinstance(vertices_n3, torch.Tensor):
        vertices_n3 = vertices_n3.detach().cpu().numpy()
    vertices_n3 = np.asarray(vertices_n3, dtype=np.float64)
    if vertices_n3.ndim != 2 or vertices_n3.shape[1] != 3:
        raise ConfigError(f"vertices must have shape (N, 3), got {vertices_n3.shape}")
    if not np.isfinite(vertices_n3).all():
        raise ConfigError("vertices contain NaN or infinite coordinates", hint="remove or fix those vertices")
    return np.ascontiguousarray(vertices_n3)


def _as_numpy_faces(faces_f3, num_vertices: int) -> np.ndarray:
    if isinstance(faces_f3, torch.Tensor):
        faces_f3 = faces_f3.detach().cpu().numpy()
    faces_f3 = np.asarray(faces_f3)
    if faces_f3.size == 0:
        return np.zeros((0, 3), np.int64)
    if faces_f3.ndim != 2 or faces_f3.shape[1] != 3 or not np.issubdtype(faces_f3.dtype, np.integer):
        raise ConfigError(f"faces must be an integer array of shape (F, 3), got {faces_f3.dtype} {faces_f3.shape}")
    if faces_f3.min() < 0 or faces_f3.max() >= num_vertices:
        raise ConfigError(f"face indices must lie in [0, {num_vertices - 1}], got [{faces_f3.min()}, "
                          f"{faces_f3.max()}]")
    return np.ascontiguousarray(faces_f3, dtype=np.int64)


def _faces_tensor(faces_f3, device) -> torch.Tensor:
    if isinstance(faces_f3, torch.Tensor):
        return faces_f3.to(device=device, dtype=torch.int64)
    return torch.as_tensor(np.asarray(faces_f3, dtype=np.int64), device=device)


# ---------------------------------------------------------------------------------------------- differentiable


def interpolate(attributes_vc: torch.Tensor, faces_f3, fragments: Fragments, *,
                barycentrics_hw3: torch.Tensor | None = None) -> torch.Tensor:
    """Per-vertex attributes (V, C) -> per-pixel (H, W, C); differentiable w.r.t. the attributes (and w.r.t.
    `barycentrics_hw3` when given, e.g. from `barycentrics_differentiable`). Background pixels are 0."""
    attributes_vc = torch.as_tensor(attributes_vc)
    if attributes_vc.ndim != 2:
        raise ConfigError(f"attributes must have shape (V, C), got {tuple(attributes_vc.shape)}")
    bary_hw3 = fragments.barycentrics_hw3 if barycentrics_hw3 is None else barycentrics_hw3
    faces_f3 = _faces_tensor(faces_f3, attributes_vc.device)
    if faces_f3.shape[0] == 0:  # nothing can be visible: every pixel is background
        return attributes_vc.new_zeros((fragments.height, fragments.width, attributes_vc.shape[1]))
    mask_hw = fragments.mask_hw.to(attributes_vc.device)
    tri_vertices_hw3 = faces_f3[fragments.triangle_id_hw.clamp(min=0).to(attributes_vc.device)]
    values_hw3c = attributes_vc[tri_vertices_hw3]
    out_hwc = (bary_hw3.to(device=attributes_vc.device, dtype=attributes_vc.dtype)[..., None] * values_hw3c).sum(-2)
    return torch.where(mask_hw[..., None], out_hwc, torch.zeros((), dtype=out_hwc.dtype, device=out_hwc.device))


def barycentrics_differentiable(vertices_n3: torch.Tensor, faces_f3, fragments: Fragments,
                                camera: Camera | OrthoCamera) -> torch.Tensor:
    """Barycentrics (H, W, 3) recomputed in torch from the triangle ids and the pixel rays, so gradients flow to
    the vertex positions. `camera` is the one given to `rasterize` (before supersampling)."""
    cam = scaled_camera(camera, fragments.supersample)
    dtype, device = vertices_n3.dtype, vertices_n3.device
    rotation = torch.as_tensor(cam.rotation, dtype=dtype, device=device)
    translation = torch.as_tensor(cam.translation, dtype=dtype, device=device)
    points_cam_n3 = vertices_n3 @ rotation.T + translation
    if isinstance(cam, Camera):
        hom_n3 = points_cam_n3 @ torch.as_tensor(cam.K, dtype=dtype, device=device).T
    else:
        uv_n2 = points_cam_n3[:, :2] / cam.gsd + torch.tensor([cam.cx, cam.cy], dtype=dtype, device=device)
        hom_n3 = torch.cat([uv_n2, torch.ones_like(uv_n2[:, :1])], dim=1)
    ids_flat = fragments.triangle_id_hw.reshape(-1).to(device)
    pixels = torch.nonzero(ids_flat >= 0).squeeze(1)
    tri_vertices_m3 = _faces_tensor(faces_f3, device)[ids_flat[pixels]]
    h0, h1, h2 = (hom_n3[tri_vertices_m3[:, k]] for k in range(3))
    rows = torch.div(pixels, fragments.width, rounding_mode="floor")
    cols = pixels - rows * fragments.width
    p_m3 = torch.stack([cols.to(dtype), rows.to(dtype), torch.ones_like(cols, dtype=dtype)], dim=1)
    # Cramer's rule for M e = p with M = [h0 h1 h2]; the common 1 / det cancels in e / sum(e)
    e_m3 = torch.stack([(p_m3 * torch.linalg.cross(h1, h2)).sum(1), (p_m3 * torch.linalg.cross(h2, h0)).sum(1),
                        (p_m3 * torch.linalg.cross(h0, h1)).sum(1)], dim=1)
    bary_m3 = e_m3 / e_m3.sum(1, keepdim=True)
    out = torch.zeros((fragments.height * fragments.width, 3), dtype=dtype, device=device)
    return out.index_copy(0, pixels, bary_m3).reshape(fragments.height, fragments.width, 3)


def sample_texture(texture_hwc: torch.Tensor, uv_hw2: torch.Tensor) -> torch.Tensor:
    """Bilinear texture lookup (H, W, C) with the glTF UV convention of `TexturedMesh`: uv (0, 0) is the top-left
    corner of the image, texel (i, j) has its centre at ((j + .5) / W, (i + .5) / H); lookups outside [0, 1]
    clamp to the edge texels. Differentiable w.r.t. the texture (and the uvs)."""
    if texture_hwc.ndim != 3:
        raise ConfigError(f"texture must have shape (H, W, C), got {tuple(texture_hwc.shape)}")
    # align_corners=False: grid -1 / +1 are the outer edges of the edge texels, i.e. uv 0 / 1: grid = 2 uv - 1
    grid = (uv_hw2.to(texture_hwc.dtype) * 2.0 - 1.0)[None]
    sampled = F.grid_sample(texture_hwc.permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
    return sampled[0].permute(1, 2, 0)


def downsample(image_hwc, s: int):
    """Box filter by an integer factor (resolves supersampling); (H, W) or (H, W, C), torch or numpy."""
    s = _check_supersample(s)
    if s == 1:
        return image_hwc
    height, width = image_hwc.shape[:2]
    if height % s or width % s:
        raise ConfigError(f"image size {width}x{height} is not a multiple of the supersampling factor {s}")
    blocks = image_hwc.reshape((height // s, s, width // s, s) + tuple(image_hwc.shape[2:]))
    return blocks.mean(axis=(1, 3)) if isinstance(blocks, np.ndarray) else blocks.mean(dim=(1, 3))


def _coverage_mean(values_hwc: torch.Tensor, mask_hw: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the covered sub-pixels of each output pixel, and the covered count (0 where none)."""
    count_hw = downsample(mask_hw.to(values_hwc.dtype), s) * (s * s)
    masked = torch.where(mask_hw[..., None], values_hwc, torch.zeros((), dtype=values_hwc.dtype))
    total_hwc = downsample(masked, s) * (s * s)
    return total_hwc / count_hw.clamp(min=1.0)[..., None], count_hw


# -------------------------------------------------------------------------------------------------- renders


@dataclass(frozen=True, eq=False)
class RenderOutput:
    rgb_hw3: torch.Tensor       # float32 in [0, 1], background composited; differentiable w.r.t. `texture`
    alpha_hw: torch.Tensor      # float32 coverage in [0, 1]
    depth_hw: torch.Tensor      # float32 mean z_cam over covered sub-pixels; +inf where none
    normal_hw3: torch.Tensor    # float32 world-space unit face normal (from the winding); 0 where none
    points_hw3: torch.Tensor    # float32 world position; 0 where none
    fragments: Fragments        # at the rasterised (supersampled) resolution


def render_textured(mesh: TexturedMesh, camera: Camera | OrthoCamera, *, supersample: int = 1,
                    background=(0.0, 0.0, 0.0), texture: torch.Tensor | None = None,
                    cull_backfaces: bool = False) -> RenderOutput:
    """Albedo render of a mesh: its texture (or `texture`, a float (H, W, 3) tensor in [0, 1] replacing it, through
    which gradients flow), else its vertex colours, else white."""
    s = _check_supersample(supersample)
    fragments = rasterize(mesh.vertices_n3, mesh.faces_f3, camera, supersample=s, cull_backfaces=cull_backfaces)
    mask_hw = fragments.mask_hw
    colour_hw3 = _albedo(mesh, fragments, texture)
    background_3 = torch.as_tensor(background, dtype=colour_hw3.dtype)
    if background_3.shape != (3,):
        raise ConfigError(f"background must be an RGB triple, got {background!r}")
    rgb_hw3 = torch.where(mask_hw[..., None], colour_hw3, background_3)
    vertices_n3 = torch.from_numpy(mesh.vertices_n3)
    points_hw3 = interpolate(vertices_n3, mesh.faces_f3, fragments)
    normals_f3 = torch.from_numpy(face_normals(mesh.vertices_n3, mesh.faces_f3))
    normal_hw3 = normals_f3[fragments.triangle_id_hw.clamp(min=0)] if mesh.num_faces else points_hw3 * 0
    depth_hw1 = fragments.depth_hw.double()[..., None]
    if s > 1:
        points_hw3, count_hw = _coverage_mean(points_hw3, mask_hw, s)
        depth_hw1, _ = _coverage_mean(depth_hw1, mask_hw, s)
        normal_hw3, _ = _coverage_mean(normal_hw3, mask_hw, s)
        normal_hw3 = normal_hw3 / normal_hw3.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        mask_out_hw = count_hw > 0
    else:
        mask_out_hw = mask_hw
    zero = torch.zeros((), dtype=torch.float64)
    return RenderOutput(
        rgb_hw3=downsample(rgb_hw3, s).float(),
        alpha_hw=downsample(mask_hw.float(), s),
        depth_hw=torch.where(mask_out_hw, depth_hw1[..., 0], torch.tensor(np.inf, dtype=torch.float64)).float(),
        normal_hw3=torch.where(mask_out_hw[..., None], normal_hw3, zero).float(),
        points_hw3=torch.where(mask_out_hw[..., None], points_hw3, zero).float(),
        fragments=fragments)


def _albedo(mesh: TexturedMesh, fragments: Fragments, texture: torch.Tensor | None) -> torch.Tensor:
    if texture is None and mesh.texture_hw3 is not None:
        texture = torch.tensor(mesh.texture_hw3, dtype=torch.float32) / 255.0   # copies: GLB textures are read-only
    if texture is not None:
        if mesh.uvs_n2 is None:
            raise ConfigError("a texture was given but the mesh has no uvs", hint="unwrap the mesh (uvs_n2) first")
        uv_hw2 = interpolate(torch.as_tensor(mesh.uvs_n2, dtype=torch.float32), mesh.faces_f3, fragments)
        return sample_texture(texture, uv_hw2)
    if mesh.vertex_colors_n3 is not None:
        return interpolate(torch.as_tensor(mesh.vertex_colors_n3, dtype=torch.float32), mesh.faces_f3, fragments)
    return torch.ones((fragments.height, fragments.width, 3), dtype=torch.float32)


def face_normals(vertices_n3, faces_f3) -> np.ndarray:
    """Unit normals (F, 3) float64 of counter-clockwise faces; 0 for degenerate faces."""
    v = np.asarray(vertices_n3, dtype=np.float64)[np.asarray(faces_f3, dtype=np.int64)]
    normals_f3 = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    norm_f1 = np.linalg.norm(normals_f3, axis=1, keepdims=True)
    return np.divide(normals_f3, norm_f1, out=np.zeros_like(normals_f3), where=norm_f1 > 0)


def render_height(vertices_n3, faces_f3, camera: Camera | OrthoCamera, *, supersample: int = 1) -> np.ndarray:
    """World height z (H, W) float32 of the visible surface, e.g. a DSM with `OrthoCamera.top_down`; NaN where
    nothing is seen. With supersampling, the mean over the covered sub-pixels."""
    s = _check_supersample(supersample)
    vertices_n3 = _as_numpy_vertices(vertices_n3)
    fragments = rasterize(vertices_n3, faces_f3, camera, supersample=s)
    z_hw1 = interpolate(torch.from_numpy(vertices_n3[:, 2:3]), faces_f3, fragments)
    height_hw1, count_hw = _coverage_mean(z_hw1, fragments.mask_hw, s)
    return np.where(count_hw.numpy() > 0, height_hw1[..., 0].numpy(), np.nan).astype(np.float32)


def render_height_torch(vertices_n3: torch.Tensor, faces_f3, camera: Camera | OrthoCamera, *,
                        supersample: int = 1) -> torch.Tensor:
    """Differentiable `render_height`: gradients reach all three coordinates of the vertices (through z and
    through the barycentrics). NaN where nothing is seen: mask with `torch.isfinite` before a loss."""
    s = _check_supersample(supersample)
    fragments = rasterize(vertices_n3, faces_f3, camera, supersample=s)
    bary_hw3 = barycentrics_differentiable(vertices_n3, faces_f3, fragments, camera)
    z_hw1 = interpolate(vertices_n3[:, 2:3], faces_f3, fragments, barycentrics_hw3=bary_hw3)
    height_hw1, count_hw = _coverage_mean(z_hw1, fragments.mask_hw, s)
    nan = torch.tensor(float("nan"), dtype=height_hw1.dtype, device=height_hw1.device)
    return torch.where(count_hw > 0, height_hw1[..., 0], nan)
