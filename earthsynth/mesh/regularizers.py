"""Regularisers of the Orbit to Ground geometry stage (paper 003, App. B.2), as pure torch functions.

    L_geo = L_H + lambda_Lap L_Lap + lambda_Nrm L_Nrm + lambda_reg L_reg

- `laplacian_loss` is L_Lap (Eq. A5): mean over vertices of ||v_i - mean of its 1-ring||^2 (uniform weights).
- `normal_tv_loss` is L_Nrm (Eq. A6): the mean L2 norm of the differences of unit normals between horizontally
  adjacent pixels plus the same vertically, on a rendered normal map (the renderer lives elsewhere).
- `sdf_sign_change_loss` is L_reg. The paper takes it from FlexiCubes; of FlexiCubes' regularisers only the SDF
  one applies to an extraction without FlexiCubes' learned dual-vertex weights (its L_dev and weight penalty
  concern those): the nvdiffrec / FlexiCubes `sdf_reg_loss`, a binary cross-entropy between the signs of the two
  grid values of every grid edge whose sign changes, each value read as a logit of the other's sign. It pushes
  |s| down near the surface, removing floaters and keeping the zero crossings well conditioned.
  FlexiCubes' example anneals its weight from lambda to lambda / 20 over the first quarter of the iterations:
  `annealed_sdf_sign_weight` reproduces that schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from earthsynth.errors import ConfigError


@dataclass(frozen=True)
class RegularizerWeights:
    laplacian: float = 0.5    # lambda_Lap (Orbit to Ground B.2)
    normal_tv: float = 0.01   # lambda_Nrm (B.2)
    sdf_sign: float = 0.1     # lambda_reg, FlexiCubes regularisation (B.2)


def annealed_sdf_sign_weight(step: int, total_steps: int, weight: float = 0.1) -> float:
    """FlexiCubes' example schedule: weight at step 0, falling linearly to weight / 20 at 25 % of the steps."""
    if total_steps <= 0:
        raise ConfigError(f"total_steps must be positive, got {total_steps}")
    progress = min(1.0, 4.0 * step / total_steps)
    return weight - (weight - weight / 20.0) * progress


def sdf_sign_change_loss(sdf_grid_rrr: torch.Tensor) -> torch.Tensor:
    """FlexiCubes' / nvdiffrec's SDF regulariser on the axis-aligned edges of a (Rx, Ry, Rz) grid:
    BCE-with-logits(s_a, [s_b > 0]) + BCE-with-logits(s_b, [s_a > 0]), each averaged over the edges whose
    end values differ in sign (torch.sign, as FlexiCubes). 0 (with a graph) when no edge changes sign."""
    if not isinstance(sdf_grid_rrr, torch.Tensor) or sdf_grid_rrr.ndim != 3:
        raise ConfigError("sdf_grid_rrr must be a (Rx, Ry, Rz) tensor, got "
                          f"{tuple(getattr(sdf_grid_rrr, 'shape', ()))}")
    firsts, seconds = [], []
    for axis in range(3):
        n = sdf_grid_rrr.shape[axis]
        firsts.append(sdf_grid_rrr.narrow(axis, 0, n - 1).reshape(-1))
        seconds.append(sdf_grid_rrr.narrow(axis, 1, n - 1).reshape(-1))
    s_a, s_b = torch.cat(firsts), torch.cat(seconds)
    change = torch.sign(s_a) != torch.sign(s_b)
    if not bool(change.any()):
        return sdf_grid_rrr.sum() * 0.0
    s_a, s_b = s_a[change], s_b[change]
    return (F.binary_cross_entropy_with_logits(s_a, (s_b > 0).to(s_a.dtype))
            + F.binary_cross_entropy_with_logits(s_b, (s_a > 0).to(s_b.dtype)))


def mesh_edges(faces_f3: torch.Tensor) -> torch.Tensor:
    """(E, 2) unique undirected edges (i < j) of a triangle mesh."""
    edges = faces_f3[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    return torch.unique(torch.sort(edges, dim=1).values, dim=0)


def uniform_laplacian(vertices_v3: torch.Tensor, faces_f3: torch.Tensor) -> torch.Tensor:
    """(V, 3) delta_i = v_i - mean_{j in N(i)} v_j over the 1-ring N(i); 0 for vertices in no face."""
    if vertices_v3.ndim != 2 or vertices_v3.shape[1] != 3 or faces_f3.ndim != 2 or faces_f3.shape[1] != 3:
        raise ConfigError(f"need vertices (V, 3) and faces (F, 3), got {tuple(vertices_v3.shape)} and "
                          f"{tuple(faces_f3.shape)}")
    edges = mesh_edges(faces_f3.long())
    i = torch.cat([edges[:, 0], edges[:, 1]])
    j = torch.cat([edges[:, 1], edges[:, 0]])
    neighbour_sum = torch.zeros_like(vertices_v3).index_add_(0, i, vertices_v3[j])
    degree = torch.zeros(vertices_v3.shape[0], dtype=vertices_v3.dtype, device=vertices_v3.device)
    degree.index_add_(0, i, torch.ones_like(i, dtype=vertices_v3.dtype))
    mean = neighbour_sum / degree.clamp(min=1)[:, None]
    return torch.where(degree[:, None] > 0, vertices_v3 - mean, torch.zeros_like(vertices_v3))


def laplacian_loss(vertices_v3: torch.Tensor, faces_f3: torch.Tensor,
                   vertex_mask_v: torch.Tensor | None = None) -> torch.Tensor:
    """L_Lap (Eq. A5): mean over vertices of ||uniform Laplacian||^2. `vertex_mask_v` (bool) restricts the mean
    to some vertices (e.g. leave out the caps of a closed division, or the open boundary of a plane)."""
    squared = uniform_laplacian(vertices_v3, faces_f3).square().sum(dim=1)
    if vertex_mask_v is not None:
        squared = squared[vertex_mask_v.to(torch.bool)]
    return squared.mean() if squared.numel() else vertices_v3.sum() * 0.0


def normal_tv_loss(normals_hw3: torch.Tensor, mask_hw: torch.Tensor | None = None,
                   eps: float = 1e-12) -> torch.Tensor:
    """L_Nrm (Eq. A6) on an (H, W, 3) normal map: E ||n_{u,v} - n_{u+1,v}|| + E ||n_{u,v} - n_{u,v+1}||, normals
    normalised first. `mask_hw` (bool, e.g. pixels a triangle covers) keeps only pairs of two valid pixels.
    The norm is sqrt(d^2 + eps^2) - eps: exactly 0 for equal normals, with a finite gradient there."""
    if normals_hw3.ndim != 3 or normals_hw3.shape[2] != 3:
        raise ConfigError(f"normals_hw3 must be (H, W, 3), got {tuple(normals_hw3.shape)}")
    unit = normals_hw3 / normals_hw3.norm(dim=2, keepdim=True).clamp(min=1e-12)
    valid = torch.ones(normals_hw3.shape[:2], dtype=torch.bool, device=normals_hw3.device) \
        if mask_hw is None else mask_hw.to(torch.bool)
    total = normals_hw3.sum() * 0.0
    for axis in (1, 0):                        # x (along a row), then y (down a column)
        n = normals_hw3.shape[axis]
        diff = unit.narrow(axis, 1, n - 1) - unit.narrow(axis, 0, n - 1)
        pair_valid = valid.narrow(axis, 1, n - 1) & valid.narrow(axis, 0, n - 1)
        norm = torch.sqrt(diff.square().sum(dim=2) + eps * eps) - eps
        if bool(pair_valid.any()):
            total = total + norm[pair_valid].mean()
    return total
