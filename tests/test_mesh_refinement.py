"""Iterative texture refinement (earthsynth.mesh.refinement): with a refiner that changes nothing, the re-fit must
leave the texture where it was (the renders are already its optimum); with one that changes the views, the
texture must follow."""

import numpy as np
import pytest
import torch

from earthsynth.io.mesh import TexturedMesh
from earthsynth.mesh.refinement import RefinementConfig, refine_texture
from earthsynth.mesh.texture import TextureConfig
from earthsynth.mesh.uav_path import UAVPathConfig
from conftest import HalfwayToGrey

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
SIZE_M = 40.0


class Identity:
    name = "identity"

    def refine(self, images_bhw3, *, seed=0):
        return images_bhw3.clone()


@pytest.fixture(scope="module")
def textured_plane() -> TexturedMesh:
    """A 40 m ground square (a 4 x 4 grid of quads) with a 96 px texture of blocks and fine stripes."""
    n = 5
    xs = np.linspace(-SIZE_M / 2, SIZE_M / 2, n)
    gx, gy = np.meshgrid(xs, xs)
    vertices = np.c_[gx.ravel(), gy.ravel(), np.zeros(n * n)]
    uvs = np.c_[(gx.ravel() + SIZE_M / 2) / SIZE_M, (SIZE_M / 2 - gy.ravel()) / SIZE_M].astype(np.float32)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [(a, b, d), (a, d, c)]
    rng = np.random.default_rng(0)
    blocks = np.kron(rng.uniform(0.2, 0.8, (8, 8, 3)), np.ones((12, 12, 1)))
    stripes = 0.15 * np.sin(np.arange(96) * 1.3)[None, :, None]
    texture = np.clip(blocks + stripes, 0, 1)
    return TexturedMesh(vertices, np.asarray(faces, np.int64), uvs, (texture * 255).round().astype(np.uint8))


def _refine(mesh, refiner, **changes):
    changes = {"texture_steps": 20, **changes}
    config = RefinementConfig(iterations=1,
                              uav=UAVPathConfig(grid=(2, 2), altitude_m=30.0, size_px=48), **changes)
    result = refine_texture(mesh, refiner, ground_z=0.0, bounds_xy=(-SIZE_M / 2, -SIZE_M / 2, SIZE_M / 2, SIZE_M / 2),
                            texture_config=TextureConfig(), config=config)
    before = mesh.texture_hw3.astype(np.float32) / 255.0
    return np.abs(result.mesh.texture_hw3.astype(np.float32) / 255.0 - before), result


def test_identity_refiner_is_a_fixed_point(textured_plane):
    change, result = _refine(textured_plane, Identity())
    report = result.iterations[0]["loss"]["report"]
    assert report["psnr_init"] > 50.0                    # the re-fit starts at its optimum ...
    assert report["psnr_final"] > 40.0, report           # ... and stays near it
    assert change.mean() < 0.004, change.mean()
    # what this guards against: the texture stage's constant lr 0.01 jitters every texel around the optimum
    jittered, _ = _refine(textured_plane, Identity(), lr_schedule="constant", texture_lr=0.01)
    assert jittered.mean() > 2 * change.mean(), (change.mean(), jittered.mean())


def test_refined_texture_follows_the_refiner(textured_plane):
    # lr 0.003 with a cosine decay moves a texel by at most ~0.1 in 60 steps: a good part of the 0.18 asked
    # (the default 0.0015 moves it half as far)
    change, result = _refine(textured_plane, HalfwayToGrey(), texture_steps=60, texture_lr=0.003)
    seen = change > 0       # texels the UAV views saw moved towards grey
    before = textured_plane.texture_hw3.astype(np.float32)[seen] / 255.0
    after = result.mesh.texture_hw3.astype(np.float32)[seen] / 255.0
    assert np.abs(after - 0.5).mean() < 0.8 * np.abs(before - 0.5).mean(), (before.mean(), after.mean())
    assert torch.isfinite(torch.from_numpy(after)).all()
