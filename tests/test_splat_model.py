"""GaussianModel, optimizers, initialisation from points and meshes (earthsynth.splat.model / init).

`dense_rasterize` below is a small dense stand-in for earthsynth.render.splat.rasterize_gaussians (gsplat's
conventions: quats wxyz, linear scales, activated opacities, SH up to degree 1, meta means2d / radii); the other
splat test files import it from here.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from earthsynth.errors import ConfigError
from earthsynth.geo.pinhole import Camera
from earthsynth.io.mesh import TexturedMesh
from earthsynth.io.splats import SH_C0, read_splats_ply, sh_dc_to_rgb, write_splats_ply
from earthsynth.splat import (
    AppearanceModel, DensifyPruneStrategy, GaussianModel, SplatLRConfig, init_from_points, means_lr_at,
    points_from_mesh, update_means_lr,
)
from earthsynth.splat.strategy import quat_to_rotmat

torch.set_num_threads(1)
SH_C1 = 0.4886025119029199   # Inria / gsplat degree-1 SH constant


# ---------------------------------------------------------------------------------------------------- stand-in
def eval_sh_colors(sh, means_n3, campos_c3, degree, clamp=True):
    """Colours [C, N, 3] = clamp(0.5 + sum_k Y_k(dir) sh_k, 0) with dir = mean - camera (Inria's eval_sh)."""
    c = len(campos_c3)
    sh = sh[None].expand(c, *sh.shape) if sh.dim() == 3 else sh
    dirs = F.normalize(means_n3[None] - campos_c3[:, None], dim=-1)
    result = SH_C0 * sh[..., 0, :]
    if degree >= 1:
        x, y, z = dirs[..., 0:1], dirs[..., 1:2], dirs[..., 2:3]
        result = result - SH_C1 * y * sh[..., 1, :] + SH_C1 * z * sh[..., 2, :] - SH_C1 * x * sh[..., 3, :]
    return torch.clamp_min(result + 0.5, 0.0) if clamp else result + 0.5


def dense_rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, sh_degree=None,
                    backgrounds_c3=None, render_mode="RGB", **_):
    """Every Gaussian evaluated at every pixel, depth sorted, alpha composited (EWA splatting, blur 0.3)."""
    assert render_mode == "RGB" and (sh_degree is None or sh_degree <= 1)
    rot_c33, t_c3 = viewmats[:, :3, :3], viewmats[:, :3, 3]
    campos = -(rot_c33.transpose(1, 2) @ t_c3[..., None])[..., 0]
    if sh_degree is not None:
        colors = eval_sh_colors(colors, means, campos, sh_degree)
    elif colors.dim() == 2:
        colors = colors[None].expand(len(viewmats), -1, -1)
    pc = means[None] @ rot_c33.transpose(1, 2) + t_c3[:, None]                       # [C, N, 3]
    x, y, z = pc.unbind(-1)
    fx, fy, cx, cy = (Ks[:, 0, 0, None], Ks[:, 1, 1, None], Ks[:, 0, 2, None], Ks[:, 1, 2, None])
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    m = quat_to_rotmat(F.normalize(quats, dim=-1)) * scales[:, None, :]
    cov_c = rot_c33[:, None] @ (m @ m.transpose(1, 2))[None] @ rot_c33.transpose(1, 2)[:, None]
    zeros = torch.zeros_like(z)
    jac = torch.stack([torch.stack([fx / z, zeros, -fx * x / z ** 2], -1),
                       torch.stack([zeros, fy / z, -fy * y / z ** 2], -1)], dim=-2)      # [C, N, 2, 3]
    cov2d = jac @ cov_c @ jac.transpose(-1, -2) + 0.3 * torch.eye(2)
    conic = torch.linalg.inv(cov2d)
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    d = torch.stack([u.reshape(-1), v.reshape(-1)], -1)[None, None] - means2d[:, :, None]   # [C, N, P, 2]
    power = -0.5 * torch.einsum("cnpi,cnij,cnpj->cnp", d, conic, d)
    alpha = (opacities[None, :, None] * torch.exp(power)).clamp(max=0.999) * (z > 0.01)[..., None]
    order = torch.argsort(z, dim=1)
    alpha = torch.gather(alpha, 1, order[..., None].expand_as(alpha))
    colors = torch.gather(colors, 1, order[..., None].expand_as(colors))
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), dim=1)
    weights = alpha * transmittance
    image = torch.einsum("cnp,cnd->cpd", weights, colors)
    acc = weights.sum(1)[..., None]
    if backgrounds_c3 is not None:
        image = image + (1 - acc) * backgrounds_c3[:, None]
    radii = (3 * torch.linalg.eigvalsh(cov2d)[..., -1].sqrt()).ceil().int() * (z > 0.01)
    c = len(viewmats)
    meta = {"means2d": means2d, "radii": radii.detach(), "width": width, "height": height, "n_cameras": c}
    return image.reshape(c, height, width, -1), acc.reshape(c, height, width, 1), meta


def random_model(n=12, degree=1, seed=0) -> GaussianModel:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return GaussianModel({
        "means": torch.rand(n, 3, generator=g) * 2 - 1, "quats": torch.randn(n, 4, generator=g),
        "scales": torch.log(0.05 + 0.1 * torch.rand(n, 3, generator=g)),
        "opacities": torch.randn(n, generator=g), "sh0": torch.randn(n, 1, 3, generator=g) * 0.5,
        "shN": torch.randn(n, k - 1, 3, generator=g) * 0.2})


def camera(eye=(0.3, -4.0, 3.0), width=16, height=12) -> Camera:
    return Camera.look_at(eye, (0.0, 0.0, 0.0), width=width, height=height, fov_x_deg=50.0)


# ---------------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize("degree", [0, 1, 3])
def test_ply_round_trip_is_bit_exact(tmp_path, degree):
    model = random_model(degree=degree)
    path = write_splats_ply(tmp_path / "m.ply", model.to_splats())
    back = GaussianModel.from_splats(read_splats_ply(path))
    assert back.sh_degree == degree and set(back.params) == set(model.params)
    for key in model.params:
        a, b = model.params[key].detach(), back.params[key].detach()
        assert a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32)), key


def test_state_dict_round_trip_with_extra_tensor():
    model = random_model()
    model.add_per_gaussian("gaussian_embeddings", torch.arange(12 * 4, dtype=torch.float32).reshape(12, 4))
    back = GaussianModel.from_state_dict(model.state_dict())
    assert all(torch.equal(back.params[k], model.params[k]) for k in model.params)
    with pytest.raises(ConfigError):
        model.add_per_gaussian("extra", torch.zeros(11, 2))


def test_activations_and_views():
    model = random_model(degree=1)
    raw_scales = model.params["scales"].detach().numpy().astype(np.float64)
    raw_opa = model.params["opacities"].detach().numpy().astype(np.float64)
    np.testing.assert_allclose(model.scales_activated.detach().numpy(), np.exp(raw_scales), rtol=1e-6)
    np.testing.assert_allclose(model.opacities_activated.detach().numpy(), 1 / (1 + np.exp(-raw_opa)), rtol=1e-6)
    assert model.sh.shape == (12, 4, 3) and torch.equal(model.sh[:, 0], model.params["sh0"][:, 0])
    assert model.num == 12 and model.sh_degree == 1
    with pytest.raises(ConfigError):
        GaussianModel({**{k: v.detach() for k, v in model.params.items()}, "shN": torch.zeros(12, 2, 3)})


def test_optimizers_one_adam_per_parameter_with_paper_lrs():
    model = random_model()
    lrs = SplatLRConfig()
    opts = model.create_optimizers(lrs, scene_scale=50.0)
    assert set(opts) == set(model.params)
    expected = {"means": 1.6e-4 * 50.0, "quats": 1e-3, "scales": 1e-3, "opacities": 5e-2, "sh0": 2.5e-3,
                "shN": 2.5e-3 / 20}
    for key, opt in opts.items():
        assert len(opt.param_groups) == 1 and opt.param_groups[0]["params"][0] is model.params[key]
        assert opt.param_groups[0]["lr"] == pytest.approx(expected[key], rel=1e-12)
    # Inria's log-linear decay: geometric mean half way, final value at the end and after
    assert means_lr_at(15_000, lrs, 2.0) == pytest.approx(2.0 * math.sqrt(1.6e-4 * 1.6e-6), rel=1e-9)
    assert means_lr_at(30_000, lrs, 2.0) == pytest.approx(2.0 * 1.6e-6) == means_lr_at(60_000, lrs, 2.0)
    assert update_means_lr(opts, 30_000, lrs, scene_scale=50.0) == pytest.approx(8e-5)
    assert opts["means"].param_groups[0]["lr"] == pytest.approx(8e-5)
    model.add_per_gaussian("unknown", torch.zeros(12, 2))
    with pytest.raises(ConfigError, match="unknown"):
        model.create_optimizers(lrs)


# ---------------------------------------------------------------------------------------------------- init
def test_init_from_points_matches_brute_force_knn():
    rng = np.random.default_rng(3)
    points = rng.uniform(-5, 5, (150, 3))
    colors = rng.integers(0, 256, (150, 3), dtype=np.uint8)
    model = init_from_points(points, colors, sh_degree=1)
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    nearest3 = np.sort(dist, axis=1)[:, :3]
    expected = np.log(np.sqrt((nearest3 ** 2).mean(axis=1)))
    scales = model.params["scales"].detach().numpy()
    np.testing.assert_allclose(scales, np.repeat(expected[:, None], 3, 1), atol=2e-6)
    np.testing.assert_allclose(sh_dc_to_rgb(model.params["sh0"].detach().numpy()[:, 0]), colors / 255.0, atol=1e-6)
    assert torch.equal(model.quats, torch.tensor([[1.0, 0, 0, 0]]).expand(150, 4))
    np.testing.assert_allclose(model.opacities_activated.detach().numpy(), 0.1, rtol=1e-6)
    assert model.sh_degree == 1 and not model.params["shN"].any()


def test_init_subsample_is_seeded_and_keeps_order():
    points = np.random.default_rng(0).normal(size=(300, 3))
    a = init_from_points(points, max_points=40, seed=7).means.detach().numpy()
    b = init_from_points(points, max_points=40, seed=7).means.detach().numpy()
    c = init_from_points(points, max_points=40, seed=8).means.detach().numpy()
    assert a.shape == (40, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    rows = [int(np.flatnonzero((points.astype(np.float32) == p).all(1))[0]) for p in a]
    assert rows == sorted(rows)
    with pytest.raises(ConfigError):
        init_from_points(points, np.full((300, 3), 2.0))      # float colours out of [0, 1]


def _two_quads_mesh():
    """Quad A: [0,1]x[0,1], quad B: [2,5]x[0,1] (3x the area); UVs put A in the red left half of the texture and
    B in the blue right half, well inside so that bilinear lookups see one colour."""
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0], [5, 0, 0], [5, 1, 0], [2, 1, 0]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    uvs = np.array([[.1, .2], [.3, .2], [.3, .8], [.1, .8], [.6, .2], [.9, .2], [.9, .8], [.6, .8]], np.float32)
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:, :4, 0] = 255
    texture[:, 4:, 2] = 255
    return TexturedMesh(v, faces, uvs_n2=uvs, texture_hw3=texture)


def test_points_from_mesh_area_weighting_and_texture_colours():
    count = 4000
    points, colors = points_from_mesh(_two_quads_mesh(), count, seed=1)
    in_a = points[:, 0] <= 1.0
    fraction = in_a.mean()
    assert abs(fraction - 0.25) < 4 * math.sqrt(0.25 * 0.75 / count)       # area 1 of 4
    assert np.all(points[:, 2] == 0) and np.all((points[:, 1] >= 0) & (points[:, 1] <= 1))
    assert np.all((points[~in_a, 0] >= 2) & (points[~in_a, 0] <= 5))
    np.testing.assert_allclose(colors[in_a], [[1, 0, 0]] * int(in_a.sum()), atol=1e-6)
    np.testing.assert_allclose(colors[~in_a], [[0, 0, 1]] * int((~in_a).sum()), atol=1e-6)
    again, _ = points_from_mesh(_two_quads_mesh(), count, seed=1)
    assert np.array_equal(points, again)


def test_points_from_mesh_vertex_colours_are_barycentric():
    v = np.array([[0, 0, 0], [2, 0, 0], [0, 1, 1]], float)
    colour_of = lambda p: np.stack([0.1 + 0.4 * p[:, 0], 0.2 + 0.3 * p[:, 1], 0.9 - 0.5 * p[:, 2]], 1)  # affine
    mesh = TexturedMesh(v, [[0, 1, 2]], vertex_colors_n3=colour_of(v).astype(np.float32))
    points, colors = points_from_mesh(mesh, 500, seed=0)
    np.testing.assert_allclose(colors, colour_of(points), atol=1e-6)


# ---------------------------------------------------------------------------------------------------- render
def test_render_passes_gsplat_conventions_to_the_rasterizer():
    model, cam, seen = random_model(), camera(), {}

    def spy(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        return "ok"

    assert model.render([cam, cam], rasterizer=spy, sh_degree=0) == "ok"
    means, quats, scales, opacities, colors, viewmats, ks, width, height = seen["args"]
    assert torch.equal(scales, torch.exp(model.params["scales"])) and torch.equal(quats, model.params["quats"])
    assert torch.equal(opacities, torch.sigmoid(model.params["opacities"])) and colors.shape == (12, 4, 3)
    assert viewmats.shape == (2, 4, 4) and torch.allclose(viewmats[0].double(), torch.from_numpy(cam.viewmat))
    assert (width, height) == (16, 12) and seen["kwargs"]["sh_degree"] == 0
    with pytest.raises(ConfigError):
        model.render([cam, camera(width=8)], rasterizer=spy)


def test_standin_means2d_match_camera_projection():
    model, cam = random_model(), camera()
    _, _, meta = model.render(cam, rasterizer=dense_rasterize)
    uv, _ = cam.project(model.means.detach().numpy().astype(float))
    np.testing.assert_allclose(meta["means2d"][0].detach().numpy(), uv, atol=1e-3)


def test_train_steps_with_appearance_and_densification():
    """Render -> loss -> backward -> strategy -> Adam, a few times: shapes and optimizers stay consistent."""
    model = random_model(n=10)
    appearance = AppearanceModel(num_images=2)
    appearance.attach(model)
    opts = {**model.create_optimizers(), **appearance.create_optimizers()}
    strategy = DensifyPruneStrategy(grow_grad2d=1e-12, refine_start_iter=0, refine_every=2, reset_every=1000)
    state = strategy.initialize_state(scene_scale=1.0)
    target = torch.full((1, 12, 16, 3), 0.3)
    counts = []
    for step in range(1, 5):
        image, _, meta = model.render(camera(), appearance=appearance, image_ids=[step % 2],
                                      rasterizer=dense_rasterize)
        strategy.step_pre_backward(model.params, opts, state, step, meta)
        (image - target).abs().mean().backward()
        counts.append(strategy.step_post_backward(model.params, opts, state, step, meta))
        for opt in opts.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        strategy.check_sanity(model.params, {k: opts[k] for k in model.params})
    grown = counts[1]["duplicated"] + counts[1]["split"]
    assert grown > 0 and model.num == 10 + grown + counts[3]["duplicated"] + counts[3]["split"] - \
        counts[1]["pruned"] - counts[3]["pruned"]
    assert model.params["gaussian_embeddings"].shape == (model.num, 24)


def test_densification_gradient_flows_through_the_real_rasterizer():
    splat = pytest.importorskip("earthsynth.render.splat", reason="earthsynth.render.splat not written yet")
    model = random_model(n=20)
    opts = model.create_optimizers()
    strategy = DensifyPruneStrategy(refine_start_iter=0, refine_every=2, grow_grad2d=1e-9, reset_every=1000)
    state = strategy.initialize_state()
    cam = camera(width=32, height=24)
    image, _, meta = model.render(cam, rasterizer=splat.rasterize_gaussians)
    strategy.step_pre_backward(model.params, opts, state, 1, meta)
    image.mean().backward()
    strategy.step_post_backward(model.params, opts, state, 1, meta)
    visible = meta["radii"][0] > 0
    assert visible.any() and (state["grad2d"][visible] > 0).all() and torch.equal(state["count"], visible.float())
    image, _, meta = model.render(cam, rasterizer=splat.rasterize_gaussians)
    strategy.step_pre_backward(model.params, opts, state, 2, meta)
    image.mean().backward()
    counts = strategy.step_post_backward(model.params, opts, state, 2, meta)
    assert counts["duplicated"] + counts["split"] > 0
    strategy.check_sanity(model.params, opts)
