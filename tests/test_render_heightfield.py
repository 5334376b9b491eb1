import numpy as np
import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.geo.pinhole import Camera
from earthsynth.render.heightfield import heightfield_from_points, heightfield_mesh
from earthsynth.splat.depth_prior import SurfaceDepth, pearson_depth_loss


def test_heightfield_keeps_the_top_and_fills_holes():
    points = np.array([[0.5, 9.5, 1.0], [0.6, 9.4, 3.0], [9.5, 0.5, 2.0]])   # two in the NW cell, one SE
    h = heightfield_from_points(points, (0, 0, 10, 10), 1.0)
    assert h.shape == (10, 10)
    assert h[0, 0] == 3.0 and h[9, 9] == 2.0             # max per cell; row 0 is north
    assert np.isfinite(h).all() and set(np.unique(h)) <= {2.0, 3.0}
    with pytest.raises(ConfigError):
        heightfield_from_points(points, (100, 100, 110, 110), 1.0)


def test_depth_of_a_plane_matches_the_closed_form():
    h = np.full((20, 20), 2.0)
    v, f = heightfield_mesh(h, (-10, -10, 10, 10))
    assert f.shape == (2 * 19 * 19, 3)
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (normals[:, 2] > 0).all()                     # counter-clockwise seen from above
    cam = Camera.look_at([0, 0, 52.0], [0, 0, 0], width=32, height=32, fov_x_deg=10.0, up=(0, 1, 0))
    depth = SurfaceDepth(v, f).depth(cam)
    assert torch.isfinite(depth).all()
    assert torch.allclose(depth, torch.full_like(depth, 50.0), atol=1e-3)   # straight down onto z = 2


def test_pearson_loss_is_affine_invariant():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(16, 16, generator=g) * 10 + 40
    assert float(pearson_depth_loss(3 * target + 7, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(pearson_depth_loss(-target, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(pearson_depth_loss(-target, target, absolute=False)) == pytest.approx(2.0, abs=1e-6)
    noise = torch.rand(16, 16, generator=g)
    assert 0.5 < float(pearson_depth_loss(noise, target)) <= 1.0
    depth = target.clone().requires_grad_(True)
    inf_target = target.clone()
    inf_target[0] = float("inf")                         # unseen pixels are left out
    pearson_depth_loss(depth + noise, inf_target).backward()
    assert torch.isfinite(depth.grad).all() and depth.grad[0].abs().sum() == 0
