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

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from earthsynth.render import splat_project_kernel as proj_kern

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_EXTEND = 3.33  # gsplat: sqrt(2 ln 255), the box of a fully opaque Gaussian
FOV_CLAMP = 0.3  # gsplat persp_proj: x/z clamped to the image +- 0.3 tan(fov/2), i.e. 1.3x the field of view
BACKWARD_CHUNK = 4096  # Gaussians per task of the fused projection's backward (threads share the tasks)


@dataclass
class Projection:
    means2d_cn2: torch.Tensor  # gsplat pixel convention
    conics_cn3: torch.Tensor  # inverse 2D covariance (a, b, c) = ([0,0], [0,1], [1,1])
    depths_cn: torch.Tensor  # camera-space z
    opacities_cn: torch.Tensor  # times the antialiasing compensation when enabled
    radii_cn2: torch.Tensor  # int32 box half-sizes (x, y); (0, 0) = culled
    compensations_cn: torch.Tensor | None


def quat_scale_to_rotscale(quats_n4: torch.Tensor, scales_n3: torch.Tensor) -> torch.Tensor:
    """M = R diag(s) [N, 3, 3], so that the world covariance is M M^T."""
    w, x, y, z = F.normalize(quats_n4, p=2, dim=-1).unbind(-1)
    rot = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)
    return rot * scales_n3[:, None, :]


def _persp_proj(means_c, covar_c6, ks_c33, width, height, near_plane):
    """Projected means [C,N,2] and the 2D covariances' entries (00, 01, 11), each [C,N] (gsplat persp_proj), from
    the camera-space covariances' entries (00, 01, 02, 11, 12, 22), each [C,N].
    Depths below the near plane are replaced by 1 so that culled Gaussians never produce inf/NaN that would
    poison the backward pass. J Sigma J^T is written out entry by entry: J has two zeros, and batched 3 x 3
    matmuls cost more here than the arithmetic they do."""
    tx, ty, tz = means_c.unbind(-1)
    tz = torch.where(tz >= near_plane, tz, torch.ones_like(tz))
    fx, fy = ks_c33[:, 0, 0, None], ks_c33[:, 1, 1, None]
    cx, cy = ks_c33[:, 0, 2, None], ks_c33[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + FOV_CLAMP * tan_fovx, cx / fx + FOV_CLAMP * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + FOV_CLAMP * tan_fovy, cy / fy + FOV_CLAMP * tan_fovy
    tx_c = tz * torch.minimum(torch.maximum(tx / tz, -lim_x_neg), lim_x_pos)
    ty_c = tz * torch.minimum(torch.maximum(ty / tz, -lim_y_neg), lim_y_pos)
    # J = [[j00, 0, j02], [0, j11, j12]]
    j00, j11 = fx / tz, fy / tz
    j02, j12 = -fx * tx_c / (tz * tz), -fy * ty_c / (tz * tz)
    s00, s01, s02, s11, s12, s22 = covar_c6
    t00, t01, t02 = j00 * s00 + j02 * s02, j00 * s01 + j02 * s12, j00 * s02 + j02 * s22  # row 0 of J Sigma
    t11, t12 = j11 * s11 + j12 * s12, j11 * s12 + j12 * s22                              # row 1 (cols 1, 2)
    cov00 = t00 * j00 + t02 * j02
    cov01 = t01 * j11 + t02 * j12
    cov11 = t11 * j11 + t12 * j12
    means2d = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], dim=-1)
    return means2d, (cov00, cov01, cov11)


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
                      antialiased: bool, fused: bool | None = None) -> Projection:
    """World Gaussians -> per-camera 2D Gaussians (gsplat `fully_fused_projection`, pinhole, non-packed).

    fused: the numba kernels (splat_project_kernel) up to the 2D covariances; None = when the tensors are on the
    CPU. The torch path computes the same and runs on any device (the tests hold the two together)."""
    use_fused = means_n3.device.type == "cpu" if fused is None else fused
    project = _project_fused if use_fused else _project_torch
    means2d, (cov00, c01, cov11), depths = project(means_n3, quats_n4, scales_n3, viewmats_c44, ks_c33, width,
                                                   height, near_plane)
    det_orig = cov00 * cov11 - c01 * c01
    cov00, cov11 = cov00 + eps2d, cov11 + eps2d
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


def _project_torch(means_n3, quats_n4, scales_n3, viewmats_c44, ks_c33, width, height, near_plane):
    """2D means, 2D covariance entries (00, 01, 11) and depths, in torch autograd."""
    rot_c33, trans_c3 = viewmats_c44[:, :3, :3], viewmats_c44[:, :3, 3]
    n_cameras, n = rot_c33.shape[0], means_n3.shape[0]
    means_c = means_n3 @ rot_c33.transpose(-1, -2) + trans_c3[:, None, :]
    # camera-space covariance (R_c M)(R_c M)^T with M = R_q diag(s): one [3, 3] x [3, 3N] product per camera,
    # then the six distinct entries as row dot products (batched 3 x 3 matmuls are slow on the CPU)
    m_3k = quat_scale_to_rotscale(quats_n4, scales_n3).permute(1, 0, 2).reshape(3, 3 * n)
    r0, r1, r2 = (rot_c33 @ m_3k).reshape(n_cameras, 3, n, 3).unbind(1)       # rows of R_c M, each [C, N, 3]
    covar_c6 = [(u * v).sum(-1) for u, v in ((r0, r0), (r0, r1), (r0, r2), (r1, r1), (r1, r2), (r2, r2))]
    means2d, cov2d = _persp_proj(means_c, covar_c6, ks_c33, width, height, near_plane)
    return means2d, cov2d, means_c[..., 2]


def _project_fused(means_n3, quats_n4, scales_n3, viewmats_c44, ks_c33, width, height, near_plane):
    means2d, cov2d, depths = FusedProjection.apply(means_n3, quats_n4, scales_n3, viewmats_c44, ks_c33, width, height,
                                                   near_plane)
    return means2d, cov2d.unbind(-1), depths


def _camera_rows(ks_c33, width, height) -> np.ndarray:
    """Per camera: fx, fy, cx, cy and the clamp limits of x/z and y/z (negative side, positive side), as in
    _persp_proj."""
    k = ks_c33.detach().to(torch.float64).cpu()
    fx, fy, cx, cy = k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    return torch.stack([fx, fy, cx, cy, cx / fx + FOV_CLAMP * tan_fovx, (width - cx) / fx + FOV_CLAMP * tan_fovx,
                        cy / fy + FOV_CLAMP * tan_fovy, (height - cy) / fy + FOV_CLAMP * tan_fovy], dim=-1).numpy()


def _numpy64(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float64).cpu().numpy())


class FusedProjection(torch.autograd.Function):
    """(means [N,3], quats [N,4], scales [N,3], viewmats [C,4,4], Ks [C,3,3]) -> means2d [C,N,2], 2D covariance
    entries [C,N,3] (00, 01, 11, before eps2d), depths [C,N]; float64 inside, outputs in the means' dtype. No
    gradient for Ks (as the torch path's users never ask for one)."""

    @staticmethod
    def forward(ctx, means_n3, quats_n4, scales_n3, viewmats_c44, ks_c33, width, height, near_plane):
        arrays = [_numpy64(t) for t in (means_n3, quats_n4, scales_n3, viewmats_c44)]
        cams = _camera_rows(ks_c33, width, height)
        n_cameras, n = viewmats_c44.shape[0], means_n3.shape[0]
        means2d, cov2d, depths = np.empty((n_cameras, n, 2)), np.empty((n_cameras, n, 3)), np.empty((n_cameras, n))
        proj_kern.project_forward(*arrays, cams, float(near_plane), means2d, cov2d, depths)
        ctx.saved = (arrays, cams, float(near_plane))
        return tuple(torch.from_numpy(a).to(dtype=means_n3.dtype, device=means_n3.device)
                     for a in (means2d, cov2d, depths))

    @staticmethod
    def backward(ctx, v_means2d, v_cov2d, v_depths):
        arrays, cams, near_plane = ctx.saved
        n_cameras, n = arrays[3].shape[0], arrays[0].shape[0]
        upstream = [np.zeros(shape) if v is None else _numpy64(v)
                    for v, shape in ((v_means2d, (n_cameras, n, 2)), (v_cov2d, (n_cameras, n, 3)),
                                     (v_depths, (n_cameras, n)))]
        v_means, v_quats, v_scales = (np.zeros_like(a) for a in arrays[:3])
        # fixed ranges of Gaussians (not one per thread), each with its own viewmat gradient, summed in range
        # order: the bytes do not depend on the number of threads
        ranges = [(a, min(a + BACKWARD_CHUNK, n)) for a in range(0, n, BACKWARD_CHUNK)] or [(0, 0)]
        v_views = np.zeros((len(ranges),) + arrays[3].shape)

        def run(k):
            proj_kern.project_backward(*ranges[k], *arrays, cams, near_plane, *upstream, v_means, v_quats, v_scales,
                                       v_views[k])

        threads = min(torch.get_num_threads(), len(ranges))
        if threads > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(run, range(len(ranges))))
        else:
            for k in range(len(ranges)):
                run(k)
        like = v_depths if v_depths is not None else (v_cov2d if v_cov2d is not None else v_means2d)
        out = [torch.from_numpy(g).to(dtype=like.dtype, device=like.device)
               for g in (v_means, v_quats, v_scales, v_views.sum(axis=0))]
        return (*out, None, None, None, None)


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
