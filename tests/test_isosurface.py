"""Marching tetrahedra: watertight and accurate on a sphere, exact edge gradients, closed 2.5D solids, speed,
and gradients from mesh vertices back to the Z-monotonic SDF's offsets."""

import itertools
import math
import time

import numpy as np
import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.io.mesh import TexturedMesh, is_watertight
from earthsynth.mesh import isosurface
from earthsynth.mesh.isosurface import extract_isosurface, marching_tetrahedra
from earthsynth.mesh.zsdf import ZMonotonicSDF, ZSDFConfig


def _sphere_grid(resolution, radius, centre=(0.05, -0.03, 0.02), dtype=torch.float32):
    ax = torch.linspace(-1, 1, resolution, dtype=dtype)
    x, y, z = torch.meshgrid(ax, ax, ax, indexing="ij")
    c = torch.tensor(centre, dtype=dtype)
    return torch.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) - radius


def _signed_volume(vertices, faces) -> float:
    v = vertices.detach().double()
    return float((v[faces[:, 0]] * torch.linalg.cross(v[faces[:, 1]], v[faces[:, 2]])).sum() / 6)


def _watertight(vertices, faces) -> bool:
    return is_watertight(TexturedMesh(vertices.detach().double().numpy(), faces.numpy()))


def test_tetrahedra_tile_the_cube_conformingly_with_positive_orientation():
    corners = isosurface._TET_CORNERS_643
    volumes = torch.linalg.det((corners[:, 1:] - corners[:, :1]).double()) / 6
    assert torch.allclose(volumes, torch.full((6,), 1 / 6, dtype=torch.float64))   # disjoint, fill the cube
    # each triangular face is shared by two tetrahedra, or lies on a cube face split along the diagonal
    # from the face's lowest to its highest corner, the same split for the neighbouring cube: conforming
    faces = [frozenset(map(tuple, t[list(f)].tolist())) for t in corners
             for f in itertools.combinations(range(4), 3)]
    for face in faces:
        on_cube_face = any(len({p[a] for p in face}) == 1 for a in range(3))
        if not on_cube_face:
            assert faces.count(face) == 2
            continue
        points = sorted(face, key=sum)
        diagonal = (points[0], points[-1])
        assert sum(diagonal[1]) - sum(diagonal[0]) == 2 and faces.count(face) == 1


@pytest.mark.parametrize("resolution", [24, 64])
def test_sphere_is_watertight_accurate_and_outward(resolution):
    radius = 0.6
    vertices, faces = extract_isosurface(_sphere_grid(resolution, radius), (-1, -1, -1), (1, 1, 1))
    cell = 2 / (resolution - 1)
    centre = torch.tensor([0.05, -0.03, 0.02])
    distance = (vertices.detach() - centre).norm(dim=1) - radius
    assert distance.abs().max() < 0.1 * cell          # exact SDF: linear interpolation errs by O(cell^2)
    assert _watertight(vertices, faces)
    volume = _signed_volume(vertices, faces)            # positive: faces are CCW seen from outside
    exact = 4 / 3 * math.pi * radius ** 3
    assert volume > 0 and abs(volume - exact) / exact < (0.02 if resolution == 24 else 0.002)
    print(f"sphere {resolution}^3: {len(vertices)} vertices, volume error {abs(volume - exact) / exact:.2e}")


def test_vertex_gradient_matches_finite_differences():
    sdf = _sphere_grid(12, 0.55, dtype=torch.float64).requires_grad_()
    surface = marching_tetrahedra(sdf, (-1, -1, -1), (1, 1, 1), closed=False)
    gen = torch.Generator().manual_seed(0)
    for v in torch.randint(0, len(surface.vertices_v3), (5,), generator=gen).tolist():
        direction = torch.randn(3, generator=gen, dtype=torch.float64)
        (grad,) = torch.autograd.grad(surface.vertices_v3[v] @ direction, sdf, retain_graph=True)
        grad = grad.reshape(-1)
        a, b = surface.edges_v2[v].tolist()
        assert set(torch.nonzero(grad).reshape(-1).tolist()) <= {a, b}
        for point in (a, b):
            step = 1e-6
            shifted = []
            for sign in (1, -1):
                bumped = sdf.detach().clone().reshape(-1)
                bumped[point] += sign * step
                moved = marching_tetrahedra(bumped.reshape(sdf.shape), (-1,) * 3, (1,) * 3, closed=False)
                shifted.append(moved.vertices_v3[v] @ direction)
            numeric = (shifted[0] - shifted[1]) / (2 * step)
            assert abs(float(grad[point]) - float(numeric)) < 1e-6 * max(1.0, abs(float(numeric)))


def test_closing_caps_an_open_surface_half_a_cell_out():
    ax = torch.linspace(-1, 1, 16)
    z = ax[None, None, :].expand(16, 16, 16)
    plane = z - 0.21                                     # a flat ground: open without caps
    open_vertices, open_faces = extract_isosurface(plane, (-1,) * 3, (1,) * 3, closed=False)
    assert not _watertight(open_vertices, open_faces)
    vertices, faces = extract_isosurface(plane, (-1,) * 3, (1,) * 3)
    assert _watertight(vertices, faces)
    half = 1 / 15
    lo, hi = vertices.detach().min(0).values, vertices.detach().max(0).values
    assert torch.allclose(lo, torch.tensor([-1 - half, -1 - half, -1 - half]), atol=1e-5)
    assert torch.allclose(hi[:2], torch.tensor([1 + half, 1 + half]), atol=1e-5)
    in_box = (vertices.detach()[:, :2].abs() <= 1 + 1e-6).all(dim=1)
    assert abs(float(vertices.detach()[in_box, 2].max()) - 0.21) < 1e-5     # the surface itself is exact
    assert float(hi[2]) <= 0.21 + half                   # the rim strip outside the box rises at most half a cell
    expected = (2 + 2 * half) ** 2 * (0.21 + 1 + half)
    assert abs(_signed_volume(vertices, faces) - expected) / expected < 0.01


def test_box_building_from_a_z_monotonic_sdf_is_closed_and_keeps_its_heights():
    n = 24
    height = torch.full((n, n), -0.52)
    height[8:15, 6:18] = 0.33
    height[17:22, 3:7] = 0.61
    field = ZMonotonicSDF.from_heightmap(height)
    resolution = 48
    vertices, faces = extract_isosurface(field.sample_grid(resolution), (-1,) * 3, (1,) * 3)
    assert _watertight(vertices, faces)
    v = vertices.detach()
    col = ((v[:, 0] + 1) * n / 2).floor().long()
    row = ((v[:, 1] + 1) * n / 2).floor().long()
    inside = (col >= 0) & (col < n) & (row >= 0) & (row < n)
    top = torch.full((n * n,), -math.inf).scatter_reduce(
        0, row[inside] * n + col[inside], v[inside, 2], "amax").reshape(n, n)
    # top-down max height per height-map cell, on cells whose 3 x 3 neighbourhood is flat (away from facades)
    pool = torch.nn.functional.max_pool2d
    flat = pool(height[None], 3, 1, 1)[0] == -pool(-height[None], 3, 1, 1)[0]
    seen = flat & torch.isfinite(top)
    assert seen.sum() > 300
    dz = 2 / (resolution - 1)
    assert (top[seen] - height[seen]).abs().max() < 0.5 * dz
    in_box = (v[:, :2].abs() <= 1).all(dim=1)
    assert abs(float(v[in_box, 2].max()) - 0.61) < 0.5 * dz


def test_speed_at_128_cubed():
    sdf = _sphere_grid(128, 0.6).requires_grad_()
    extract_isosurface(_sphere_grid(16, 0.6), (-1,) * 3, (1,) * 3)          # warm up
    start = time.perf_counter()
    vertices, faces = extract_isosurface(sdf, (-1,) * 3, (1,) * 3)
    elapsed = time.perf_counter() - start
    print(f"128^3 extraction: {elapsed:.2f} s, {len(vertices)} vertices, {len(faces)} faces")
    assert elapsed < 5.0


def test_gradient_flows_from_vertices_to_the_z_monotonic_offsets():
    height = torch.full((16, 16), -0.3)
    height[5:11, 5:11] = 0.4
    field = ZMonotonicSDF.from_heightmap(height, ZSDFConfig(grid_hw=(16, 16)))
    vertices, faces = extract_isosurface(field.sample_grid(32), (-1,) * 3, (1,) * 3)
    vertices[:, 2].mean().backward()
    grad = field.offsets_hw.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert (grad != 0).float().mean() > 0.9                # nearly every offset moves the surface
    assert grad.sum() > 0                                  # raising heights raises the mean z


def test_no_surface_and_bad_inputs():
    vertices, faces = extract_isosurface(torch.ones(4, 4, 4), (0, 0, 0), (1, 1, 1))
    assert vertices.shape == (0, 3) and faces.shape == (0, 3)
    with pytest.raises(ConfigError):
        extract_isosurface(torch.ones(4, 4), (0, 0, 0), (1, 1, 1))
    with pytest.raises(ConfigError):
        extract_isosurface(torch.ones(4, 4, 4), (0, 0, 0), (1, 0, 1))
    with pytest.raises(ConfigError, match="NaN"):
        extract_isosurface(torch.full((4, 4, 4), math.nan), (0, 0, 0), (1, 1, 1))
    assert np.all(faces.numpy() >= 0)
