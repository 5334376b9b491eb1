"""CPU Gaussian-splatting rasteriser against an independent dense reference, closed forms and error cases.

The reference below shares no code with earthsynth.render.splat*: it rotates with q v q* instead of a matrix
formula, works in earthsynth's pixel convention (pixel centres at integers), evaluates every Gaussian at every
pixel (no tiles, no boxes) and composites with a cumulative product instead of a loop with an early exit.
"""

from __future__ import annotations

import math

import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.render.splat import rasterize_gaussians
from earthsynth.render.splat_composite import CompositeGaussians, bin_gaussians
from earthsynth.render.splat_project import sh_basis

SH_C0, SH_C1 = 0.28209479177387814, 0.4886025119029199


# ----------------------------------------------------------------------------------------------- dense reference
def _rotate(q_n4, v_n3):
    """v' = q v q* for unit quaternions (w, x, y, z)."""
    w, u = q_n4[:, :1], q_n4[:, 1:]
    uv = torch.cross(u, v_n3, dim=-1)
    return v_n3 + 2 * w * uv + 2 * torch.cross(u, uv, dim=-1)


def _reference(means, quats, scales, opacities, colors, viewmats, ks, width, height, *, near=0.01, far=1e10,
               eps2d=0.3, antialiased=False, sh_degree=None, depth_channel=False, backgrounds=None):
    """Returns (colours [C,H,W,D], alphas [C,H,W,1], means2d [C,N,2] in earthsynth pixels, for retain_grad)."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    eye = torch.eye(3, dtype=means.dtype)
    rot_n33 = torch.stack([_rotate(q, eye[k].expand_as(means)) for k in range(3)], dim=-1)  # columns R e_k
    cov_n33 = rot_n33 @ torch.diag_embed(scales ** 2) @ rot_n33.transpose(1, 2)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=means.dtype), torch.arange(width, dtype=means.dtype),
                            indexing="ij")
    pix_p2 = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)
    cams = [_ref_project(means, cov_n33, viewmats[c], ks[c], width, height, near, eps2d, antialiased)
            for c in range(viewmats.shape[0])]
    means2d = torch.stack([cam[0] for cam in cams])  # one tensor, so that the caller can retain its grad
    images, alphas = [], []
    _reference.terminated = 0  # pixels where the early exit dropped a Gaussian (for the tests to check coverage)
    for c, (_, conic, scale, depth) in enumerate(cams):
        opac = opacities * scale
        feats = _ref_features(colors, sh_degree, means, viewmats[c], depth, depth_channel)
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
        _reference.terminated += int((ok & (t_after <= 1e-4)).any(dim=0).sum())
        image = weight.T @ feats[order]
        acc = weight.sum(0)[:, None]
        if backgrounds is not None:
            nb = backgrounds.shape[1]
            image = torch.cat([image[:, :nb] + (1 - acc) * backgrounds[c], image[:, nb:]], dim=1)
        images.append(image.reshape(height, width, -1))
        alphas.append(acc.reshape(height, width, 1))
    return torch.stack(images), torch.stack(alphas), means2d


def _ref_project(means, cov_n33, viewmat, k, width, height, near, eps2d, antialiased):
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


def _ref_features(colors, sh_degree, means, viewmat, depth, depth_channel):
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
def _look_at(eye, target):
    eye, target = torch.tensor(eye, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    fwd = (target - eye) / (target - eye).norm()
    right = torch.cross(fwd, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), dim=0)
    right = right / right.norm()
    down = torch.cross(fwd, right, dim=0)
    r = torch.stack([right, down, fwd])
    vm = torch.eye(4, dtype=torch.float64)
    vm[:3, :3], vm[:3, 3] = r, -r @ eye
    return vm


def _scene(n, width, height, seed, n_cameras=3, dtype=torch.float64):
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
    viewmats = torch.stack([_look_at([8 * math.cos(a), 8 * math.sin(a), 3.0], [0.0, 0.0, 0.0]) for a in angles])
    ks = torch.tensor([[0.9 * width, 0, (width - 1) / 2 + 1.3], [0, 0.9 * width, (height - 1) / 2 - 0.7], [0, 0, 1]],
                      dtype=torch.float64).expand(n_cameras, 3, 3).clone()
    return [t.to(dtype) for t in (means, quats, scales, opacities, colors, viewmats, ks)]


# ------------------------------------------------------------------------------------- equality and gradients
@pytest.mark.parametrize("mode,antialiased,seed", [("RGB+D", False, 0), ("RGB+ED", True, 1), ("RGB", False, 2)])
def test_matches_dense_reference(mode, antialiased, seed):
    width, height = 40, 30
    means, quats, scales, opac, colors, viewmats, ks = _scene(150, width, height, seed)
    bg = torch.rand(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out, alphas, meta = rasterize_gaussians(means, quats, scales, opac, colors, viewmats, ks, width, height,
                                            render_mode=mode, backgrounds_c3=bg,
                                            rasterize_mode="antialiased" if antialiased else "classic")
    ref, ref_alphas, ref_means2d = _reference(means, quats, scales, opac, colors, viewmats, ks, width, height,
                                              antialiased=antialiased, depth_channel="D" in mode, backgrounds=bg)
    if mode.endswith("ED"):
        ref[..., -1:] = ref[..., -1:] / ref_alphas.clamp_min(1e-10)
    assert _reference.terminated > 0 and (ref_alphas == 0).any()  # early exits and empty pixels both happen
    assert torch.allclose(alphas, ref_alphas, atol=1e-4, rtol=0)
    assert torch.allclose(out[..., :3], ref[..., :3], atol=1e-4, rtol=0)
    if "D" in mode:
        assert torch.allclose(out[..., 3], ref[..., 3], atol=1e-4, rtol=1e-6)
    visible = meta["radii"] > 0
    assert 0 < visible.sum() < visible.numel()  # some culled (behind the camera / off-screen), some drawn
    assert torch.allclose(meta["means2d"][visible], ref_means2d[visible] + 0.5)  # gsplat's pixel convention


def test_float32_matches_float64_reference():
    width, height = 36, 28
    scene64 = _scene(120, width, height, seed=5, n_cameras=2)
    out, alphas, _ = rasterize_gaussians(*[t.float() for t in scene64], width, height, render_mode="RGB+D")
    ref, ref_alphas, _ = _reference(*scene64, width, height, depth_channel=True)
    assert out.dtype == torch.float32
    assert torch.allclose(alphas.double(), ref_alphas, atol=1e-4, rtol=0)
    assert torch.allclose(out[..., :3].double(), ref[..., :3], atol=1e-4, rtol=0)
    assert torch.allclose(out[..., 3].double(), ref[..., 3], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("sh_degree", [None, 1])
def test_gradients_match_reference_autograd(sh_degree):
    width, height = 24, 18
    means, quats, scales, opac, colors, viewmats, ks = _scene(40, width, height, seed=3, n_cameras=2)
    if sh_degree is not None:
        colors = torch.randn(means.shape[0], 4, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]], dtype=torch.float64)
    weights = torch.randn(2, height, width, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def grads(render):
        leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors, viewmats)]
        out, alphas, means2d = render(*leaves)
        means2d.retain_grad()
        loss = (torch.cat([out, alphas], dim=-1) * weights).sum()
        loss.backward()
        return [t.grad for t in leaves] + [means2d.grad]

    def ours(*leaves):
        out, alphas, meta = rasterize_gaussians(*leaves[:5], leaves[5], ks, width, height, sh_degree=sh_degree,
                                                render_mode="RGB+D", backgrounds_c3=bg)
        return out, alphas, meta["means2d"]

    def reference(*leaves):
        return _reference(*leaves[:5], leaves[5], ks, width, height, sh_degree=sh_degree, depth_channel=True,
                          backgrounds=bg)

    names = ["means", "quats", "scales", "opacities", "colors", "viewmats", "means2d"]
    for name, g_ours, g_ref in zip(names, grads(ours), grads(reference)):
        assert g_ref.abs().max() > 0, name
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-6, atol=1e-9 * g_ref.abs().max(), msg=name)


def test_composite_gradcheck():
    """Finite differences on the compositing stage alone: three big overlapping Gaussians, no threshold nearby."""
    means2d = torch.tensor([[[3.0, 2.5], [4.2, 3.1], [2.0, 4.0]]], dtype=torch.float64, requires_grad=True)
    conics = torch.tensor([[[0.08, 0.01, 0.1], [0.12, -0.02, 0.07], [0.05, 0.0, 0.05]]], dtype=torch.float64,
                          requires_grad=True)
    colors = torch.rand(1, 3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64,
                        requires_grad=True)
    opac = torch.tensor([[0.7, 0.5, 0.9]], dtype=torch.float64, requires_grad=True)
    radii = torch.full((1, 3, 2), 50, dtype=torch.int32)
    bins = bin_gaussians(means2d, radii, torch.tensor([[1.0, 2.0, 3.0]]), width=6, height=5, tile_size=4)
    assert torch.autograd.gradcheck(lambda *x: CompositeGaussians.apply(*x, bins, 2), (means2d, conics, colors, opac))


def test_means2d_gradient_flows_and_is_deterministic():
    scene = _scene(300, 48, 40, seed=8, n_cameras=2, dtype=torch.float32)
    results = []
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            leaves = [t.clone().requires_grad_(i < 5) for i, t in enumerate(scene)]
            out, alphas, meta = rasterize_gaussians(*leaves, 48, 40, tile_size=8 * threads)
            meta["means2d"].retain_grad()
            (out.square().sum() + alphas.sum()).backward()
        finally:
            torch.set_num_threads(previous)
        assert meta["means2d"].grad is not None and meta["means2d"].grad.abs().sum() > 0
        results.append([out, alphas, meta["means2d"].grad] + [t.grad for t in leaves[:5]])
    for a, b in zip(*results):  # threads and tile size change nothing, to the bit
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------- closed forms
def _single(position, scale, opacity, *, cx=10.0, cy=20.0, f=50.0, width=32, height=40, **kwargs):
    colors = kwargs.pop("colors", torch.tensor([[1.0, 0.5, 0.25]], dtype=torch.float64))
    means = torch.tensor([position], dtype=torch.float64)
    ks = torch.tensor([[[f, 0, cx], [0, f, cy], [0, 0, 1]]], dtype=torch.float64)
    return rasterize_gaussians(means, torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
                               torch.full((1, 3), scale, dtype=torch.float64),
                               torch.tensor([opacity], dtype=torch.float64),
                               colors,
                               torch.eye(4, dtype=torch.float64)[None], ks, width, height, **kwargs)


@pytest.mark.parametrize("antialiased", [False, True])
def test_isotropic_gaussian_head_on_profile(antialiased):
    z, s, o = 5.0, 0.2, 0.8
    out, alphas, meta = _single([0.0, 0.0, z], s, o, render_mode="RGB+ED",
                                rasterize_mode="antialiased" if antialiased else "classic")
    var0 = (50.0 * s / z) ** 2
    var = var0 + 0.3
    peak = o * var0 / var if antialiased else o  # opacity compensation sqrt(det / det_dilated)
    ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(32.0), indexing="ij")
    expected = peak * torch.exp(-0.5 * ((xs - 10) ** 2 + (ys - 20) ** 2) / var).double()
    expected = torch.where(expected >= 1 / 255, expected, torch.zeros_like(expected))
    assert torch.allclose(alphas[0, ..., 0], expected, atol=1e-12)
    assert torch.allclose(out[0, ..., 1], 0.5 * expected, atol=1e-12)
    row, col = divmod(int(alphas[0, ..., 0].argmax()), 32)
    assert (col, row) == (10, 20)
    assert torch.allclose(out[0, ..., 3][expected > 0], torch.tensor(z, dtype=torch.float64))  # ED = z
    assert meta["means2d"][0, 0].tolist() == [10.5, 20.5] and meta["radii"][0, 0] > 0


def test_off_axis_gaussian_peaks_at_its_projection():
    out, alphas, _ = _single([0.8, -0.4, 4.0], 0.05, 0.9, cx=12.0, cy=15.0, f=40.0)
    u, v = 12.0 + 40.0 * 0.8 / 4.0, 15.0 - 40.0 * 0.4 / 4.0  # (20, 11)
    row, col = divmod(int(alphas[0, ..., 0].argmax()), 32)
    assert (col, row) == (u, v) and alphas[0, row, col, 0] == pytest.approx(0.9)


def test_sh_degree_0_and_1_colours():
    dc = torch.tensor([[[0.3, -0.7, 1.1]]], dtype=torch.float64)
    out, alphas, _ = _single([0.0, 0.0, 5.0], 0.5, 0.6, colors=dc, sh_degree=0)
    expected = (0.5 + SH_C0 * dc[0, 0]).clamp_min(0)
    assert torch.allclose(out[0, 20, 10], expected * alphas[0, 20, 10])
    coeffs = torch.tensor([[[0.1, 0.2, 0.3], [0.5, 0.0, 0.0], [0.0, 0.7, 0.0], [0.0, 0.0, -0.4]]],
                          dtype=torch.float64)
    d = torch.tensor([0.6, -0.2, 3.0], dtype=torch.float64)
    out, alphas, _ = _single(d.tolist(), 0.3, 0.6, colors=coeffs, sh_degree=1, cx=4.0, cy=24.0)
    x, y, z = (d / d.norm()).tolist()
    rgb = 0.5 + SH_C0 * coeffs[0, 0] - SH_C1 * y * coeffs[0, 1] + SH_C1 * z * coeffs[0, 2] - SH_C1 * x * coeffs[0, 3]
    assert torch.allclose(out[0, 20, 14], rgb.clamp_min(0) * alphas[0, 20, 14])


def test_sh_basis_is_orthonormal_up_to_degree_3():
    n = 40000  # Fibonacci sphere: an even quadrature of the sphere
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * k / n
    phi = math.pi * (1 + 5 ** 0.5) * k
    dirs = torch.stack([torch.sqrt(1 - z * z) * torch.cos(phi), torch.sqrt(1 - z * z) * torch.sin(phi), z], -1)
    basis = sh_basis(3, dirs)
    gram = 4 * math.pi * basis.T @ basis / n
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=1e-3)


def test_sh_basis_matches_sloan_recurrences():
    """Signs and constants of degrees 2-3 against the recurrence form gsplat evaluates (Sloan, JCGT 2013)."""
    d = torch.nn.functional.normalize(torch.randn(50, 3, generator=torch.Generator().manual_seed(2),
                                                  dtype=torch.float64), dim=-1)
    x, y, z = d.unbind(-1)
    c1, s1 = x * x - y * y, 2 * x * y
    c2, s2 = x * c1 - y * s1, x * s1 + y * c1
    tmp_c = -2.285228997322329 * z * z + 0.4570457994644658
    expected = torch.stack([0.5462742152960395 * s1, -1.092548430592079 * z * y,
                            0.9461746957575601 * z * z - 0.3153915652525201, -1.092548430592079 * z * x,
                            0.5462742152960395 * c1, -0.5900435899266435 * s2, 1.445305721320277 * z * s1,
                            tmp_c * y, z * (1.865881662950577 * z * z - 1.119528997770346), tmp_c * x,
                            1.445305721320277 * z * c1, -0.5900435899266435 * c2], dim=-1)
    assert torch.allclose(sh_basis(3, d)[:, 4:], expected, atol=1e-12)


def test_batched_cameras_and_per_camera_colours():
    width, height = 30, 22
    means, quats, scales, opac, _, viewmats, ks = _scene(60, width, height, seed=11, n_cameras=3)
    colors_cn3 = torch.rand(3, 60, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, alphas, meta = rasterize_gaussians(means, quats, scales, opac, colors_cn3, viewmats, ks, width, height)
    for c in range(3):
        one, one_alphas, one_meta = rasterize_gaussians(means, quats, scales, opac, colors_cn3[c], viewmats[c:c + 1],
                                                        ks[c:c + 1], width, height)
        assert torch.equal(out[c], one[0]) and torch.equal(alphas[c], one_alphas[0])
        assert torch.equal(meta["radii"][c], one_meta["radii"][0])


def test_radius_clip_culls_small_gaussians():
    # opacity-aware box: ceil(sqrt(2 ln(255 opacity)) sigma), sigma^2 = (f s / z)^2 + eps2d = 4.3 -> 7 px
    radius = math.ceil(math.sqrt(2 * math.log(255 * 0.8)) * math.sqrt(4.3))
    _, alphas, meta = _single([0.0, 0.0, 5.0], 0.2, 0.8, radius_clip=radius - 0.1)
    assert meta["radii"][0, 0] == radius == 7 and alphas.any()
    _, alphas, meta = _single([0.0, 0.0, 5.0], 0.2, 0.8, radius_clip=float(radius))  # culled when <= radius_clip
    assert meta["radii"][0, 0] == 0 and not alphas.any()


def test_background_and_early_termination():
    bg = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    out_bg, alphas, _ = _single([0.0, 0.0, 5.0], 0.2, 0.8, backgrounds_c3=bg)
    out, _, _ = _single([0.0, 0.0, 5.0], 0.2, 0.8)
    assert torch.allclose(out_bg, out + (1 - alphas) * bg)
    # opaque Gaussians stacked on one pixel: the first gives alpha 0.999 (clamped); the second would bring T to
    # 1e-6 <= 1e-4, so it and everything behind it are dropped
    means = torch.tensor([[0.0, 0.0, 2.0 + k] for k in range(4)], dtype=torch.float64)
    colors = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    out, alphas, _ = rasterize_gaussians(
        means, torch.tensor([[1.0, 0, 0, 0]] * 4, dtype=torch.float64), torch.full((4, 3), 0.3, dtype=torch.float64),
        torch.ones(4, dtype=torch.float64), colors, torch.eye(4, dtype=torch.float64)[None],
        torch.tensor([[[20.0, 0, 4], [0, 20.0, 4], [0, 0, 1]]], dtype=torch.float64), 9, 9)
    assert alphas[0, 4, 4, 0].item() == pytest.approx(0.999, abs=1e-12)
    assert out[0, 4, 4].tolist() == pytest.approx([0.999, 0.0, 0.0], abs=1e-12)


def test_empty_and_all_culled():
    bg = torch.tensor([[0.4, 0.5, 0.6], [0.0, 0.0, 1.0]])
    vm, ks = torch.eye(4).expand(2, 4, 4), torch.tensor([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]]).expand(2, 3, 3)
    for means in (torch.zeros(0, 3), torch.tensor([[0.0, 0.0, -3.0], [50.0, 0.0, 1.0]])):  # none; behind + off-screen
        n = means.shape[0]
        leaves = [means.clone().requires_grad_(True), torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).clone(),
                  torch.full((n, 3), 0.1), torch.full((n,), 0.9), torch.ones(n, 3)]
        out, alphas, meta = rasterize_gaussians(*leaves, vm, ks, 11, 7, backgrounds_c3=bg, render_mode="RGB+D")
        assert out.shape == (2, 7, 11, 4) and alphas.shape == (2, 7, 11, 1)
        assert torch.equal(out[..., :3], bg[:, None, None].expand(2, 7, 11, 3)) and not alphas.any()
        assert meta["radii"].shape == (2, n) and not meta["radii"].any()
        out.sum().backward()
        assert torch.equal(leaves[0].grad, torch.zeros_like(means))


# ------------------------------------------------------------------------------------------------- errors
def _good():
    return dict(means_n3=torch.zeros(2, 3), quats_n4=torch.ones(2, 4), scales_n3=torch.ones(2, 3),
                opacities_n=torch.ones(2), colors=torch.ones(2, 3), viewmats_c44=torch.eye(4)[None],
                Ks_c33=torch.eye(3)[None], width=8, height=8)


@pytest.mark.parametrize("change,needle", [
    (dict(means_n3=torch.zeros(2, 2)), "means_n3"),
    (dict(quats_n4=torch.ones(3, 4)), "quats_n4"),
    (dict(opacities_n=torch.ones(2, 1)), "opacities_n"),
    (dict(colors=torch.ones(2, 4, 3), sh_degree=2), "needs 9"),
    (dict(Ks_c33=torch.eye(3)[None].expand(2, 3, 3)), "Ks_c33"),
    (dict(backgrounds_c3=torch.ones(1, 4)), "backgrounds_c3"),
    (dict(width=0), "width"),
    (dict(render_mode="RGBD"), "render_mode"),
    (dict(scales_n3=torch.ones(2, 3, dtype=torch.float64)), "scales_n3"),
    (dict(near_plane=0.0), "near_plane"),
    (dict(backend="gsplat"), "CUDA"),
])
def test_bad_arguments_raise_config_error(change, needle):
    kwargs = _good() | change
    positional = [kwargs.pop(k) for k in ("means_n3", "quats_n4", "scales_n3", "opacities_n", "colors",
                                          "viewmats_c44", "Ks_c33", "width", "height")]
    with pytest.raises(ConfigError, match=needle):
        rasterize_gaussians(*positional, **kwargs)


def test_auto_backend_on_cpu_is_ours():
    kwargs = _good()
    _, _, meta = rasterize_gaussians(*kwargs.values(), backend="auto")
    assert meta["backend"] == "ours" and meta["width"] == 8 and meta["n_cameras"] == 1 and meta["tile_size"] == 16
