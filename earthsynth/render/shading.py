"""Sun direction, sun shadow maps, Lambert + ambient shading and per-date appearance changes.

Everything image-shaped is a torch tensor (numpy arrays are accepted as inputs), so a shaded render stays
differentiable w.r.t. the albedo texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from earthsynth.errors import ConfigError
from earthsynth.geo.pinhole import Camera, OrthoCamera
from earthsynth.io.mesh import TexturedMesh
from earthsynth.render.mesh import RenderOutput, downsample, rasterize, render_textured, scaled_camera

MAX_SHADOW_MAP_PIXELS = 8192 * 8192


def sun_direction(elevation_deg: float, azimuth_deg: float) -> np.ndarray:
    """Unit vector (3,) from the ground towards the sun in ENU; azimuth clockwise from north (90 = east)."""
    el, az = np.radians(elevation_deg), np.radians(azimuth_deg)
    return np.array([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)])


def _unit(vector_3) -> np.ndarray:
    vector_3 = np.asarray(vector_3, dtype=np.float64).reshape(3)
    norm = np.linalg.norm(vector_3)
    if not np.isfinite(norm) or norm == 0:
        raise ConfigError(f"sun direction must be a non-zero finite 3-vector, got {vector_3.tolist()}")
    return vector_3 / norm


def shadow_camera(vertices_n3, sun_dir, gsd_m: float) -> OrthoCamera:
    """Orthographic camera looking along -sun_dir whose image covers the whole mesh bounding box."""
    vertices_n3 = np.asarray(vertices_n3, dtype=np.float64)
    lo, hi = vertices_n3.min(0), vertices_n3.max(0)
    centre = (lo + hi) / 2.0
    radius = float(np.linalg.norm(hi - lo)) / 2.0
    # the box is symmetric about its centre, so is its projection: half extents from the 8 corners
    probe = OrthoCamera.looking(-_unit(sun_dir), centre, gsd=gsd_m, width=1, height=1, distance=2.0 * radius + 1.0)
    corners_83 = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    half_extent_2 = np.abs(probe.to_camera(corners_83)[:, :2] - probe.to_camera(centre[None])[:, :2]).max(0)
    width, height = (2 * np.ceil(half_extent_2 / gsd_m) + 3).astype(int)
    if width * height > MAX_SHADOW_MAP_PIXELS:
        raise ConfigError(f"a shadow map at {gsd_m} m would be {width}x{height} pixels",
                          hint="raise the shadow map gsd_m")
    return OrthoCamera.looking(-_unit(sun_dir), centre, gsd=gsd_m, width=int(width), height=int(height),
                               distance=2.0 * radius + 1.0)


def shadow_lit_mask(vertices_n3, faces_f3, points_hw3, valid_hw, sun_dir, *, gsd_m: float,
                    bias_m: float = 0.05) -> torch.Tensor:
    """Which world points (H, W, 3) see the sun (bool (H, W); False where not `valid_hw`).

    A shadow map of the mesh is rasterised from the sun. Instead of comparing against the depth stored at the
    nearest texel centre (which needs a slope-scaled bias: up to gsd * tan(slope) / sqrt(2)), the point is compared
    against the plane of the texel's triangle evaluated at the point's exact shadow-map position, so a constant
    `bias_m` suffices and lit slopes show no acne."""
    if not gsd_m > 0:
        raise ConfigError(f"shadow map gsd_m must be positive, got {gsd_m}")
    vertices_n3 = np.asarray(vertices_n3.detach().cpu() if isinstance(vertices_n3, torch.Tensor) else vertices_n3,
                             dtype=np.float64)
    points_hw3 = np.asarray(torch.as_tensor(points_hw3).detach().cpu(), dtype=np.float64)
    valid_hw = np.asarray(torch.as_tensor(valid_hw).detach().cpu(), dtype=bool)
    if not valid_hw.any() or len(vertices_n3) == 0:
        return torch.from_numpy(valid_hw.copy())
    camera = shadow_camera(vertices_n3, sun_dir, gsd_m)
    fragments = rasterize(vertices_n3, faces_f3, camera)
    uv_m2, depth_m = camera.project(points_hw3[valid_hw])
    col_m = np.clip(np.rint(uv_m2[:, 0]).astype(np.int64), 0, camera.width - 1)
    row_m = np.clip(np.rint(uv_m2[:, 1]).astype(np.int64), 0, camera.height - 1)
    ids_m = fragments.triangle_id_hw.numpy()[row_m, col_m]
    occluder_depth_m = _plane_depth(vertices_n3, np.asarray(faces_f3, dtype=np.int64), camera, ids_m, uv_m2,
                                    fragments.depth_hw.numpy()[row_m, col_m].astype(np.float64))
    lit_hw = np.zeros(valid_hw.shape, dtype=bool)
    lit_hw[valid_hw] = (ids_m < 0) | (depth_m <= occluder_depth_m + bias_m)
    return torch.from_numpy(lit_hw)


def _plane_depth(vertices_n3, faces_f3, camera: OrthoCamera, ids_m, uv_m2, texel_depth_m) -> np.ndarray:
    """Depth of triangle ids_m's plane at shadow-map positions uv_m2 (affine: the camera is orthographic);
    the texel-centre depth where the triangle is seen (nearly) edge-on from the sun or there is none."""
    uv_n2, depth_n = camera.project(vertices_n3)
    tri_m3 = faces_f3[np.maximum(ids_m, 0)]
    p0, p1, p2 = (uv_n2[tri_m3[:, k]] for k in range(3))
    area_m = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (p2[:, 0] - p0[:, 0])
    ok_m = (ids_m >= 0) & (np.abs(area_m) > 1e-9)
    safe_area_m = np.where(ok_m, area_m, 1.0)
    d1, d2 = p1 - uv_m2, p2 - uv_m2
    d0 = p0 - uv_m2
    b0 = (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / safe_area_m
    b1 = (d2[:, 0] * d0[:, 1] - d2[:, 1] * d0[:, 0]) / safe_area_m
    plane_m = b0 * depth_n[tri_m3[:, 0]] + b1 * depth_n[tri_m3[:, 1]] + (1.0 - b0 - b1) * depth_n[tri_m3[:, 2]]
    return np.where(ok_m, plane_m, texel_depth_m)


def lambert(albedo_hw3, normals_hw3, sun_dir, lit_hw, *, ambient: float = 0.3,
            sun_strength: float = 0.7) -> torch.Tensor:
    """albedo * (ambient + sun_strength * max(0, n . sun) * lit): a white surface facing the sun is 1."""
    albedo_hw3 = torch.as_tensor(albedo_hw3)
    normals_hw3 = torch.as_tensor(normals_hw3, dtype=albedo_hw3.dtype)
    sun_3 = torch.as_tensor(_unit(sun_dir), dtype=albedo_hw3.dtype)
    cosine_hw = (normals_hw3 * sun_3).sum(-1).clamp(min=0.0)
    light_hw = ambient + sun_strength * cosine_hw * torch.as_tensor(lit_hw).to(albedo_hw3.dtype)
    return albedo_hw3 * light_hw[..., None]


@dataclass(frozen=True)
class Appearance:
    """One acquisition date's look: exposure gain, white balance gains (R, G, B), then a blend towards a haze
    colour by `haze_amount` (0 = clear, 1 = all haze)."""

    exposure: float = 1.0
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    haze_color: tuple[float, float, float] = (0.75, 0.78, 0.82)
    haze_amount: float = 0.0

    def __post_init__(self):
        if not self.exposure > 0:
            raise ConfigError(f"appearance exposure must be positive, got {self.exposure}")
        if len(self.white_balance) != 3 or not all(g > 0 for g in self.white_balance):
            raise ConfigError(f"white balance must be three positive gains, got {self.white_balance}")
        if len(self.haze_color) != 3:
            raise ConfigError(f"haze colour must be an RGB triple, got {self.haze_color}")
        if not 0.0 <= self.haze_amount <= 1.0:
            raise ConfigError(f"haze amount must lie in [0, 1], got {self.haze_amount}")

    def apply(self, image_hw3):
        """The image (torch or numpy, (..., 3)) as seen on this date."""
        if isinstance(image_hw3, torch.Tensor):
            gains_3 = torch.as_tensor(self.white_balance, dtype=image_hw3.dtype, device=image_hw3.device)
            haze_3 = torch.as_tensor(self.haze_color, dtype=image_hw3.dtype, device=image_hw3.device)
        else:
            image_hw3 = np.asarray(image_hw3)
            gains_3 = np.asarray(self.white_balance, dtype=image_hw3.dtype)
            haze_3 = np.asarray(self.haze_color, dtype=image_hw3.dtype)
        exposed = image_hw3 * (self.exposure * gains_3)
        return exposed * (1.0 - self.haze_amount) + haze_3 * self.haze_amount


def random_appearance(rng: np.random.Generator) -> Appearance:
    """A plausible date: exposure x0.75-1.3, white balance gains 0.9-1.1 (green fixed at 1), haze 0-0.3 of a
    bluish grey. Same generator state -> same appearance."""
    exposure = float(np.exp(rng.uniform(np.log(0.75), np.log(1.3))))
    red, blue = rng.uniform(0.9, 1.1, 2)
    haze_amount = float(rng.uniform(0.0, 0.3))
    haze_color = tuple(float(c) for c in np.clip(np.array([0.72, 0.76, 0.82]) + rng.uniform(-0.05, 0.05, 3), 0, 1))
    return Appearance(exposure, (float(red), 1.0, float(blue)), haze_color, haze_amount)


@dataclass(frozen=True, eq=False)
class ShadedView:
    rgb_hw3: torch.Tensor   # float32 in [0, 1] at the camera's resolution
    alpha_hw: torch.Tensor  # float32 coverage at the camera's resolution
    lit_hw: torch.Tensor    # bool, at the rasterised (supersampled) resolution
    render: RenderOutput    # the albedo render at the rasterised resolution


def shade_view(mesh: TexturedMesh, camera: Camera | OrthoCamera, sun_dir, *, appearance: Appearance | None = None,
               supersample: int = 1, shadow_gsd_m: float | None = None, bias_m: float = 0.05,
               ambient: float = 0.3, sun_strength: float = 0.7, background=(0.0, 0.0, 0.0),
               texture: torch.Tensor | None = None) -> ShadedView:
    """Final RGB of a satellite or oblique view: albedo render, sun shadows, Lambert + ambient, then the date's
    appearance. Shading happens at the supersampled resolution and is box-filtered afterwards. The default shadow
    map resolution puts 2048 texels across the mesh's larger horizontal extent."""
    fine_camera = scaled_camera(camera, supersample)
    render = render_textured(mesh, fine_camera, background=background, texture=texture)
    valid_hw = render.fragments.mask_hw
    if shadow_gsd_m is None:
        extent_2 = np.ptp(mesh.vertices_n3[:, :2], axis=0) if mesh.num_faces else np.ones(2)
        shadow_gsd_m = max(float(extent_2.max()), 1e-3) / 2048.0
    lit_hw = shadow_lit_mask(mesh.vertices_n3, mesh.faces_f3, render.points_hw3, valid_hw, sun_dir,
                             gsd_m=shadow_gsd_m, bias_m=bias_m)
    shaded_hw3 = lambert(render.rgb_hw3, render.normal_hw3, sun_dir, lit_hw, ambient=ambient,
                         sun_strength=sun_strength)
    rgb_hw3 = torch.where(valid_hw[..., None], shaded_hw3, render.rgb_hw3)  # background keeps its colour
    rgb_hw3 = downsample(rgb_hw3, supersample)
    if appearance is not None:
        rgb_hw3 = appearance.apply(rgb_hw3)
    return ShadedView(rgb_hw3.clamp(0.0, 1.0), downsample(render.alpha_hw, supersample), lit_hw, render)
