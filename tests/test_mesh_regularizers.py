"""Geometry regularisers on closed-form cases: flat is zero, noise costs, values match hand computations."""

import math

import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.mesh.regularizers import (RegularizerWeights, annealed_sdf_sign_weight, laplacian_loss,
                                          normal_tv_loss, sdf_sign_change_loss, uniform_laplacian)


def _grid_mesh(n=9, z=None):
    """A regular n x n triangulated plane over [0, 1]^2 (quads split along one diagonal)."""
    u = torch.linspace(0, 1, n, dtype=torch.float64)
    y, x = torch.meshgrid(u, u, indexing="ij")
    zz = torch.zeros_like(x) if z is None else z
    vertices = torch.stack([x, y, zz], -1).reshape(-1, 3)
    i, j = torch.meshgrid(torch.arange(n - 1), torch.arange(n - 1), indexing="ij")
    a = (i * n + j).reshape(-1)
    faces = torch.cat([torch.stack([a, a + 1, a + n + 1], 1), torch.stack([a, a + n + 1, a + n], 1)])
    interior = torch.zeros(n, n, dtype=torch.bool)
    interior[1:-1, 1:-1] = True
    return vertices, faces, interior.reshape(-1)


def test_paper_weights():
    weights = RegularizerWeights()
    assert (weights.laplacian, weights.normal_tv, weights.sdf_sign) == (0.5, 0.01, 0.1)


def test_laplacian_of_a_flat_plane_is_zero_inside_and_in_plane_on_the_border():
    vertices, faces, interior = _grid_mesh()
    delta = uniform_laplacian(vertices, faces)
    assert torch.allclose(delta[interior], torch.zeros(1, dtype=torch.float64), atol=1e-12)
    assert torch.all(delta[:, 2] == 0)                          # a plane stays a plane
    assert laplacian_loss(vertices, faces, interior) == 0
    tilted = vertices.clone()
    tilted[:, 2] = 0.3 * vertices[:, 0] - 0.2 * vertices[:, 1]  # any plane: the uniform Laplacian is linear
    assert laplacian_loss(tilted, faces, interior) < 1e-20


def test_laplacian_grows_with_noise_and_matches_a_hand_value():
    vertices, faces, interior = _grid_mesh()
    gen = torch.Generator().manual_seed(0)
    noisy = vertices.clone()
    noisy[:, 2] += 0.01 * torch.randn(len(vertices), generator=gen, dtype=torch.float64)
    small = laplacian_loss(noisy, faces, interior)
    noisy[:, 2] *= 10
    assert 0 < small < laplacian_loss(noisy, faces, interior)
    # a single bump of height h at an interior vertex with 6 neighbours: the vertex has |delta| = h, each
    # neighbour |delta| = h / deg(neighbour) (all of degree 6 here)
    bumped = vertices.clone()
    centre = 4 * 9 + 4
    bumped[centre, 2] = 1.0
    expected = (1.0 + 6 * (1 / 6) ** 2) / len(vertices)
    delta_z = uniform_laplacian(bumped, faces)[:, 2]
    assert math.isclose(float(delta_z.square().sum()) / len(vertices), expected, rel_tol=1e-12)


def test_laplacian_loss_backpropagates():
    vertices, faces, _ = _grid_mesh(5)
    vertices = vertices.clone()
    vertices[12, 2] = 0.5
    vertices.requires_grad_()
    laplacian_loss(vertices, faces).backward()
    assert vertices.grad[12, 2] > 0                      # lowering the bump lowers the loss


def test_normal_tv_flat_is_zero_and_a_crease_costs_its_jump():
    flat = torch.zeros(6, 7, 3)
    flat[..., 2] = 2.0                                   # unnormalised on purpose
    assert normal_tv_loss(flat) == 0
    crease = torch.zeros(6, 7, 3)
    crease[..., 2] = 1.0
    crease[:, 4:] = torch.tensor([math.sin(0.5), 0.0, math.cos(0.5)])   # a roof ridge between columns 3 and 4
    jump = 2 * math.sin(0.25)                            # chord between unit normals 0.5 rad apart
    expected = jump * 6 / (6 * 6)                        # one of 6 horizontal pairs per row differs; no vertical
    assert math.isclose(float(normal_tv_loss(crease)), expected, rel_tol=1e-6)


def test_normal_tv_noise_mask_and_gradient():
    gen = torch.Generator().manual_seed(1)
    normals = torch.zeros(16, 16, 3)
    normals[..., 2] = 1
    noisy = (normals + 0.1 * torch.randn(16, 16, 3, generator=gen)).requires_grad_()
    loss = normal_tv_loss(noisy)
    assert loss > 0.05
    loss.backward()
    assert torch.isfinite(noisy.grad).all()
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:8, 4:8] = True
    background = normals.clone()
    background[~mask] = torch.tensor([1.0, 0.0, 0.0])    # a different "normal" outside the mask: ignored
    assert normal_tv_loss(background, mask) == 0
    flat = normals.clone().requires_grad_()
    normal_tv_loss(flat).backward()
    assert torch.all(flat.grad == 0)                     # finite (zero) gradient at zero differences
    with pytest.raises(ConfigError):
        normal_tv_loss(torch.zeros(4, 4))


def test_sdf_sign_change_loss_matches_flexicubes_definition():
    sdf = torch.zeros(2, 1, 1)
    sdf[0, 0, 0], sdf[1, 0, 0] = -0.5, 2.0              # one edge with a sign change
    loss = sdf_sign_change_loss(sdf)
    bce = lambda logit, target: math.log1p(math.exp(-logit)) if target else math.log1p(math.exp(logit))
    assert math.isclose(float(loss), bce(-0.5, True) + bce(2.0, False), rel_tol=1e-6)
    assert sdf_sign_change_loss(torch.ones(3, 3, 3)) == 0          # no change: zero, not NaN


def test_sdf_sign_change_loss_prefers_small_values_at_the_surface():
    z = torch.linspace(-1, 1, 8)[None, None, :].expand(8, 8, 8)
    sharp = sdf_sign_change_loss(z * 10)
    gentle = sdf_sign_change_loss(z * 0.1)
    assert gentle < sharp
    values = (z * 10).clone().requires_grad_()
    sdf_sign_change_loss(values).backward()
    assert values.grad.abs().sum() > 0


def test_annealed_weight_follows_the_flexicubes_schedule():
    assert annealed_sdf_sign_weight(0, 100) == 0.1
    assert math.isclose(annealed_sdf_sign_weight(25, 100), 0.1 / 20)
    assert math.isclose(annealed_sdf_sign_weight(90, 100), 0.1 / 20)
    assert math.isclose(annealed_sdf_sign_weight(10, 100), 0.1 - 0.095 * 0.4)
