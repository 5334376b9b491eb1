"""Pseudo-camera depth supervision of Skyfall-GS (section 3.1.4): the absolute Pearson correlation between the
splats' rendered depth and a depth target. The paper's target is MoGe's monocular depth of the render; MoGe has
no weights here, so the target is the depth of the scene's own surface (the MVS points or the Z-monotonic mesh)
rendered from the same pseudo-camera. Pearson correlation is scale- and shift-invariant, like MoGe's depth."""

from __future__ import annotations

import numpy as np
import torch

from earthsynth.render.mesh import rasterize


def pearson_depth_loss(depth_hw: torch.Tensor, target_hw: torch.Tensor, mask_hw: torch.Tensor | None = None,
                       *, absolute: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """1 - |PCorr(depth, target)| over the masked pixels (Skyfall-GS eq. 3; MoGe's depth is only known up to an
    affine map, hence the absolute value); `absolute=False` gives 1 - PCorr, which a metric depth target allows.
    0 when fewer than 2 pixels are valid."""
    valid = torch.isfinite(target_hw) & torch.isfinite(depth_hw)
    if mask_hw is not None:
        valid = valid & mask_hw.bool()
    if int(valid.sum()) < 2:
        return depth_hw.sum() * 0.0
    x, y = depth_hw[valid], target_hw[valid].to(depth_hw.dtype)
    x, y = x - x.mean(), y - y.mean()
    corr = (x * y).sum() / (x.norm() * y.norm() + eps)
    return 1.0 - (corr.abs() if absolute else corr)


class SurfaceDepth:
    """Depth targets (z along the optical axis, +inf where the surface is not seen) rendered from a triangle
    surface in ENU metres."""

    def __init__(self, vertices_n3, faces_f3):
        self.vertices_n3 = np.asarray(vertices_n3, np.float64)
        self.faces_f3 = np.asarray(faces_f3, np.int64)

    def depth(self, camera) -> torch.Tensor:
        fragments = rasterize(self.vertices_n3, self.faces_f3, camera)
        depth = fragments.depth_hw.to(torch.float32)
        return torch.where(fragments.mask_hw, depth, torch.full_like(depth, float("inf")))
