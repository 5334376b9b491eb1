"""DensifyPruneStrategy and its ops (earthsynth.splat.strategy) against hand-computed expectations."""

import math

import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.splat import DensifyPruneStrategy, GaussianModel, split

torch.set_num_threads(1)
W = H = 100                      # grads are scaled by W/2 = 50 before the 2e-4 threshold
HIGH, LOW = 1e-5, 1e-6           # per-pixel means2d grad norms: 5e-4 (> 2e-4) and 5e-5 (< 2e-4) after scaling
QUAT_Z90 = [math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]    # 90 degrees about z: x -> y, y -> -x
ROT_Z90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def five_gaussians():
    """G0 high grad + small -> clone; G1 high grad + large -> split; G2 low grad, kept; G3 opacity 0.001 -> pruned;
    G4 low grad, scale 0.5 > 20/256 -> pruned only after the first opacity reset."""
    logit = lambda p: math.log(p / (1 - p))
    model = GaussianModel({
        "means": torch.arange(15, dtype=torch.float32).reshape(5, 3),
        "quats": torch.tensor([[1.0, 0, 0, 0], QUAT_Z90, [1.0, 0, 0, 0], [1.0, 0, 0, 0], [1.0, 0, 0, 0]]),
        "scales": torch.log(torch.tensor([[0.005] * 3, [0.05, 0.02, 0.01], [0.005] * 3, [0.005] * 3, [0.5] * 3])),
        "opacities": torch.tensor([logit(0.5), logit(0.6), logit(0.7), logit(0.001), logit(0.8)]),
        "sh0": torch.arange(15, dtype=torch.float32).reshape(5, 1, 3) / 10,
        "shN": torch.arange(45, dtype=torch.float32).reshape(5, 3, 3) / 100})
    model.add_per_gaussian("gaussian_embeddings", torch.arange(5, dtype=torch.float32)[:, None].repeat(1, 4))
    optimizers = model.create_optimizers()
    for opt in optimizers.values():           # create the Adam state, then mark each row with its Gaussian id
        opt.param_groups[0]["params"][0].grad = torch.zeros_like(opt.param_groups[0]["params"][0])
        opt.step()
        for key, scale in (("exp_avg", 1.0), ("exp_avg_sq", 10.0)):
            v = opt.state[opt.param_groups[0]["params"][0]][key]
            v.copy_(scale * (1 + torch.arange(5.0)).reshape(5, *[1] * (v.dim() - 1)).expand_as(v))
    return model, optimizers


def info_with_grads(norms, radii=None):
    means2d = torch.zeros(1, len(norms), 2, requires_grad=True)
    means2d.grad = torch.tensor([[[0.6 * n, 0.8 * n] for n in norms]])        # |(0.6, 0.8) n| = n
    radii = torch.ones(1, len(norms), dtype=torch.int32) if radii is None else torch.tensor([radii])
    return {"means2d": means2d, "radii": radii, "width": W, "height": H, "n_cameras": 1}


def adam_rows(optimizers, model, key, which="exp_avg"):
    state = optimizers[key].state[model.params[key]][which]
    return state.reshape(len(state), -1)[:, 0].tolist()


def test_gradient_accumulation_is_normalised_like_gsplat():
    model, opts = five_gaussians()
    strategy = DensifyPruneStrategy(refine_start_iter=10)
    state = strategy.initialize_state()
    norms = [HIGH, HIGH, LOW, LOW, LOW]
    strategy.step_pre_backward(model.params, opts, state, 1, info_with_grads(norms))
    strategy.step_post_backward(model.params, opts, state, 1, info_with_grads(norms, radii=[1, 1, 0, 1, 1]))
    expected = [n * W / 2 for n in norms]
    expected[2] = 0.0                                      # radius 0: not visible, not counted
    assert state["grad2d"].tolist() == pytest.approx(expected, rel=1e-6)
    assert state["count"].tolist() == [1, 1, 0, 1, 1]
    # packed layout: the same visible Gaussians listed by id
    packed_state = strategy.initialize_state()
    ids = torch.tensor([0, 1, 3, 4])
    means2d = torch.zeros(4, 2, requires_grad=True)
    means2d.grad = info_with_grads(norms)["means2d"].grad[0, ids]
    strategy.step_post_backward(model.params, opts, packed_state, 1, {"means2d": means2d, "gaussian_ids": ids,
                                "radii": torch.ones(4), "width": W, "height": H, "n_cameras": 1}, packed=True)
    assert torch.allclose(packed_state["grad2d"], state["grad2d"])
    assert torch.equal(packed_state["count"], state["count"])


def run_refine(step, reset_every=1000, seed=0):
    model, opts = five_gaussians()
    strategy = DensifyPruneStrategy(refine_start_iter=0, refine_every=step, reset_every=reset_every, seed=seed)
    state = strategy.initialize_state(scene_scale=1.0)
    parent = {k: v.detach().clone() for k, v in model.params.items()}
    counts = strategy.step_post_backward(model.params, opts, state, step, info_with_grads([HIGH, HIGH, LOW, LOW, LOW]))
    return model, opts, state, parent, counts


def test_clone_split_prune_counts_order_and_adam_rows():
    model, opts, state, parent, counts = run_refine(step=2)
    assert counts == {"duplicated": 1, "split": 1, "pruned": 1}
    # [G0 G1 G2 G3 G4] -> clone G0 -> [G0 G1 G2 G3 G4 G0'] -> split G1 -> [G0 G2 G3 G4 G0' G1a G1b] -> prune G3
    origin = [0, 2, 4, 0, 1, 1]
    assert model.num == 6
    for key in ("quats", "opacities", "sh0", "shN", "gaussian_embeddings"):
        assert torch.equal(model.params[key].detach(), parent[key][origin]), key
    assert torch.equal(model.params["means"][:4].detach(), parent["means"][[0, 2, 4, 0]])
    child_log_scales = (torch.exp(parent["scales"][1]) / 1.6).log().expand(2, 3)
    assert torch.allclose(model.params["scales"][4:].detach(), child_log_scales)
    for key in model.params:                 # survivors keep their moments, clones and children start at zero
        assert adam_rows(opts, model, key) == [1.0, 3.0, 5.0, 0.0, 0.0, 0.0], key
        assert adam_rows(opts, model, key, "exp_avg_sq") == [10.0, 30.0, 50.0, 0.0, 0.0, 0.0], key
        assert opts[key].param_groups[0]["params"][0] is model.params[key]
    assert state["grad2d"].shape == (6,) and not state["grad2d"].any() and not state["count"].any()


def test_split_children_are_drawn_from_the_parent_with_the_seed():
    model, _, _, parent, _ = run_refine(step=2, seed=5)
    noise = torch.randn((2, 1, 3), generator=torch.Generator().manual_seed(5 * 1_000_003 + 2))
    scales = torch.tensor([0.05, 0.02, 0.01])
    expected = parent["means"][1] + (ROT_Z90 @ (scales * noise[:, 0]).T).T          # mu + R S n, hand-rotated
    assert torch.allclose(model.params["means"][4:].detach(), expected, atol=1e-6)
    again, _, _, _, _ = run_refine(step=2, seed=5)
    other, _, _, _, _ = run_refine(step=2, seed=6)
    assert torch.equal(again.params["means"], model.params["means"])
    assert not torch.equal(other.params["means"][4:], model.params["means"][4:])


def test_split_samples_follow_the_gaussian_covariance():
    n = 4000
    params = {"means": torch.zeros(n, 3), "quats": torch.tensor([QUAT_Z90]).repeat(n, 1),
              "scales": torch.log(torch.tensor([[0.3, 0.1, 0.05]])).repeat(n, 1), "opacities": torch.zeros(n)}
    params = {k: torch.nn.Parameter(v, requires_grad=False) for k, v in params.items()}   # no optimizers here
    split(params, {}, {}, torch.ones(n, dtype=torch.bool), generator=torch.Generator().manual_seed(0))
    samples = params["means"].detach().double()
    cov = samples.T @ samples / len(samples)
    expected = ROT_Z90.double() @ torch.diag(torch.tensor([0.3, 0.1, 0.05]) ** 2).double() @ ROT_Z90.T.double()
    d = torch.diagonal(expected)
    sigma = torch.sqrt((d[:, None] * d[None] + expected ** 2) / len(samples))   # std of a Gaussian sample covariance
    assert torch.all((cov - expected).abs() < 5 * sigma)
    assert cov[1, 1] > 0.08 and cov[0, 0] < 0.02                         # the long axis now lies along y


def test_large_gaussians_pruned_only_after_first_reset_and_opacity_reset():
    model, opts, _, parent, counts = run_refine(step=3000, reset_every=1000)
    # step 3000 > reset_every: G3 (opacity) and G4 (scale 0.5 > 20/256) go; then opacities reset (3000 % 1000 == 0)
    assert counts == {"duplicated": 1, "split": 1, "pruned": 2, "opacity_reset": 1}
    origin = [0, 2, 0, 1, 1]
    assert torch.equal(model.params["sh0"].detach(), parent["sh0"][origin])
    max_logit = math.log(0.01 / 0.99)
    expected = parent["opacities"][origin].clamp(max=max_logit)
    assert torch.allclose(model.params["opacities"].detach(), expected)
    assert torch.sigmoid(model.params["opacities"]).max().item() == pytest.approx(0.01, rel=1e-5)
    assert adam_rows(opts, model, "opacities") == [0.0] * 5                  # reset zeroes opacity moments only
    assert adam_rows(opts, model, "sh0") == [1.0, 3.0, 0.0, 0.0, 0.0]


def test_no_refinement_outside_the_window():
    strategy = DensifyPruneStrategy(refine_start_iter=100, refine_stop_iter=200, refine_every=10)
    for step, expect_change in ((100, False), (105, False), (200, False), (110, True)):
        model, opts = five_gaussians()
        state = strategy.initialize_state()
        counts = strategy.step_post_backward(model.params, opts, state, step, info_with_grads([HIGH] * 5))
        assert (model.num != 5) == expect_change and bool(counts) == expect_change, step


def test_sanity_and_config_errors():
    model, opts = five_gaussians()
    strategy = DensifyPruneStrategy()
    strategy.check_sanity(model.params, opts)
    with pytest.raises(ConfigError):
        strategy.check_sanity(model.params, {k: v for k, v in opts.items() if k != "sh0"})
    with pytest.raises(ConfigError):
        DensifyPruneStrategy(prune_opa=0.7)
    with pytest.raises(ConfigError):
        strategy.step_pre_backward(model.params, opts, strategy.initialize_state(), 0, {})
