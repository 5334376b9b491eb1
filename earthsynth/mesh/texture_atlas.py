"""UV atlas of a mesh (xatlas) and hole filling of texture atlases (pull-push).

xatlas returns, per output vertex, the index of the input vertex it copies (`vmapping`: vertices are duplicated
along chart seams), new faces, and uvs normalised by the atlas size, with its texel x along u and texel *row* y
along v. earthsynth stores the texture image row by row in that same y order, so xatlas's (u, v) already is the
glTF convention of `TexturedMesh` (uv (0, 0) = top-left corner, v down, texel (i, j) centred at
((j + .5) / W, (i + .5) / H)); no flip is needed (tests/test_mesh_texture.py checks the texel-centre convention by
rasterising the charts).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from earthsynth.errors import ConfigError
from earthsynth.io.mesh import TexturedMesh

ASSUMED_UTILISATION = 0.75   # share of an xatlas atlas its charts fill (typical 0.7-0.9): sizes the first guess
EMPTY_GREY = 128


def _check_inputs(vertices_n3, faces_f3, texel_m, max_size, padding) -> tuple[np.ndarray, np.ndarray]:
    vertices_n3 = np.asarray(vertices_n3, dtype=np.float64)
    faces_f3 = np.asarray(faces_f3)
    if vertices_n3.ndim != 2 or vertices_n3.shape[1] != 3 or not np.isfinite(vertices_n3).all():
        raise ConfigError(f"unwrap_uv: vertices must be a finite (N, 3) array, got shape {vertices_n3.shape}")
    if faces_f3.ndim != 2 or faces_f3.shape[1] != 3 or faces_f3.shape[0] == 0 or \
            not np.issubdtype(faces_f3.dtype, np.integer):
        raise ConfigError(f"unwrap_uv: faces must be a non-empty integer (F, 3) array, got {faces_f3.dtype} "
                          f"{faces_f3.shape}")
    if faces_f3.min() < 0 or faces_f3.max() >= len(vertices_n3):
        raise ConfigError(f"unwrap_uv: face indices must lie in [0, {len(vertices_n3) - 1}]")
    if not (isinstance(texel_m, (int, float)) and texel_m > 0 and math.isfinite(texel_m)):
        raise ConfigError(f"unwrap_uv: texel_m must be a positive number of metres, got {texel_m!r}")
    if int(max_size) != max_size or max_size < 16:
        raise ConfigError(f"unwrap_uv: max_size must be an integer >= 16 texels, got {max_size!r}")
    if int(padding) != padding or padding < 0:
        raise ConfigError(f"unwrap_uv: padding must be a non-negative integer, got {padding!r}")
    return vertices_n3, faces_f3.astype(np.int64)


def surface_area(vertices_n3, faces_f3) -> float:
    v = np.asarray(vertices_n3, np.float64)[np.asarray(faces_f3, np.int64)]
    return float(0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1).sum())


def _generate(vertices_f32, faces_u32, *, texels_per_unit: float, padding: int):
    import xatlas  # imported on use: only this stage needs it

    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices_f32, faces_u32)
    pack = xatlas.PackOptions()
    pack.texels_per_unit = float(texels_per_unit)
    pack.resolution = 0             # atlas sized to the charts at this density
    pack.padding = int(padding)
    # bilinear (default on) keeps a texel of gutter so that bilinear lookups at chart edges stay in the chart
    atlas.generate(pack_options=pack)
    return atlas


def _pack(vertices_f32, faces_u32, *, texel_m: float, area: float, max_size: int, padding: int):
    """The densest atlas at most `max_size` texels a side, at `texel_m` when that fits. xatlas's own
    `resolution` option was seen returning atlases a few texels over it, so the density is set here: start from
    the area-based guess, shrink by the measured overshoot until it fits, and when capped, grow once if the
    atlas came out well under max_size."""
    wanted = 1.0 / texel_m
    density = min(wanted, 0.98 * max_size * math.sqrt(ASSUMED_UTILISATION / area))
    atlas = _generate(vertices_f32, faces_u32, texels_per_unit=density, padding=padding)
    for _ in range(8):
        side = max(atlas.width, atlas.height)
        if side <= max_size and atlas.atlas_count == 1:
            break
        density *= 0.98 * max_size / side
        atlas = _generate(vertices_f32, faces_u32, texels_per_unit=density, padding=padding)
    else:
        raise ConfigError(f"unwrap_uv: could not pack {len(faces_u32)} faces into one {max_size}^2 atlas",
                          hint="raise max_size or texel_m")
    side = max(atlas.width, atlas.height)
    if density < wanted and side < 0.95 * max_size:
        retry = _generate(vertices_f32, faces_u32, texels_per_unit=min(wanted, density * 0.98 * max_size / side),
                          padding=padding)
        if retry.atlas_count == 1 and max(retry.width, retry.height) <= max_size:
            atlas = retry
    return atlas


def unwrap_uv(vertices_n3, faces_f3, *, texel_m: float, max_size: int = 4096, padding: int = 2) -> TexturedMesh:
    """A UV atlas for the mesh at `texel_m` metres per texel, or coarser if that does not fit `max_size` texels.

    The atlas is sized from the surface area (area / texel_m^2 texels at xatlas's packing density); when that
    exceeds `max_size` along either side, the texel density is lowered until the atlas fits `max_size`.
    Returns a TexturedMesh with vertices duplicated along seams (positions copied from the input in float64),
    per-vertex uvs (glTF convention) and a grey texture of the atlas size. `metadata["uv_atlas"]` records the
    effective texel size in metres, atlas size, chart count and utilisation. Deterministic."""
    vertices_n3, faces_f3 = _check_inputs(vertices_n3, faces_f3, texel_m, max_size, padding)
    area = surface_area(vertices_n3, faces_f3)
    if not area > 0:
        raise ConfigError("unwrap_uv: the mesh has zero surface area (all faces degenerate)")
    # xatlas works in float32: unwrap around the centroid so large ENU offsets do not eat the precision
    centred_f32 = (vertices_n3 - vertices_n3.mean(axis=0)).astype(np.float32)
    faces_u32 = faces_f3.astype(np.uint32)
    atlas = _pack(centred_f32, faces_u32, texel_m=texel_m, area=area, max_size=int(max_size), padding=padding)
    vmapping, faces_out, uvs = atlas[0]
    mesh = TexturedMesh(vertices_n3[vmapping.astype(np.int64)], faces_out.astype(np.int64),
                        np.ascontiguousarray(uvs, dtype=np.float32),
                        np.full((atlas.height, atlas.width, 3), EMPTY_GREY, np.uint8))
    mesh.metadata["uv_atlas"] = {
        "texel_m": 1.0 / float(atlas.texels_per_unit), "requested_texel_m": float(texel_m),
        "width": int(atlas.width), "height": int(atlas.height), "charts": int(atlas.chart_count),
        "utilization": float(atlas.utilization[0]) if hasattr(atlas.utilization, "__len__")
        else float(atlas.utilization), "padding": int(padding), "surface_area_m2": area}
    mesh.metadata["vmapping"] = vmapping.astype(np.int64)
    return mesh


# ---------------------------------------------------------------------------------------------- hole filling


def fill_holes(values_hwc: torch.Tensor, weight_hw: torch.Tensor) -> torch.Tensor:
    """Pull-push inpainting: texels with weight 0 take the weighted mean of their nearest observed neighbourhood
    (from the finest pyramid level where that neighbourhood has data); observed texels (weight > 0) keep their
    value. Fills every texel as long as one has weight > 0, so atlas gutters and unseen charts get plausible
    colours instead of grey holes."""
    if not bool((weight_hw > 0).any()):
        raise ConfigError("fill_holes: no texel has any observation to fill from")
    levels = [(values_hwc * weight_hw[..., None], weight_hw)]      # weighted sums, weights
    while max(levels[-1][1].shape) > 1:
        total, weight = levels[-1]
        h, w = weight.shape
        pad = (0, 0, 0, w % 2, 0, h % 2)                           # zero weights: padding adds nothing
        total = F.pad(total, pad)
        weight = F.pad(weight, pad[2:])
        total = total.reshape(total.shape[0] // 2, 2, total.shape[1] // 2, 2, -1).sum(dim=(1, 3))
        weight = weight.reshape(weight.shape[0] // 2, 2, weight.shape[1] // 2, 2).sum(dim=(1, 3))
        levels.append((total, weight))
    filled = levels[-1][0] / levels[-1][1].clamp(min=1e-12)[..., None]
    for total, weight in reversed(levels[:-1]):
        h, w = weight.shape
        coarse = filled.repeat_interleave(2, dim=0).repeat_interleave(2, dim=1)[:h, :w]
        own = total / weight.clamp(min=1e-12)[..., None]
        filled = torch.where((weight > 0)[..., None], own, coarse)
    return filled
