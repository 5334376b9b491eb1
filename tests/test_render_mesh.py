"""The numba rasteriser against a brute-force ray caster and closed-form cases; differentiable interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.geo.pinhole import Camera, OrthoCamera
from earthsynth.io.mesh import TexturedMesh
from earthsynth.render.mesh import (
    DEFAULT_NEAR,
    barycentrics_differentiable,
    downsample,
    interpolate,
    rasterize,
    render_height,
    render_height_torch,
    render_textured,
    sample_texture,
)

# ------------------------------------------------------------------------------------------------ helpers


def moller_trumbore(origins_r3, dirs_r3, triangles_f33, t_min):
    """Nearest hit per ray by brute force: (triangle id or -1, t or inf, barycentrics (R, 3))."""
    v0 = triangles_f33[:, 0]
    edge1, edge2 = triangles_f33[:, 1] - v0, triangles_f33[:, 2] - v0
    pvec = np.cross(dirs_r3[:, None], edge2[None])
    det = (edge1[None] * pvec).sum(-1)
    ok = np.abs(det) > 1e-12
    inv_det = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    tvec = origins_r3[:, None] - v0[None]
    u = (tvec * pvec).sum(-1) * inv_det
    qvec = np.cross(tvec, edge1[None])
    v = (dirs_r3[:, None] * qvec).sum(-1) * inv_det
    t = (edge2[None] * qvec).sum(-1) * inv_det
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t >= t_min)
    t_hit = np.where(hit, t, np.inf)
    ids = np.argmin(t_hit, axis=1)  # first index on ties, like the rasteriser
    rows = np.arange(len(ids))
    found = np.isfinite(t_hit[rows, ids])
    bary = np.stack([1 - u[rows, ids] - v[rows, ids], u[rows, ids], v[rows, ids]], -1)
    return np.where(found, ids, -1), np.where(found, t_hit[rows, ids], np.inf), bary


def pixel_rays(camera):
    """Rays through the pixel centres, scaled so that the ray parameter t is the depth z_cam."""
    v, u = np.mgrid[0:camera.height, 0:camera.width].astype(float)
    if isinstance(camera, Camera):
        dirs_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(camera.K).T
        origins = np.broadcast_to(camera.center, dirs_cam.shape)
    else:
        origins = camera.unproject(np.stack([u, v], -1), np.zeros_like(u))
        dirs_cam = np.broadcast_to(np.array([0.0, 0.0, 1.0]), origins.shape)
    return origins.reshape(-1, 3), (dirs_cam @ camera.rotation).reshape(-1, 3)


def random_soup(camera, lateral_scale, seed=0):
    """Few hundred random triangles around the origin, plus ten straddling the camera plane off to the sides of
    the view (one vertex behind the camera, two in front: they are seen as wedges cut by the near plane)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform([-6, -6, -2], [6, 6, 4], (300, 3))
    small = centres[:, None] + rng.normal(0, 1.5, (300, 3, 3))
    side = rng.choice([-1.0, 1.0], (10, 1, 1)) * np.array([1.0, 0.0, 0.0])
    tris_cam = side * rng.uniform(1.5, 3.0, (10, 1, 1)) + rng.uniform(-1.0, 1.0, (10, 3, 3)) * [1.0, 2.0, 0.0]
    tris_cam[:, :, :2] *= lateral_scale
    tris_cam[:, :, 2] = np.array([-2.0, 2.0, 4.0]) + rng.uniform(-0.5, 0.5, (10, 3))
    straddling = (tris_cam - camera.translation) @ camera.rotation
    triangles = np.concatenate([small, straddling])
    return triangles.reshape(-1, 3), np.arange(len(triangles) * 3).reshape(-1, 3)


def box_on_plane(box_lo, box_hi, plane_size):
    """A ground square [0, plane_size]^2 at z = 0 and a closed-top box (5 faces), counter-clockwise outside."""
    (x0, y0, z0), (x1, y1, z1) = box_lo, box_hi
    ground = [[0, 0, 0], [plane_size, 0, 0], [plane_size, plane_size, 0], [0, plane_size, 0]]
    box = [[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0], [x0, y0, z1], [x1, y0, z1], [x1, y1, z1],
           [x0, y1, z1]]
    faces = [[0, 1, 2], [0, 2, 3]] + (np.array([[4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4], [1, 2, 6], [1, 6, 5],
                                                [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]]) + 4).tolist()
    return np.array(ground + box, float), np.array(faces)


# ----------------------------------------------------------------------------------------- reference tests

EYE = np.array([1.0, -11.0, 6.0])


@pytest.mark.parametrize("camera, lateral_scale", [
    (Camera.look_at(EYE, (0, 0, 0), width=64, height=48, fov_x_deg=75), 1.0),
    (OrthoCamera.looking(-EYE, (0, 0, 0), gsd=0.3, width=64, height=48, distance=float(np.linalg.norm(EYE))), 3.0),
], ids=["pinhole", "ortho"])
def test_matches_brute_force_ray_casting(camera, lateral_scale):
    vertices, faces = random_soup(camera, lateral_scale)
    fragments = rasterize(vertices, faces, camera)
    ids_ref, depth_ref, bary_ref = moller_trumbore(*pixel_rays(camera), vertices[faces], DEFAULT_NEAR)
    ids = fragments.triangle_id_hw.numpy().ravel()
    assert 0.3 < ((ids_ref >= 0) & (ids_ref < 300)).mean() < 0.8
    assert (ids_ref >= 300).mean() > 0.05, "the triangles straddling the near plane must be seen"
    agree = ids == ids_ref
    assert agree.mean() >= 0.995
    hit = agree & (ids >= 0)
    assert hit.sum() > 1000
    depth = fragments.depth_hw.numpy().ravel()
    np.testing.assert_allclose(depth[hit], depth_ref[hit], rtol=1e-4)
    assert np.isinf(depth[ids < 0]).all()
    np.testing.assert_allclose(fragments.barycentrics_hw3.numpy().reshape(-1, 3)[hit], bary_ref[hit], atol=1e-4)


def test_closed_form_quad_coverage_and_depth():
    K = [[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]]
    camera = Camera(np.array(K), np.eye(4), 64, 48)  # at the origin, looking along +z
    x0, x1, y0, y1, z = -1.03, 2.03, -0.53, 0.77, 10.0  # u in [21.2, 51.8], v in [18.2, 31.2]
    vertices = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    fragments = rasterize(vertices, faces, camera)
    expected = np.zeros((48, 64), bool)
    expected[19:32, 22:52] = True
    np.testing.assert_array_equal(fragments.mask_hw.numpy(), expected)
    assert fragments.mask_hw.sum() == 13 * 30
    np.testing.assert_array_equal(fragments.depth_hw.numpy()[expected], np.float32(z))
    # the quad is counter-clockwise in the image (y down) = clockwise from the camera: a back face
    culled = rasterize(vertices, faces, camera, cull_backfaces=True)
    assert culled.mask_hw.sum() == 0
    assert rasterize(vertices, faces[:, ::-1], camera, cull_backfaces=True).mask_hw.sum() == 13 * 30


def test_watertight_on_pixel_centres_and_deterministic():
    # a jittered grid whose vertices mostly sit exactly on pixel centres: edges run through many pixel centres
    n = 24
    rng = np.random.default_rng(1)
    x, y = np.meshgrid(np.arange(n + 1, dtype=float), np.arange(n + 1, dtype=float))
    z = rng.uniform(0, 0.2, x.shape)
    x[1:-1:3, 1:-1:3] += 0.5
    vertices = np.column_stack([x.ravel(), y.ravel(), z.ravel()])
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])])
    camera = OrthoCamera.top_down(-0.5, n + 0.5, 1.0, n + 1, n + 1)  # pixel centres on the integer grid
    fragments = rasterize(vertices, faces, camera)
    assert fragments.mask_hw.all()
    again = rasterize(vertices, faces, camera)
    assert torch.equal(fragments.triangle_id_hw, again.triangle_id_hw)
    pinhole = Camera.look_at((n / 2, -8.0, 14.0), (n / 2, n / 2, 0), width=64, height=48, fov_x_deg=40)
    inner = rasterize(vertices, faces, pinhole).mask_hw.numpy()
    rows = np.nonzero(inner.any(1))[0]
    for row in rows[1:-1]:  # every row between the outer silhouette is contiguous: no cracks
        cols = np.nonzero(inner[row])[0]
        assert cols.size == cols[-1] - cols[0] + 1


def test_near_plane_ground_has_no_holes():
    half = 500.0
    vertices = np.array([[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    eye = np.array([3.0, -40.0, 2.0])  # inside the plane's extent, 2 m above it
    camera = Camera.look_at(eye, eye + [0.0, 30.0, -1.5], width=64, height=48, fov_x_deg=100)
    fragments = rasterize(vertices, faces, camera)
    origins, dirs = pixel_rays(camera)
    t = np.where(dirs[:, 2] < 0, -eye[2] / np.minimum(dirs[:, 2], -1e-300), np.inf)
    hits = origins + t[:, None] * dirs
    below = (dirs[:, 2] < 0) & (np.abs(hits[:, :2]).max(1) < half - 1.0)
    assert below.sum() > 1000
    mask = fragments.mask_hw.numpy().ravel()
    assert mask[below].all(), "holes below the horizon"
    assert not mask[dirs[:, 2] > 1e-9].any()
    np.testing.assert_allclose(fragments.depth_hw.numpy().ravel()[below], t[below], rtol=1e-5)


def test_top_down_height_of_box_is_pixel_exact():
    vertices, faces = box_on_plane((5.0, 6.0, 0.0), (9.0, 12.0, 7.0), 20.0)
    camera = OrthoCamera.top_down(-1.0, 21.0, 0.5, 44, 44)
    height = render_height(vertices, faces, camera)
    cols, rows = np.meshgrid(np.arange(44), np.arange(44))
    x, y = -1.0 + (cols + 0.5) * 0.5, 21.0 - (rows + 0.5) * 0.5
    on_plane = (x > 0) & (x < 20) & (y > 0) & (y < 20)
    in_box = (x > 5) & (x < 9) & (y > 6) & (y < 12)
    expected = np.where(in_box, 7.0, np.where(on_plane, 0.0, np.nan)).astype(np.float32)
    np.testing.assert_array_equal(height, expected)
    depth = rasterize(vertices, faces, camera).depth_hw.numpy()
    np.testing.assert_array_equal(10_000.0 - depth[in_box], 7.0)  # height = z_top - depth
    torch_height = render_height_torch(torch.tensor(vertices), faces, camera)
    np.testing.assert_allclose(torch_height.numpy(), expected, atol=1e-6)


def test_supersampled_half_covered_pixel():
    # x in [0, 4.5] seen top-down at 1 m: column 4 spans x in [4, 5] and is half covered
    vertices = np.array([[0, 0, 0], [4.5, 0, 0], [4.5, 8, 0], [0, 8, 0]], float)
    mesh = TexturedMesh(vertices, [[0, 1, 2], [0, 2, 3]], vertex_colors_n3=np.ones((4, 3), np.float32))
    for camera in [OrthoCamera.top_down(0.0, 8.0, 1.0, 8, 8),
                   Camera(np.array([[10.0, 0, -0.5], [0, 10.0, -0.5], [0, 0, 1]]),
                          np.array([[1.0, 0, 0, 0], [0, -1, 0, 8], [0, 0, -1, 10], [0, 0, 0, 1]]), 8, 8)]:
        out = render_textured(mesh, camera, supersample=4)
        assert out.fragments.height == 32 and out.fragments.supersample == 4
        np.testing.assert_allclose(out.alpha_hw[:, 4].numpy(), 0.5)
        np.testing.assert_allclose(out.alpha_hw[:, :4].numpy(), 1.0)
        np.testing.assert_allclose(out.alpha_hw[:, 5:].numpy(), 0.0)
        np.testing.assert_allclose(out.rgb_hw3[:, 4].numpy(), 0.5)
        assert np.isinf(out.depth_hw[:, 5:].numpy()).all()
        np.testing.assert_allclose(out.normal_hw3[:, :5].numpy(), np.broadcast_to([0, 0, 1.0], (8, 5, 3)))


# ------------------------------------------------------------------------------------ differentiable parts


def tiny_scene():
    vertices = torch.tensor([[0.2, 0.1, 0.3], [3.1, 0.4, 0.0], [2.8, 2.9, 0.5], [0.1, 3.2, 0.9]], dtype=torch.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    pinhole = Camera.look_at((1.5, -3.0, 5.0), (1.5, 1.5, 0.0), width=10, height=8, fov_x_deg=50)
    ortho = OrthoCamera.top_down(0.0, 3.5, 0.5, 7, 7)
    return vertices, faces, pinhole, ortho


def test_interpolate_gradients():
    vertices, faces, pinhole, _ = tiny_scene()
    fragments = rasterize(vertices, faces, pinhole)
    attributes = torch.rand(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(a, faces, fragments), (attributes,))
    out = interpolate(attributes, faces, fragments)
    assert (out[~fragments.mask_hw] == 0).all()
    # interpolating the vertex positions lands on the pixel rays: points project back to the pixel centres
    points = interpolate(vertices, faces, fragments)[fragments.mask_hw].numpy()
    uv, depth = pinhole.project(points)
    rows, cols = np.nonzero(fragments.mask_hw.numpy())
    np.testing.assert_allclose(uv, np.column_stack([cols, rows]), atol=1e-4)


@pytest.mark.parametrize("which", ["pinhole", "ortho"])
def test_barycentrics_differentiable_matches_and_has_gradients(which):
    vertices, faces, pinhole, ortho = tiny_scene()
    camera = pinhole if which == "pinhole" else ortho
    fragments = rasterize(vertices, faces, camera, supersample=2)
    bary = barycentrics_differentiable(vertices, faces, fragments, camera)
    np.testing.assert_allclose(bary.numpy(), fragments.barycentrics_hw3.numpy(), atol=1e-5)
    vertices = vertices.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: barycentrics_differentiable(v, faces, fragments, camera), (vertices,))


def test_render_height_torch_gradient_matches_finite_differences():
    vertices, faces, _, ortho = tiny_scene()
    vertices = vertices.clone().requires_grad_(True)
    height = render_height_torch(vertices, faces, ortho)
    valid = torch.isfinite(height)
    weights = torch.rand(height.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (height[valid] * weights[valid]).sum().backward()
    grad = vertices.grad.clone()
    eps = 1e-6
    for k in range(4):
        for axis in range(3):
            plus, minus = vertices.detach().clone(), vertices.detach().clone()
            plus[k, axis] += eps
            minus[k, axis] -= eps
            # same visibility as the unperturbed render (ids are piecewise constant)
            fragments = rasterize(vertices, faces, ortho)
            f_plus = interpolate(plus[:, 2:], faces, fragments,
                                 barycentrics_hw3=barycentrics_differentiable(plus, faces, fragments, ortho))[..., 0]
            f_minus = interpolate(minus[:, 2:], faces, fragments,
                                  barycentrics_hw3=barycentrics_differentiable(minus, faces, fragments, ortho))[..., 0]
            numeric = ((f_plus - f_minus)[valid] * weights[valid]).sum() / (2 * eps)
            assert abs(float(numeric) - float(grad[k, axis])) < 1e-6
    assert grad[:, :2].abs().sum() > 0, "gradients must reach the horizontal coordinates too"


def test_sample_texture_convention_and_gradients():
    texture = torch.arange(24, dtype=torch.float64).reshape(3, 4, 2)  # H=3, W=4, C=2
    i, j = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    centres = torch.stack([(j.double() + 0.5) / 4, (i.double() + 0.5) / 3], -1)
    torch.testing.assert_close(sample_texture(texture, centres), texture)
    corner = sample_texture(texture, torch.zeros(1, 1, 2, dtype=torch.float64))
    torch.testing.assert_close(corner[0, 0], texture[0, 0])  # clamp to the edge texel
    between = sample_texture(texture, torch.tensor([[[1.0 / 4, 0.5 / 3]]], dtype=torch.float64))
    torch.testing.assert_close(between[0, 0], (texture[0, 0] + texture[0, 1]) / 2)
    texture = texture.clone().requires_grad_(True)
    uv = torch.rand(5, 6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert torch.autograd.gradcheck(lambda t: sample_texture(t, uv), (texture,))


def test_render_textured_texture_gradient_and_downsample():
    vertices = np.array([[0, 0, 0], [4, 0, 0], [4, 4, 0], [0, 4, 0]], float)
    uvs = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)  # north edge (y = 4) at the top of the texture
    texture_u8 = np.zeros((2, 2, 3), np.uint8)
    texture_u8[0, 0] = 255  # top-left texel: the north-west quarter
    mesh = TexturedMesh(vertices, [[0, 1, 2], [0, 2, 3]], uvs_n2=uvs, texture_hw3=texture_u8)
    camera = OrthoCamera.top_down(0.0, 4.0, 1.0, 4, 4)
    out = render_textured(mesh, camera, background=(0.0, 0.0, 1.0))
    assert out.rgb_hw3[0, 0, 0] == 1.0 and out.rgb_hw3[3, 3, 0] == 0.0
    texture = torch.full((2, 2, 3), 0.5, requires_grad=True)
    render_textured(mesh, camera, texture=texture).rgb_hw3.sum().backward()
    assert texture.grad.sum() == pytest.approx(4 * 4 * 3)
    image = torch.arange(16.0).reshape(4, 4)
    torch.testing.assert_close(downsample(image, 2), torch.tensor([[2.5, 4.5], [10.5, 12.5]]))


def test_bad_inputs_raise_config_errors():
    vertices, faces, pinhole, _ = tiny_scene()
    with pytest.raises(ConfigError):
        rasterize(vertices, np.array([[0, 1, 7]]), pinhole)
    with pytest.raises(ConfigError):
        rasterize(vertices, faces, pinhole, supersample=0)
    with pytest.raises(ConfigError):
        rasterize(vertices, faces, "not a camera")
    with pytest.raises(ConfigError):
        rasterize(np.full((3, 3), np.nan), [[0, 1, 2]], pinhole)
    with pytest.raises(ConfigError):
        downsample(torch.zeros(5, 4), 2)


def test_empty_mesh_renders_background():
    camera = OrthoCamera.top_down(0.0, 4.0, 1.0, 4, 4)
    mesh = TexturedMesh(np.zeros((0, 3)), np.zeros((0, 3), int))
    out = render_textured(mesh, camera, background=(0.2, 0.3, 0.4), supersample=2)
    assert out.alpha_hw.sum() == 0 and np.isinf(out.depth_hw.numpy()).all()
    torch.testing.assert_close(out.rgb_hw3[0, 0], torch.tensor([0.2, 0.3, 0.4]))
    assert np.isnan(render_height(mesh.vertices_n3, mesh.faces_f3, camera)).all()
