"""The CPU backend's fused projection (numba forward + analytic backward) against the torch-autograd projection it
replaces on the CPU: same 2D means, covariances and depths, same gradients for means, quats, scales and viewmats,
including Gaussians behind the camera and far off-screen ones whose Jacobian is clamped."""

from __future__ import annotations

import math

import pytest
import torch

from earthsynth.render.splat_project import (
    FusedProjection,
    _project_fused,
    _project_torch,
    project_gaussians,
)

WIDTH, HEIGHT, NEAR = 64, 48, 0.01


def _cloud(n=200, n_cameras=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=torch.float64) * 2.0 + torch.tensor([0.0, 0.0, 4.0],
                                                                                         dtype=torch.float64)
    means[:5, 2] = -1.0                 # behind the camera: culled, depth replaced by 1 in the Jacobian
    means[5:10, 0] = 40.0               # far right of the view: x/z clamped in the Jacobian
    means[10:13, 1] = -30.0             # far above: y/z clamped on the negative side
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.3 + 0.01
    viewmats = torch.eye(4, dtype=torch.float64).repeat(n_cameras, 1, 1)
    for c in range(n_cameras):
        a = 0.2 * c
        viewmats[c, :3, :3] = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0],
                                            [-math.sin(a), 0.0, math.cos(a)]], dtype=torch.float64)
        viewmats[c, :3, 3] = torch.tensor([0.1 * c, -0.2, 0.5], dtype=torch.float64)
    ks = torch.tensor([[50.0, 0.0, 32.0], [0.0, 55.0, 24.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return means, quats, scales, viewmats, ks.repeat(n_cameras, 1, 1)


def _outputs_and_grads(project, means, quats, scales, viewmats, ks):
    leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, viewmats)]
    means2d, cov2d, depths = project(*leaves, ks, WIDTH, HEIGHT, NEAR)
    outputs = [means2d, torch.stack(cov2d, dim=-1), depths]
    g = torch.Generator().manual_seed(7)
    loss = sum((out * torch.randn(out.shape, generator=g, dtype=torch.float64)).sum() for out in outputs)
    loss.backward()
    return [o.detach() for o in outputs] + [leaf.grad for leaf in leaves]


def test_fused_projection_equals_the_torch_projection():
    cloud = _cloud()
    fused = _outputs_and_grads(_project_fused, *cloud)
    reference = _outputs_and_grads(_project_torch, *cloud)
    names = ["means2d", "cov2d", "depths", "v_means", "v_quats", "v_scales", "v_viewmats"]
    for name, a, b in zip(names, fused, reference):
        scale = float(b.abs().max())
        assert scale > 0, name
        assert float((a - b).abs().max()) <= 1e-12 * scale, name


def test_fused_projection_gradcheck():
    means, quats, scales, viewmats, ks = _cloud(n=14, n_cameras=2, seed=3)
    leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, viewmats)]
    assert torch.autograd.gradcheck(
        lambda *args: FusedProjection.apply(*args, ks, WIDTH, HEIGHT, NEAR), leaves)


@pytest.mark.parametrize("antialiased", [False, True])
def test_project_gaussians_same_either_way_in_float32(antialiased):
    means, quats, scales, viewmats, ks = (t.float() for t in _cloud(seed=5))
    opacities = torch.rand(means.shape[0], generator=torch.Generator().manual_seed(1))
    common = {"near_plane": NEAR, "far_plane": 1e10, "radius_clip": 0.0, "eps2d": 0.3, "antialiased": antialiased}
    a = project_gaussians(means, quats, scales, opacities, viewmats, ks, WIDTH, HEIGHT, fused=True, **common)
    b = project_gaussians(means, quats, scales, opacities, viewmats, ks, WIDTH, HEIGHT, fused=False, **common)
    assert a.means2d_cn2.dtype == torch.float32
    assert torch.allclose(a.means2d_cn2, b.means2d_cn2, rtol=1e-5, atol=1e-3)
    assert torch.allclose(a.conics_cn3, b.conics_cn3, rtol=1e-4, atol=1e-6)
    assert torch.allclose(a.opacities_cn, b.opacities_cn, rtol=1e-5, atol=1e-7)
    assert (a.radii_cn2 - b.radii_cn2).abs().max() <= 1            # integer boxes: a ceil may tip by one
    assert (a.radii_cn2 > 0).all(-1).sum() == (b.radii_cn2 > 0).all(-1).sum()


def test_fused_backward_bytes_do_not_depend_on_threads():
    means, quats, scales, viewmats, ks = _cloud(n=9000, n_cameras=2, seed=4)   # three backward ranges
    grads = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, viewmats)]
            means2d, cov2d, depths = FusedProjection.apply(*leaves, ks[:2], WIDTH, HEIGHT, NEAR)
            (means2d.sum() + cov2d.square().sum() + depths.sum()).backward()
            grads.append([leaf.grad.numpy().tobytes() for leaf in leaves])
    finally:
        torch.set_num_threads(previous)
    assert grads[0] == grads[1]
