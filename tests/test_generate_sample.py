"""DDIM sampling (and the noise schedule it runs on)."""

from dataclasses import replace

import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.generate.config import DenoiserConfig
from earthsynth.generate.model import MetaEarthDenoiser
from earthsynth.generate.sample import initial_noise_for, sample
from earthsynth.generate.schedule import (ScheduleConfig, alphas_cumprod, ddim_scheduler, ddpm_scheduler,
                                          p2_weights, snr)


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # timings stay sane on 2 cores


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MetaEarthDenoiser(DenoiserConfig.tiny()).eval()


@pytest.fixture(scope="module")
def condition():
    return torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))


def test_same_seed_same_bytes(model, condition):
    a = sample(model, condition, 4.0, steps=5, generator=3)
    b = sample(model, condition, 4.0, steps=5, generator=torch.Generator().manual_seed(3))
    c = sample(model, condition, 4.0, steps=5, generator=4)
    assert a.shape == (2, 3, 16, 16) and a.min() >= 0 and a.max() <= 1
    assert a.numpy().tobytes() == b.numpy().tobytes()
    assert not torch.equal(a, c)


def test_initial_noise_is_used(model, condition):
    noise = initial_noise_for(model, condition, 11)
    assert noise.shape == (2, 3, 16, 16)
    from_seed = sample(model, condition, 4.0, steps=4, generator=11)
    given = sample(model, condition, 4.0, steps=4, generator=999, initial_noise=noise)
    assert torch.equal(from_seed, given)   # eta = 0: the result depends on x_T and the condition only
    other = sample(model, condition, 4.0, steps=4, generator=11, initial_noise=-noise)
    assert not torch.equal(from_seed, other)
    single = sample(model, condition[0], 4.0, steps=4, initial_noise=noise[0])
    # batch size changes the float summation order of the convolutions: equal up to rounding, not bytes
    assert single.shape == (3, 16, 16) and torch.allclose(single, from_seed[0], atol=1e-4)
    with pytest.raises(ConfigError, match="initial_noise has shape"):
        sample(model, condition, 4.0, steps=2, initial_noise=noise[..., :8, :8])


def test_default_is_50_ddim_steps(model, condition, monkeypatch):
    calls = []
    original = model.denoise

    def counting(x, t, *args):
        calls.append(int(t))
        return original(x, t, *args)

    monkeypatch.setattr(model, "denoise", counting)
    out = sample(model, condition[:1], 8.0, generator=0)
    assert len(calls) == 50 and calls == sorted(calls, reverse=True) and calls[-1] == 0
    assert torch.isfinite(out).all()


def test_eta_positive_is_still_seeded(model, condition):
    a = sample(model, condition, 4.0, steps=3, eta=1.0, generator=5)
    b = sample(model, condition, 4.0, steps=3, eta=1.0, generator=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample(model, condition, 4.0, steps=3, eta=0.0, generator=5))


def test_training_mode_is_restored(condition):
    m = MetaEarthDenoiser(DenoiserConfig.tiny()).train()
    sample(m, condition, 4.0, steps=1)
    assert m.training


def test_resolution_matters(model, condition):
    assert not torch.equal(sample(model, condition, 4.0, steps=2), sample(model, condition, 64.0, steps=2))


def test_bad_arguments(model, condition):
    with pytest.raises(ConfigError, match="steps"):
        sample(model, condition, 4.0, steps=0)
    with pytest.raises(ConfigError, match="eta"):
        sample(model, condition, 4.0, eta=2.0)
    with pytest.raises(ConfigError, match="channels"):
        sample(model, condition[:, :2], 4.0, steps=1)


def test_schedule_is_metaearths():
    ddpm, ddim = ddpm_scheduler(), ddim_scheduler()
    for s in (ddpm, ddim):
        assert s.config.num_train_timesteps == 1000 and s.config.beta_schedule == "linear"
        assert s.config.prediction_type == "epsilon"
        assert s.betas[0].item() == pytest.approx(0.0015) and s.betas[-1].item() == pytest.approx(0.0155)
    assert torch.allclose(ddpm.alphas_cumprod.double(), alphas_cumprod(), rtol=1e-5)
    ratio = snr()
    assert (ratio[1:] < ratio[:-1]).all()   # SNR falls with t


def test_p2_weights():
    w = p2_weights()
    assert w.shape == (1000,) and (w[1:] > w[:-1]).all()   # noisier steps weigh more
    expected = 1.0 / (1.0 + snr()[500])
    assert w[500].item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.equal(p2_weights(k=1.0, gamma=0.0), torch.ones(1000))
    with pytest.raises(ConfigError):
        p2_weights(k=-1.0)
    with pytest.raises(ConfigError):
        ScheduleConfig(beta_start=0.02, beta_end=0.01)


class _ExactZeroResidual(torch.nn.Module):
    """Wraps a residual model so that its noise prediction is exact for x_0 = 0 (the bicubic up-sampling):
    eps = x_t / sqrt(1 - abar_t). Records the timesteps it is called at."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config, self.calls = model, model.config, []
        self.abar = ddim_scheduler(ScheduleConfig()).alphas_cumprod

    def encode_condition(self, cond):
        return self.inner.encode_condition(cond)

    def embed_resolution(self, r, b):
        return self.inner.embed_resolution(r, b)

    def denoise(self, x, t, features, res_emb):
        self.calls.append(int(t))
        return x / (1.0 - self.abar[int(t)]).sqrt()


@pytest.mark.parametrize("strength", [1.0, 0.6, 0.25])
def test_strength_runs_the_last_part_of_the_schedule(condition, strength):
    torch.manual_seed(0)
    residual = MetaEarthDenoiser(replace(DenoiserConfig.tiny(), residual=True)).eval()
    exact = _ExactZeroResidual(residual)
    out = sample(exact, condition, 4.0, steps=8, generator=5, strength=strength)
    assert len(exact.calls) == 8 and exact.calls == sorted(exact.calls, reverse=True)
    assert abs(exact.calls[0] - strength * 1000) <= 1000 / 8 * strength + 1   # starts near strength * T
    assert exact.calls[-1] < 1000 * strength / 8 + 1                             # and ends near t = 0
    # with an exact noise prediction for x_0 = 0, DDIM lands on the bicubic up-sampling of the condition
    bicubic = torch.nn.functional.interpolate(condition * 2 - 1, scale_factor=4, mode="bicubic",
                                              align_corners=False)
    assert torch.allclose(out, ((bicubic + 1) / 2).clamp(0, 1), atol=1e-4)


def test_residual_models_default_to_a_partial_schedule(condition):
    from earthsynth.generate.sample import RESIDUAL_STRENGTH
    torch.manual_seed(0)
    exact = _ExactZeroResidual(MetaEarthDenoiser(replace(DenoiserConfig.tiny(), residual=True)).eval())
    sample(exact, condition, 4.0, steps=10, generator=0)
    assert exact.calls[0] == pytest.approx(RESIDUAL_STRENGTH * 1000, abs=60)
    with pytest.raises(ConfigError, match="strength"):
        sample(exact, condition, 4.0, steps=4, strength=0.0)
