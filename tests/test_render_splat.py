"""CPU Gaussian-splatting rasteriser against the independent dense reference (splat_reference.py): values in
float64 and float32, gradients against the reference's autograd, compositing gradcheck, the densification
gradient."""

from __future__ import annotations

import pytest
import torch

from earthsynth.render.splat import rasterize_gaussians
from earthsynth.render.splat_composite import CompositeGaussians, bin_gaussians
from splat_reference import reference, scene

# ------------------------------------------------------------------------------------- equality and gradients
@pytest.mark.parametrize("mode,antialiased,seed", [("RGB+D", False, 0), ("RGB+ED", True, 1), ("RGB", False, 2)])
def test_matches_densereference(mode, antialiased, seed):
    width, height = 40, 30
    means, quats, scales, opac, colors, viewmats, ks = scene(150, width, height, seed)
    bg = torch.rand(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out, alphas, meta = rasterize_gaussians(means, quats, scales, opac, colors, viewmats, ks, width, height,
                                            render_mode=mode, backgrounds_c3=bg,
                                            rasterize_mode="antialiased" if antialiased else "classic")
    ref, ref_alphas, ref_means2d = reference(means, quats, scales, opac, colors, viewmats, ks, width, height,
                                              antialiased=antialiased, depth_channel="D" in mode, backgrounds=bg)
    if mode.endswith("ED"):
        ref[..., -1:] = ref[..., -1:] / ref_alphas.clamp_min(1e-10)
    assert reference.terminated > 0 and (ref_alphas == 0).any()  # early exits and empty pixels both happen
    assert torch.allclose(alphas, ref_alphas, atol=1e-4, rtol=0)
    assert torch.allclose(out[..., :3], ref[..., :3], atol=1e-4, rtol=0)
    if "D" in mode:
        assert torch.allclose(out[..., 3], ref[..., 3], atol=1e-4, rtol=1e-6)
    visible = meta["radii"] > 0
    assert 0 < visible.sum() < visible.numel()  # some culled (behind the camera / off-screen), some drawn
    assert torch.allclose(meta["means2d"][visible], ref_means2d[visible] + 0.5)  # gsplat's pixel convention


def test_float32_matches_float64reference():
    width, height = 36, 28
    scene64 = scene(120, width, height, seed=5, n_cameras=2)
    out, alphas, _ = rasterize_gaussians(*[t.float() for t in scene64], width, height, render_mode="RGB+D")
    ref, ref_alphas, _ = reference(*scene64, width, height, depth_channel=True)
    assert out.dtype == torch.float32
    assert torch.allclose(alphas.double(), ref_alphas, atol=1e-4, rtol=0)
    assert torch.allclose(out[..., :3].double(), ref[..., :3], atol=1e-4, rtol=0)
    assert torch.allclose(out[..., 3].double(), ref[..., 3], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("sh_degree", [None, 1])
def test_gradients_match_reference_autograd(sh_degree):
    width, height = 24, 18
    means, quats, scales, opac, colors, viewmats, ks = scene(40, width, height, seed=3, n_cameras=2)
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

    def dense(*leaves):
        return reference(*leaves[:5], leaves[5], ks, width, height, sh_degree=sh_degree, depth_channel=True,
                         backgrounds=bg)

    names = ["means", "quats", "scales", "opacities", "colors", "viewmats", "means2d"]
    for name, g_ours, g_ref in zip(names, grads(ours), grads(dense)):
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
    tensors = scene(300, 48, 40, seed=8, n_cameras=2, dtype=torch.float32)
    results = []
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            leaves = [t.clone().requires_grad_(i < 5) for i, t in enumerate(tensors)]
            out, alphas, meta = rasterize_gaussians(*leaves, 48, 40, tile_size=8 * threads)
            meta["means2d"].retain_grad()
            (out.square().sum() + alphas.sum()).backward()
        finally:
            torch.set_num_threads(previous)
        assert meta["means2d"].grad is not None and meta["means2d"].grad.abs().sum() > 0
        results.append([out, alphas, meta["means2d"].grad] + [t.grad for t in leaves[:5]])
    for a, b in zip(*results):  # threads and tile size change nothing, to the bit
        assert torch.equal(a, b)
