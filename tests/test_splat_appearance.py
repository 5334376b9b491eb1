"""AppearanceModel (earthsynth.splat.appearance): identity at init, fused export renders like the modulated model,
fixed IDU embedding, per-Gaussian embeddings that follow densification."""

import pytest
import torch
from test_splat_model import camera, dense_rasterize, eval_sh_colors, random_model

from earthsynth.errors import ConfigError
from earthsynth.io.splats import read_splats_ply, write_splats_ply
from earthsynth.splat import (
    GAUSSIAN_EMBEDDINGS, AppearanceConfig, AppearanceModel, DensifyPruneStrategy, GaussianModel, SplatLRConfig,
)

torch.set_num_threads(1)


def model_with_appearance(degree=1, n=12, num_images=3, perturb=True):
    model = random_model(n=n, degree=degree)
    appearance = AppearanceModel(num_images, seed=1)
    appearance.attach(model, seed=2)
    if perturb:     # leave the identity: a real, strong affine with per-Gaussian and per-image variation
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            last = appearance.mlp[-1]
            last.weight.copy_(torch.randn(last.weight.shape, generator=g) * 0.3)
            last.bias.copy_(torch.tensor([0.1, -0.2, 0.05, 0.3, -0.4, 0.2]))
            appearance.embeddings.weight.mul_(100.0)
            model.params[GAUSSIAN_EMBEDDINGS].mul_(100.0)
    return model, appearance


def test_identity_at_init():
    model, appearance = model_with_appearance(perturb=False)
    gamma, beta = appearance.affine(model, appearance.image_embeddings([0, 2]))
    assert torch.equal(gamma, torch.ones(2, 12, 3)) and torch.equal(beta, torch.zeros(2, 12, 3))
    assert torch.equal(appearance.modulate_sh(model, appearance.image_embeddings([1]))[0], model.sh)
    plain, _, _ = model.render(camera(), rasterizer=dense_rasterize)
    modulated, _, _ = model.render(camera(), appearance=appearance, image_ids=[1], rasterizer=dense_rasterize)
    assert torch.equal(plain, modulated)


@pytest.mark.parametrize("degree", [0, 1])
def test_fused_ply_renders_like_the_modulated_model(tmp_path, degree):
    """The fused static PLY, the modulated model and the paper's formula clamp(gamma c(r) + beta, 0) applied to
    the view-dependent colour agree. Exact because c(r) is linear in the SH coefficients and (beta, gamma) do not
    depend on r: scaling every coefficient by gamma and shifting the DC is the same affine (module docstring)."""
    model, appearance = model_with_appearance(degree=degree)
    cam = camera()
    image_id = 2
    embedding = appearance.embeddings.weight[image_id].detach()
    gamma, beta = appearance.affine(model, embedding[None])
    assert (gamma - 1).abs().max() > 0.3 and beta.abs().max() > 0.2           # far from the identity
    with torch.no_grad():
        modulated, _, _ = model.render(cam, appearance=appearance, image_ids=[image_id], rasterizer=dense_rasterize)
        path = write_splats_ply(tmp_path / "fused.ply", appearance.fuse(model, embedding).to_splats())
        fused = GaussianModel.from_splats(read_splats_ply(path))
        static, _, _ = fused.render(cam, rasterizer=dense_rasterize)
        campos = torch.tensor(cam.center, dtype=torch.float32)[None]
        colour = eval_sh_colors(model.sh, model.means, campos, degree, clamp=False)
        reference_colors = torch.clamp_min(gamma * colour + beta, 0.0)[0]       # [N, 3], the paper's formula
        reference, _, _ = dense_rasterize(model.means, model.quats, model.scales_activated,
                                          model.opacities_activated, reference_colors, *_camera_args(cam))
    assert fused.sh_degree == degree and GAUSSIAN_EMBEDDINGS not in fused.params
    assert (modulated - static).abs().max() < 1e-5
    assert (modulated - reference).abs().max() < 1e-5
    assert (modulated - model.render(cam, rasterizer=dense_rasterize)[0]).abs().max() > 0.05   # it did change


def _camera_args(cam):
    return (torch.tensor(cam.viewmat, dtype=torch.float32)[None], torch.tensor(cam.K, dtype=torch.float32)[None],
            cam.width, cam.height)


def test_batched_cameras_use_their_own_embeddings():
    model, appearance = model_with_appearance()
    cams = [camera(), camera(eye=(2.0, -3.0, 3.5))]
    with torch.no_grad():
        both, _, _ = model.render(cams, appearance=appearance, image_ids=[0, 2], rasterizer=dense_rasterize)
        first, _, _ = model.render(cams[0], appearance=appearance, image_ids=[0], rasterizer=dense_rasterize)
        second, _, _ = model.render(cams[1], appearance=appearance, image_ids=[2], rasterizer=dense_rasterize)
    assert torch.allclose(both[0], first[0], atol=1e-6) and torch.allclose(both[1], second[0], atol=1e-6)


def test_fixed_embedding_for_idu():
    model, appearance = model_with_appearance()
    chosen = appearance.fix_embedding(seed=4)
    assert appearance.is_fixed and 0 <= chosen < 3
    expected = appearance.embeddings.weight[chosen].detach().clone()
    assert torch.equal(appearance.image_embeddings([0, 1, 2]), expected.expand(3, -1))
    assert torch.equal(appearance.image_embeddings(None, n_cameras=2), expected.expand(2, -1))
    with torch.no_grad():
        appearance.embeddings.weight.add_(1.0)          # training the table no longer moves the fixed embedding
    assert torch.equal(appearance.image_embeddings([1])[0], expected)
    fused = appearance.fuse(model)                        # default: the fixed embedding
    assert torch.allclose(fused.sh, appearance.modulate_sh(model, expected[None])[0])
    restored = AppearanceModel(3, seed=9)
    restored.load_state_dict(appearance.state_dict())
    assert restored.is_fixed and torch.equal(restored.fixed_embedding, expected)
    appearance.release_embedding()
    assert not appearance.is_fixed
    with pytest.raises(ConfigError):
        appearance.image_embeddings(None)
    with pytest.raises(ConfigError):
        appearance.fix_embedding(3)


def test_per_gaussian_embeddings_follow_densification():
    model, appearance = model_with_appearance(n=8)
    opts = model.create_optimizers()
    with torch.no_grad():   # half the Gaussians tiny (cloned), half large (split), one transparent (pruned)
        model.params["scales"][:4] = -6.0
        model.params["scales"][4:] = -2.0
        model.params["opacities"][7] = -8.0
    parent_embeddings = model.params[GAUSSIAN_EMBEDDINGS].detach().clone()
    gamma0, beta0 = appearance.affine(model, appearance.image_embeddings([1]))
    means2d = torch.zeros(1, 8, 2, requires_grad=True)
    means2d.grad = torch.full((1, 8, 2), 1e-3)
    info = {"means2d": means2d, "radii": torch.ones(1, 8), "width": 64, "height": 64, "n_cameras": 1}
    strategy = DensifyPruneStrategy(refine_start_iter=0, refine_every=1, reset_every=100)
    counts = strategy.step_post_backward(model.params, opts, strategy.initialize_state(), 1, info)
    assert counts == {"duplicated": 4, "split": 4, "pruned": 2}          # G7's two children are pruned
    origin = [0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 4, 5, 6]                  # survivors, clones, children 1, children 2
    assert torch.equal(model.params[GAUSSIAN_EMBEDDINGS].detach(), parent_embeddings[origin])
    gamma1, beta1 = appearance.affine(model, appearance.image_embeddings([1]))
    assert torch.equal(gamma1, gamma0[:, origin]) and torch.equal(beta1, beta0[:, origin])


def test_optimizers_and_gradients_reach_everything():
    model, appearance = model_with_appearance(perturb=False)
    lrs = SplatLRConfig()
    opts = {**model.create_optimizers(lrs), **appearance.create_optimizers(lrs)}
    assert opts[GAUSSIAN_EMBEDDINGS].param_groups[0]["lr"] == 5e-3
    assert opts["image_embeddings"].param_groups[0]["lr"] == 1e-3
    assert opts["appearance_mlp"].param_groups[0]["lr"] == 5e-4
    target = torch.rand(1, 12, 16, 3, generator=torch.Generator().manual_seed(0))
    for _ in range(2):     # the zero last layer blocks gradients to the embeddings only until its first update
        for opt in opts.values():
            opt.zero_grad(set_to_none=True)
        image, _, _ = model.render(camera(), appearance=appearance, image_ids=[1], rasterizer=dense_rasterize)
        (image - target).abs().mean().backward()
        for opt in opts.values():
            opt.step()
    assert model.params[GAUSSIAN_EMBEDDINGS].grad.abs().sum() > 0
    grads = appearance.embeddings.weight.grad
    assert grads[1].abs().sum() > 0 and grads[0].abs().sum() == 0 and grads[2].abs().sum() == 0


def test_config_errors():
    with pytest.raises(ConfigError):
        AppearanceConfig(hidden_layers=0)
    with pytest.raises(ConfigError):
        AppearanceModel(0)
    model = random_model()
    with pytest.raises(ConfigError, match="attach"):
        AppearanceModel(2).affine(model, torch.zeros(1, 32))


def test_fused_matches_modulated_with_the_real_rasterizer(tmp_path):
    splat = pytest.importorskip("earthsynth.render.splat", reason="earthsynth.render.splat not written yet")
    model, appearance = model_with_appearance(degree=1)
    cam = camera(width=32, height=24)
    embedding = appearance.embeddings.weight[0].detach()
    with torch.no_grad():
        modulated, _, _ = model.render(cam, appearance=appearance, image_ids=[0],
                                       rasterizer=splat.rasterize_gaussians)
        path = write_splats_ply(tmp_path / "fused.ply", appearance.fuse(model, embedding).to_splats())
        static, _, _ = GaussianModel.from_splats(read_splats_ply(path)).render(
            cam, rasterizer=splat.rasterize_gaussians)
    assert (modulated - static).abs().max() < 1e-5
