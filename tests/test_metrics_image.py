"""PSNR / SSIM against scikit-image (an independent implementation), closed forms, batches and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from earthsynth.errors import ConfigError
from earthsynth.metrics.image import psnr, ssim, ssim_loss, ssim_map

NAIP = "opengeos_naip_5m_timeseries/m_4709963_se_14_1_{}.tif"


def sk_ssim(a, b, sigma=1.5):
    return structural_similarity(a, b, gaussian_weights=True, sigma=sigma, use_sample_covariance=False,
                                 data_range=1.0, channel_axis=-1)


def read_rgb_crop(path, y0=200, x0=300, size=96) -> np.ndarray:
    with rasterio.open(path) as src:
        arr = src.read((1, 2, 3), window=((y0, y0 + size), (x0, x0 + size)))
    return np.moveaxis(arr, 0, -1)


@pytest.fixture(scope="module")
def random_pair():
    rng = np.random.default_rng(0)
    a = rng.random((40, 52, 3))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    return a, b


def test_ssim_matches_skimage_on_random_images(random_pair):
    a, b = random_pair
    got = float(ssim(torch.tensor(a), torch.tensor(b)))
    assert got == pytest.approx(sk_ssim(a, b), abs=1e-10)
    assert got < 0.99      # the noise is visible, so the test is not comparing two ~1.0 values
    # the differentiable path (fused moments, used when a gradient is needed) gives the same number
    with_grad = ssim(torch.tensor(a, requires_grad=True), torch.tensor(b))
    assert with_grad.requires_grad and float(with_grad.detach()) == pytest.approx(sk_ssim(a, b), abs=1e-10)


def test_ssim_other_sigma_matches_skimage(random_pair):
    a, b = random_pair
    # skimage's window is 2 * int(3.5 sigma + 0.5) + 1 taps: 9 for sigma = 1
    got = float(ssim(torch.tensor(a), torch.tensor(b), sigma=1.0, window_size=9))
    assert got == pytest.approx(sk_ssim(a, b, sigma=1.0), abs=1e-10)
    assert got != pytest.approx(sk_ssim(a, b, sigma=1.5), abs=1e-4)


def test_metrics_on_real_multidate_images(real_data):
    """Two NAIP dates of the same place (real change + different light), as uint8 numpy arrays."""
    a = read_rgb_crop(real_data / NAIP.format("20100629"))
    b = read_rgb_crop(real_data / NAIP.format("20120731"))
    got_ssim = float(ssim(a, b))
    ref = sk_ssim(a / 255.0, b / 255.0)
    # uint8 is computed in float32 (variance = E[x^2] - mu^2 loses ~1e-6 to cancellation); float64 is exact
    assert got_ssim == pytest.approx(ref, abs=2e-5)
    assert float(ssim(a / 255.0, b / 255.0)) == pytest.approx(ref, abs=1e-10)
    assert 0.05 < got_ssim < 0.95
    assert float(psnr(a, b)) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-4)


def test_closed_forms():
    img = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(1)) * 0.8
    assert float(ssim(img, img)) == pytest.approx(1.0, abs=1e-6)
    assert math.isinf(float(psnr(img, img)))
    for d in (0.01, 0.1, 0.2):
        assert float(psnr(img + d, img)) == pytest.approx(20 * math.log10(1 / d), abs=1e-4)
    black = torch.zeros(16, 16, 3)
    assert float(ssim(black, black)) == pytest.approx(1.0, abs=1e-12)   # no eps bias on flat images
    # a constant offset d on flat images: SSIM = (2 mu (mu+d) + C1) / (mu^2 + (mu+d)^2 + C1)
    mu, d, c1 = 0.3, 0.1, 0.01**2
    flat = torch.full((16, 16, 3), mu, dtype=torch.float64)
    want = (2 * mu * (mu + d) + c1) / (mu**2 + (mu + d) ** 2 + c1)
    assert float(ssim(flat + d, flat)) == pytest.approx(want, abs=1e-12)


def test_batch_equals_singles_and_masks(random_pair):
    a, b = (torch.tensor(x) for x in random_pair)
    pa, pb = torch.stack([a, b, a]), torch.stack([b, a, a])
    s, p = ssim(pa, pb), psnr(pa, pb)
    assert s.shape == (3,) and p.shape == (3,)
    assert float(s[0]) == pytest.approx(float(ssim(a, b)), abs=1e-12)
    assert float(p[1]) == pytest.approx(float(psnr(b, a)), abs=1e-9)
    # a mask selecting the left half equals the metric of the left half (PSNR exactly; SSIM on the valid part)
    mask = torch.zeros(40, 52, dtype=torch.bool)
    mask[:, :26] = True
    assert float(psnr(a, b, mask=mask)) == pytest.approx(float(psnr(a[:, :26], b[:, :26])), abs=1e-9)
    smap = ssim_map(a, b)[0]                                # (30, 42, 3): valid interior
    assert float(ssim(a, b, mask=mask)) == pytest.approx(float(smap[:, :21].mean()), abs=1e-12)


def test_gradients_flow():
    gen = torch.Generator().manual_seed(2)
    target = torch.rand(2, 24, 24, 3, generator=gen)
    pred = (target + 0.1 * torch.rand(2, 24, 24, 3, generator=gen)).requires_grad_(True)
    loss = ssim_loss(pred, target).sum() - psnr(pred, target).sum() / 100
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # a small step down the gradient of 1 - SSIM alone improves SSIM
    pred.grad = None
    ssim_loss(pred, target).sum().backward()
    with torch.no_grad():
        better = pred - 0.02 * pred.grad / pred.grad.abs().max()
    assert (ssim(better, target) > ssim(pred.detach(), target)).all()


def test_bad_input():
    img = torch.rand(16, 16, 3)
    with pytest.raises(ConfigError, match="shapes differ"):
        ssim(img, torch.rand(16, 17, 3))
    with pytest.raises(ConfigError, match="window"):
        ssim(torch.rand(8, 8, 3), torch.rand(8, 8, 3))
    with pytest.raises(ConfigError, match="H, W, 3"):
        psnr(torch.rand(16, 16), torch.rand(16, 16))
    with pytest.raises(ConfigError, match="no pixel"):
        psnr(img, img * 0.5, mask=torch.zeros(16, 16, dtype=torch.bool))
    with pytest.raises(ConfigError, match="mask shape"):
        psnr(img, img, mask=torch.ones(4, 4))
