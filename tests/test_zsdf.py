"""ZMonotonicSDF: sign convention, monotonicity in z, interpolation, continuity, heightmap init, devices."""

import math

import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.mesh.zsdf import ZMonotonicSDF, ZSDFConfig


def _random_field(seed=0, size=16, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    field = ZMonotonicSDF(ZSDFConfig(grid_hw=(size, size + 3)), dtype=dtype)
    with torch.no_grad():
        field.offsets_hw.copy_(torch.rand(field.offsets_hw.shape, generator=gen, dtype=dtype) - 0.5)
    return field, gen


def test_defaults_are_the_papers():
    config = ZSDFConfig()
    assert config.grid_hw == (256, 256) and config.sharpness == 80.0
    assert ZMonotonicSDF().offsets_hw.shape == (256, 256)


def test_negative_below_positive_above():
    field = ZMonotonicSDF.from_heightmap(torch.full((8, 8), 0.2))
    points = torch.tensor([[0.1, -0.3, 0.0], [0.1, -0.3, 0.5], [-0.9, 0.9, 0.19], [-0.9, 0.9, 0.21]])
    s = field.query(points)
    assert s[0] < 0 < s[1] and s[2] < 0 < s[3]


def test_monotone_in_z_by_autograd_and_by_differences():
    field, gen = _random_field()
    points = (torch.rand(20000, 3, generator=gen) * 2.4 - 1.2).requires_grad_()   # also outside [-1, 1]^2
    s = field.query(points)
    (grad,) = torch.autograd.grad(s.sum(), points)
    assert (grad[:, 2] >= 0).all()                  # 0 only where every tanh saturates in float32
    lifted = points.detach() + torch.tensor([0.0, 0.0, 1e-2])
    assert (field.query(lifted) >= s.detach()).all()


def test_strictly_increasing_near_the_nearest_nodes_height():
    # the nearest node has the largest weight (>= 1/9), so within 0.05 of its height ds/dz >= k/9 sech^2(4)
    field, gen = _random_field(seed=5)
    height, width = field.offsets_hw.shape
    xy = torch.rand(5000, 2, generator=gen) * 2 - 1
    col = ((xy[:, 0] + 1) * width / 2 - 0.5).round().clamp(0, width - 1).long()
    row = ((xy[:, 1] + 1) * height / 2 - 0.5).round().clamp(0, height - 1).long()
    z = field.offsets_hw.detach()[row, col] + (torch.rand(5000, generator=gen) - 0.5) * 0.1
    points = torch.cat([xy, z[:, None]], 1).requires_grad_()
    (grad,) = torch.autograd.grad(field.query(points).sum(), points)
    assert (grad[:, 2] > 80 / 9 / math.cosh(4.0) ** 2 * 0.99).all()


def test_interpolates_the_nodes():
    height = torch.linspace(-0.5, 0.5, 6 * 5).reshape(6, 5)
    field = ZMonotonicSDF.from_heightmap(height)
    j, i = torch.meshgrid(torch.arange(5), torch.arange(6), indexing="xy")
    x = -1 + (j.reshape(-1) + 0.5) * 2 / 5
    y = -1 + (i.reshape(-1) + 0.5) * 2 / 6
    z = torch.full_like(x, 0.05)
    s = field.query(torch.stack([x, y, z], 1))
    assert torch.allclose(s, torch.tanh(80 * (z - height.reshape(-1))), atol=1e-5)


def test_continuous_across_neighbourhood_switches():
    field, _ = _random_field(seed=1, dtype=torch.float64)
    x = torch.linspace(-1.1, 1.1, 40001, dtype=torch.float64)   # steps of 1/160 cell cross every midline
    points = torch.stack([x, 0.37 * x + 0.05, torch.full_like(x, 0.013)], 1)
    jumps = field.query(points).diff().abs()
    # a discontinuity would show as a jump of order one; the field's slope bounds this one
    assert jumps.max() < 0.05


def test_facade_between_two_heights():
    height = torch.full((4, 4), -0.5)
    height[:, 2:] = 0.5                                 # a step between columns 1 and 2 (x = 0)
    field = ZMonotonicSDF.from_heightmap(height)
    z = torch.zeros(3, dtype=torch.float32)
    s = field.query(torch.stack([torch.tensor([-0.1, 0.0, 0.1]), torch.zeros(3), z], 1)).detach()
    # between the heights s is about w_ground - w_roof: outside on the low side, inside on the high side,
    # zero at the midline where the weights balance: a vertical plateau, i.e. a facade at x = 0
    assert s[0] > 0.2 and abs(float(s[1])) < 1e-5 and s[2] < -0.2


def test_sample_grid_matches_query_layout():
    field, _ = _random_field(seed=2)
    grid = field.sample_grid((5, 6, 7), bounds_min=(-1, -0.8, -0.6), bounds_max=(0.9, 1.0, 0.7))
    ax = [torch.linspace(lo, hi, n) for lo, hi, n in zip((-1, -0.8, -0.6), (0.9, 1.0, 0.7), (5, 6, 7))]
    points = torch.stack(torch.meshgrid(*ax, indexing="ij"), -1).reshape(-1, 3)
    assert grid.shape == (5, 6, 7)
    assert torch.allclose(grid.reshape(-1), field.query(points), atol=1e-6)


def test_init_from_heightmap_resamples_and_validates():
    field = ZMonotonicSDF(ZSDFConfig(grid_hw=(8, 8)))
    field.init_from_heightmap(torch.full((32, 16), 0.25))
    assert torch.allclose(field.offsets_hw, torch.full((8, 8), 0.25))
    with pytest.raises(ConfigError, match="NaN"):
        field.init_from_heightmap(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ConfigError):
        ZSDFConfig(sharpness=0)


def test_gradient_reaches_the_offsets_and_device_is_kept():
    field = ZMonotonicSDF(ZSDFConfig(grid_hw=(4, 4)), device=torch.device("cpu"))
    s = field.query(torch.tensor([[0.0, 0.0, 0.01]]))
    s.sum().backward()
    assert field.offsets_hw.grad.abs().sum() > 0 and s.device.type == "cpu"
