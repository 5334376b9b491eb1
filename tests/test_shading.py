"""Sun direction, shadow maps, Lambert shading and per-date appearance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.geo.pinhole import Camera, OrthoCamera
from earthsynth.io.mesh import TexturedMesh
from earthsynth.render.mesh import render_textured
from earthsynth.render.shading import (
    Appearance,
    lambert,
    random_appearance,
    shade_view,
    shadow_lit_mask,
    sun_direction,
)


def box_on_plane(box_lo, box_hi, plane_size):
    (x0, y0, z0), (x1, y1, z1) = box_lo, box_hi
    ground = [[0, 0, 0], [plane_size, 0, 0], [plane_size, plane_size, 0], [0, plane_size, 0]]
    box = [[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0], [x0, y0, z1], [x1, y0, z1], [x1, y1, z1],
           [x0, y1, z1]]
    faces = [[0, 1, 2], [0, 2, 3]] + (np.array([[4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4], [1, 2, 6], [1, 6, 5],
                                                [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]]) + 4).tolist()
    return np.array(ground + box, float), np.array(faces)


def test_sun_direction_closed_form():
    np.testing.assert_allclose(sun_direction(90, 123), [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(sun_direction(0, 0), [0, 1, 0], atol=1e-12)   # north
    np.testing.assert_allclose(sun_direction(0, 90), [1, 0, 0], atol=1e-12)  # east
    h = np.sqrt(0.5)
    np.testing.assert_allclose(sun_direction(45, 180), [0, -h, h], atol=1e-12)
    np.testing.assert_allclose(sun_direction(30, 270), [-np.cos(np.pi / 6), 0, 0.5], atol=1e-12)


@pytest.mark.parametrize("azimuth", [90.0, 0.0])
def test_box_shadow_length_equals_height_at_45_degrees(azimuth):
    height_m, gsd = 4.0, 0.25
    vertices, faces = box_on_plane((10.0, 10.0, 0.0), (14.0, 14.0, height_m), 30.0)
    camera = OrthoCamera.top_down(0.0, 30.0, gsd, 120, 120)
    render = render_textured(TexturedMesh(vertices, faces), camera)
    valid = render.fragments.mask_hw
    sun = sun_direction(45.0, azimuth)
    lit = shadow_lit_mask(vertices, faces, render.points_hw3, valid, sun, gsd_m=0.1, bias_m=0.02).numpy()
    assert valid.all()
    x_hw = render.points_hw3[..., 0].numpy()
    y_hw = render.points_hw3[..., 1].numpy()
    on_ground = render.points_hw3[..., 2].numpy() < 1e-3
    if azimuth == 90.0:  # sun in the east: the shadow falls west of the box, along row 70 (y = 12.375)
        line = on_ground[70] & (x_hw[70] < 10)
        shadow_px = (~lit[70] & line).sum()
        west_of_shadow = line & (x_hw[70] < 10 - height_m - 2 * gsd)
        beside = on_ground & ((y_hw > 14.5) | (y_hw < 9.5))
    else:  # sun in the north: the shadow falls south, along y (rows increase southwards)
        line = on_ground[:, 48] & (y_hw[:, 48] < 10)
        shadow_px = (~lit[:, 48] & line).sum()
        west_of_shadow = line & (y_hw[:, 48] < 10 - height_m - 2 * gsd)
        beside = on_ground & ((x_hw > 14.5) | (x_hw < 9.5))
    assert abs(shadow_px - height_m / gsd) <= 1, shadow_px
    lit_line = lit[70] if azimuth == 90.0 else lit[:, 48]
    assert lit_line[west_of_shadow].all()
    assert lit[beside].all(), "no shadow acne on the sunlit ground"
    roof = render.points_hw3[..., 2].numpy() > height_m - 1e-3
    assert lit[roof].all()


def test_lambert():
    albedo = torch.full((2, 2, 3), 0.5)
    normals = torch.tensor([0.0, 0.0, 1.0]).expand(2, 2, 3)
    lit = torch.tensor([[True, False], [True, True]])
    sun = sun_direction(30.0, 0.0)
    out = lambert(albedo, normals, sun, lit, ambient=0.3, sun_strength=0.7)
    torch.testing.assert_close(out[0, 0], torch.full((3,), 0.5 * (0.3 + 0.7 * 0.5)))
    torch.testing.assert_close(out[0, 1], torch.full((3,), 0.5 * 0.3))
    away = lambert(albedo, -normals, sun, lit)
    torch.testing.assert_close(away, albedo * 0.3)


def test_appearance_apply_and_determinism():
    image = np.full((2, 3, 3), 0.5, np.float32)
    np.testing.assert_allclose(Appearance().apply(image), image)
    look = Appearance(exposure=1.2, white_balance=(1.1, 1.0, 0.9), haze_color=(1.0, 1.0, 1.0), haze_amount=0.25)
    expected = 0.5 * 1.2 * np.array([1.1, 1.0, 0.9]) * 0.75 + 0.25
    np.testing.assert_allclose(look.apply(image)[0, 0], expected, rtol=1e-6)
    torch.testing.assert_close(look.apply(torch.from_numpy(image)), torch.from_numpy(look.apply(image)))
    a = random_appearance(np.random.default_rng(7))
    b = random_appearance(np.random.default_rng(7))
    c = random_appearance(np.random.default_rng(8))
    assert a == b and a != c
    draws = [random_appearance(np.random.default_rng(seed)) for seed in range(50)]
    assert all(0.75 <= d.exposure <= 1.3 and 0 <= d.haze_amount <= 0.3 for d in draws)
    with pytest.raises(ConfigError):
        Appearance(exposure=0.0)
    with pytest.raises(ConfigError):
        Appearance(haze_amount=1.5)


def test_shade_view_shadow_is_darker_and_texture_gets_gradients():
    vertices, faces = box_on_plane((10.0, 10.0, 0.0), (14.0, 14.0, 4.0), 30.0)
    uvs = (vertices[:, :2] / 30.0).astype(np.float32)
    mesh = TexturedMesh(vertices, faces, uvs_n2=uvs, texture_hw3=np.full((4, 4, 3), 200, np.uint8))
    camera = Camera.look_at((15.0, -20.0, 40.0), (15.0, 15.0, 0.0), width=48, height=40, fov_x_deg=60)
    texture = torch.full((4, 4, 3), 0.8, requires_grad=True)
    view = shade_view(mesh, camera, sun_direction(45.0, 90.0), supersample=2, shadow_gsd_m=0.1,
                      appearance=Appearance(exposure=1.1), texture=texture)
    assert view.rgb_hw3.shape == (40, 48, 3) and view.lit_hw.shape == (80, 96)
    assert 0.0 <= float(view.rgb_hw3.detach().min()) and float(view.rgb_hw3.detach().max()) <= 1.0
    shaded = view.lit_hw.numpy() == 0
    assert shaded.sum() > 20
    view.rgb_hw3.sum().backward()
    assert texture.grad.abs().sum() > 0
    again = shade_view(mesh, camera, sun_direction(45.0, 90.0), supersample=2, shadow_gsd_m=0.1,
                       appearance=Appearance(exposure=1.1))
    assert torch.equal(again.lit_hw, view.lit_hw)
