"""CPU Gaussian-splatting rasteriser: closed forms (single Gaussians, SH bases), batching, culling, backgrounds,
empty inputs, and the errors of bad arguments."""

from __future__ import annotations

import math

import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.render.splat import rasterize_gaussians
from earthsynth.render.splat_project import sh_basis
from splat_reference import SH_C0, SH_C1, scene

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
    means, quats, scales, opac, _, viewmats, ks = scene(60, width, height, seed=11, n_cameras=3)
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


@pytest.mark.parametrize("pinned,outcome", [("cpu", "ours"), ("gsplat", "CUDA"), ("vulkan", "EARTHSYNTH_SPLAT")])
def test_backend_env_pins_what_auto_means(monkeypatch, pinned, outcome):
    monkeypatch.setenv("EARTHSYNTH_SPLAT_BACKEND", pinned)
    kwargs = _good()
    if outcome == "ours":
        assert rasterize_gaussians(*kwargs.values(), backend="auto")[2]["backend"] == "ours"
    else:   # gsplat on CPU tensors, or a backend that does not exist: one clear error
        with pytest.raises(ConfigError, match=outcome):
            rasterize_gaussians(*kwargs.values(), backend="auto")
    monkeypatch.setenv("EARTHSYNTH_SPLAT_BACKEND", "vulkan")    # an explicit backend ignores the variable
    assert rasterize_gaussians(*kwargs.values(), backend="cpu")[2]["backend"] == "ours"
