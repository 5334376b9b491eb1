"""An independent dense reference for the Gaussian-splatting rasteriser, and small test scenes.

It shares no code with earthsynth.render.splat*: it rotates with q v q* instead of a matrix formula, works in
earthsynth's pixel convention (pixel centres at integers), evaluates every Gaussian at every pixel (no tiles, no
boxes) and composites with a cumulative product instead of a loop with an early exit.
"""

from __future__ import annotations

import math

import torch

SH_C0, SH_C1 = 0.28209479177387814, 0.4886025119029199

# ----------------------------------------------------------------------------------------------- dense reference
def rotate(q_n4, v_n3):
    """v' = q v q* for unit quaternions (w, x, y, z)."""
    w, u = q_n4[:, :1], q_n4[:, 1:]
    uv = torch.cross(u, v_n3, dim=-1)
    return v_n3 + 2 * w * uv + 2 * torch.cross(u, uv, dim=-1)


def reference(means, quats, scales, opacities, colors, viewmats, ks, width, height, *, near=0.01, far=1e10,
               eps2d=0.3, antialiased=False, sh_degree=None, depth_channel=False, backgrounds=None):
    """Returns (colours [C,H,W,D], alphas [C,H,W,1], means2d [C,N,2] in earthsynth pixels, for retain_grad)."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    eye = torch.eye(3, dtype=means.dtype)
    rot_n33 = torch.stack([rotate(q, eye[k].expand_as(means)) for k in range(3)], dim=-1)  # columns R e_k
    cov_n33 = rot_n33 @ torch.diag_embed(scales ** 2) @ rot_n33.transpose(1, 2)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=means.dtype), torch.arange(width, dtype=means.dtype),
                            indexing="ij")
    pix_p2 = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)
    cams = [ref_project(means, cov_n33, viewmats[c], ks[c], width, height, near, eps2d, antialiased)
            for c in range(viewmats.shape[0])]
    means2d = torch.stack([cam[0] for cam in cams])  # one tensor, so that the caller can retain its grad
    images, alphas = [], []
    reference.terminated = 0  # pixels where the early exit dropped a Gaussian (for the tests to check coverage)
    for c, (_, conic, scale, depth) in enumerate(cams):
        opac = opacities * scale
        feats = ref_features(colors, sh_degree, means, viewmats[c], depth, depth_channel)
        keep = (depth >= near) & (depth <= far) & (opac >= 1 / 255)
        order = torch.nonzero(keep).reshape(-1)
        order = order[torch.argsort(depth[order], stable=True)]
        d = pix_p2[None] - means2d[c, order][:, None]  # [G, P, 2]
        quad = torch.einsum("gpi,gij,gpj->gp", d, conic[order], d)
        alpha = torch.clamp_max(opac[order][:, None] * torch.exp(-0.5 * quad), 0.999)
        ok = (quad >= 0) & (alpha >= 1 / 255)
        one_minus = 1 - torch.where(ok, alpha, torch.zeros_like(alpha))
        t_after = torch.cumprod(one_minus, dim=0)
        t_before = torch.cat([torch.ones_like(t_after[:1]), t_after[:-1]], dim=0)
        weight = torch.where(ok & (t_after > 1e-4), alpha * t_before, torch.zeros_like(alpha))
        reference.terminated += int((ok & (t_after <= 1e-4)).any(dim=0).sum())
        image = weight.T @ feats[order]
        acc = weight.sum(0)[:, None]
        if backgrounds is not None:
            nb = backgrounds.shape[1]
            image = torch.cat([image[:, :nb] + (1 - acc) * backgrounds[c], image[:, nb:]], dim=1)
        images.append(image.reshape(height, width, -1))
        alphas.append(acc.reshape(height, width, 1))
    return torch.stack(images), torch.stack(alphas), means2d


def ref_project(means, cov_n33, viewmat, k, width, height, near, eps2d, antialiased):
    """(mean2d [N,2] earthsynth pixels, conic [N,2,2], opacity factor or opacities, depth [N]) for one camera."""
    r, t = viewmat[:3, :3], viewmat[:3, 3]
    p = means @ r.T + t
    cov_c = r @ cov_n33 @ r.T
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    z = torch.where(p[:, 2] >= near, p[:, 2], torch.ones_like(p[:, 2]))
    # Jacobian at the mean clamped to 1.3x the field of view; the image edges are at -0.5 and W - 0.5 here
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    xr = torch.clamp(p[:, 0] / z, -((cx + 0.5) / fx + 0.3 * tan_x), (width - 0.5 - cx) / fx + 0.3 * tan_x)
    yr = torch.clamp(p[:, 1] / z, -((cy + 0.5) / fy + 0.3 * tan_y), (height - 0.5 - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(z)
    jac = torch.stack([torch.stack([fx / z, zero, -fx * xr / z], -1),
                       torch.stack([zero, fy / z, -fy * yr / z], -1)], dim=1)
    cov2 = jac @ cov_c @ jac.transpose(1, 2)
    det0 = torch.linalg.det(cov2)
    cov2 = cov2 + eps2d * torch.eye(2, dtype=means.dtype)
    det = torch.linalg.det(cov2)
    scale = torch.sqrt(det0 / det) if antialiased else torch.ones_like(det)
    mean2d = torch.stack([fx * p[:, 0] / z + cx, fy * p[:, 1] / z + cy], dim=-1)
    return mean2d, torch.linalg.inv(cov2), scale, p[:, 2]


def ref_features(colors, sh_degree, means, viewmat, depth, depth_channel):
    if sh_degree is None:
        feats = colors
    else:  # degree <= 1, Inria's formula
        centre = torch.linalg.inv(viewmat)[:3, 3]  # gsplat's camera centre
        v = means - centre
        x, y, z = (v / v.norm(dim=-1, keepdim=True)).unbind(-1)
        feats = SH_C0 * colors[:, 0] + 0.5
        if sh_degree >= 1:
            x, y, z = x[:, None], y[:, None], z[:, None]
            feats = feats - SH_C1 * y * colors[:, 1] + SH_C1 * z * colors[:, 2] - SH_C1 * x * colors[:, 3]
        feats = feats.clamp_min(0.0)
    return torch.cat([feats, depth[:, None]], dim=1) if depth_channel else feats


# -------------------------------------------------------------------------------------------------- scenes
def look_at(eye, target):
    eye, target = torch.tensor(eye, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    fwd = (target - eye) / (target - eye).norm()
    right = torch.cross(fwd, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), dim=0)
    right = right / right.norm()
    down = torch.cross(fwd, right, dim=0)
    r = torch.stack([right, down, fwd])
    vm = torch.eye(4, dtype=torch.float64)
    vm[:3, :3], vm[:3, 3] = r, -r @ eye
    return vm


def scene(n, width, height, seed, n_cameras=3, dtype=torch.float64):
    """Anisotropic, rotated Gaussians around the origin; cameras on a ring; a few Gaussians behind or beside the
    cameras and far off-screen."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=torch.float64) * 1.5
    means[: n // 10] = torch.tensor([9.0, 0.0, 3.0]) + torch.randn(n // 10, 3, generator=g, dtype=torch.float64)
    means[n // 10: n // 5] *= 6.0  # far off-screen for some cameras
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64) * 2.0
    scales = torch.exp(torch.rand(n, 3, generator=g, dtype=torch.float64) * 2.5 - 3.0)
    opacities = torch.rand(n, generator=g, dtype=torch.float64) * 0.98 + 0.01
    opacities[n // 5: n // 2] = 0.9 + 0.1 * opacities[n // 5: n // 2]  # an opaque core: T reaches 1e-4
    scales[n // 5: n // 2] *= 2.0
    colors = torch.rand(n, 3, generator=g, dtype=torch.float64)
    angles = [2 * math.pi * k / n_cameras for k in range(n_cameras)]
    viewmats = torch.stack([look_at([8 * math.cos(a), 8 * math.sin(a), 3.0], [0.0, 0.0, 0.0]) for a in angles])
    ks = torch.tensor([[0.9 * width, 0, (width - 1) / 2 + 1.3], [0, 0.9 * width, (height - 1) / 2 - 0.7], [0, 0, 1]],
                      dtype=torch.float64).expand(n_cameras, 3, 3).clone()
    return [t.to(dtype) for t in (means, quats, scales, opacities, colors, viewmats, ks)]
