"""Differentiable EWA projection of 3D Gaussians and spherical-harmonics colours, in torch (gsplat's conventions).

Mirrors gsplat's `fully_fused_projection` (pinhole, non-packed) so that the CPU backend agrees with gsplat:

* covariance R S S^T R^T from a (w, x, y, z) quaternion (normalised here) and linear scales;
* perspective Jacobian evaluated at the camera-space mean whose x/z, y/z are clamped to 1.3x the field of view
  (gsplat `persp_proj`: far off-screen Gaussians would otherwise get huge, smeared footprints);
* 2D covariance + eps2d on the diagonal; "antialiased" mode scales opacity by sqrt(det / det_dilated);
* culling: depth outside [near, far], det <= 0, opacity < 1/255, both radii <= radius_clip, box off the image;
* radii: gsplat's opacity-aware box (extend = min(3.33, sqrt(2 ln(255 opacity))) standard deviations per axis, arXiv
  2402.00525 B.2): it holds exactly the pixels where alpha >= 1/255, so binning by it loses nothing.

Ks here are in gsplat's pixel convention (pixel centres at x + 0.5); the public function shifts earthsynth's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_EXTEND = 3.33  # gsplat: sqrt(2 ln 255), the box of a fully opaque Gaussian
FOV_CLAMP = 0.3  # gsplat persp_proj: x/z clamped to the image +- 0.3 tan(fov/2), i.e. 1.3x the field of view


@dataclass
class Projection:
    means2d_cn2: torch.Tensor  # gsplat pixel convention
    conics_cn3: torch.Tensor  # inverse 2D covariance (a, b, c) = ([0,0], [0,1], [1,1])
    depths_cn: torch.Tensor  # camera-space z
    opacities_cn: torch.Tensor  # times the antialiasing compensation when enabled
    radii_cn2: torch.Tensor  # int32 box half-sizes (x, y); (0, 0) = culled
    compensations_cn: torch.Tensor | None


def quat_scale_to_covar(quats_n4: torch.Tensor, scales_n3: torch.Tensor) -> torch.Tensor:
    """World covariance R diag(s)^2 R^T [N, 3, 3]."""
    w, x, y, z = F.normalize(quats_n4, p=2, dim=-1).unbind(-1)
    rot = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)
    m = rot * scales_n3[:, None, :]
    return m @ m.transpose(-1, -2)


def _persp_proj(means_c, covars_c, ks_c33, width, height, near_plane):
    """Projected means [C,N,2] and 2D covariances [C,N,2,2] (gsplat persp_proj). Depths below the near plane are
    replaced by 1 so that culled Gaussians never produce inf/NaN that would poison the backward pass."""
    tx, ty, tz = means_c.unbind(-1)
    tz = torch.where(tz >= near_plane, tz, torch.ones_like(tz))
    fx, fy = ks_c33[:, 0, 0, None], ks_c33[:, 1, 1, None]
    cx, cy = ks_c33[:, 0, 2, None], ks_c33[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + FOV_CLAMP * tan_fovx, cx / fx + FOV_CLAMP * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + FOV_CLAMP * tan_fovy, cy / fy + FOV_CLAMP * tan_fovy
    tx_c = tz * torch.minimum(torch.maximum(tx / tz, -lim_x_neg), lim_x_pos)
    ty_c = tz * torch.minimum(torch.maximum(ty / tz, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(tz)
    jac = torch.stack([fx / tz, zero, -fx * tx_c / (tz * tz),
                       zero, fy / tz, -fy * ty_c / (tz * tz)], dim=-1).reshape(*tz.shape, 2, 3)
    cov2d = jac @ covars_c @ jac.transpose(-1, -2)
    means2d = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], dim=-1)
    return means2d, cov2d


def _radii(cov00, cov11, det, opacities_cn, means2d, width, height, radius_clip, valid):
    """gsplat's opacity-aware integer box half-sizes [C,N,2] (0 where culled). Not differentiable."""
    with torch.no_grad():
        valid = valid & (opacities_cn >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(opacities_cn.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp_max(MAX_EXTEND)
        b = 0.5 * (cov00 + cov11)
        r1 = extend * torch.sqrt(b + torch.sqrt((b * b - det).clamp_min(0.01)))  # larger eigenvalue
        rx = torch.ceil(torch.minimum(extend * torch.sqrt(cov00.clamp_min(0)), r1))
        ry = torch.ceil(torch.minimum(extend * torch.sqrt(cov11.clamp_min(0)), r1))
        valid &= torch.isfinite(rx) & torch.isfinite(ry) & torch.isfinite(means2d).all(dim=-1)
        valid &= ~((rx <= radius_clip) & (ry <= radius_clip))
        mx, my = means2d.unbind(-1)
        valid &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.stack([rx, ry], dim=-1).nan_to_num(0.0)
        return torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)


def project_gaussians(means_n3, quats_n4, scales_n3, opacities_n, viewmats_c44, ks_c33, width: int, height: int, *,
                      near_plane: float, far_plane: float, radius_clip: float, eps2d: float,
                      antialiased: bool) -> Projection:
    """World Gaussians -> per-camera 2D Gaussians (gsplat `fully_fused_projection`, pinhole, non-packed)."""
    rot_c33, trans_c3 = viewmats_c44[:, :3, :3], viewmats_c44[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", rot_c33, means_n3) + trans_c3[:, None, :]
    covars = quat_scale_to_covar(quats_n4, scales_n3)
    covars_c = torch.einsum("cij,njk,clk->cnil", rot_c33, covars, rot_c33)
    depths = means_c[..., 2]
    means2d, cov2d = _persp_proj(means_c, covars_c, ks_c33, width, height, near_plane)
    c01 = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    det_orig = cov2d[..., 0, 0] * cov2d[..., 1, 1] - c01 * c01
    cov00, cov11 = cov2d[..., 0, 0] + eps2d, cov2d[..., 1, 1] + eps2d
    det = cov00 * cov11 - c01 * c01
    valid = (depths >= near_plane) & (depths <= far_plane) & (det > 0)
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([cov11 / det_safe, -c01 / det_safe, cov00 / det_safe], dim=-1)
    opacities = opacities_n[None, :].expand_as(depths)
    compensations = None
    if antialiased:
        compensations = torch.sqrt((det_orig / det_safe).clamp_min(0.0))
        opacities = opacities * compensations
    radii = _radii(cov00.detach(), cov11.detach(), det.detach(), opacities.detach(), means2d.detach(),
                   width, height, radius_clip, valid)
    return Projection(means2d, conics, depths, opacities, radii, compensations)


SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
         1.445305721320277, -0.5900435899266435)


def sh_basis(degree: int, dirs_3: torch.Tensor) -> torch.Tensor:
    """Real SH basis [..., (degree + 1)^2] at unit directions, Inria / gsplat sign conventions (degree <= 3)."""
    x, y, z = dirs_3.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * x * z,
                SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4 * zz - xx - yy),
                SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, dim=-1)


def sh_colors(degree: int, coeffs: torch.Tensor, means_n3: torch.Tensor, viewmats_c44: torch.Tensor) -> torch.Tensor:
    """View-dependent colours [C, N, 3] from SH coefficients [N, K, 3] or [C, N, K, 3]: direction = mean - camera
    centre, then + 0.5 and clamped at 0 (gsplat `rasterization` / Inria)."""
    campos_c3 = torch.linalg.inv(viewmats_c44)[:, :3, 3]
    dirs = F.normalize(means_n3[None, :, :] - campos_c3[:, None, :], p=2, dim=-1)  # [C, N, 3]
    n_bases = (degree + 1) ** 2
    coeffs = coeffs[..., :n_bases, :]
    if coeffs.dim() == 3:
        coeffs = coeffs[None]
    colors = (sh_basis(degree, dirs)[..., None] * coeffs).sum(dim=-2)
    return torch.clamp_min(colors + 0.5, 0.0)
