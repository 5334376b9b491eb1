"""FID / KID on closed-form Gaussians; local Inception loading; the shipped proxy extractor."""

import numpy as np
import pytest
import torch

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.metrics.distribution import (InceptionFeatures, ProxyFeatures, distribution_scores,
                                             frechet_distance, frechet_distance_from_stats,
                                             kernel_inception_distance, polynomial_mmd2_unbiased)


def test_frechet_closed_form():
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum(var_a + var_b - 2 * np.sqrt(var_a * var_b))
    assert frechet_distance_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(expected)
    # a rotated full covariance against itself is at distance 0; the sample estimate converges to the formula
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    cov = q @ np.diag(var_a) @ q.T
    assert frechet_distance_from_stats(mu_a, cov, mu_a, cov) == pytest.approx(0.0, abs=1e-9)
    rng = np.random.default_rng(1)
    a = rng.normal(mu_a, np.sqrt(var_a), size=(200_000, 3))
    b = rng.normal(mu_b, np.sqrt(var_b), size=(200_000, 3))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def _cubic_kernel_mean(m_x, s_x, m_y, s_y):
    """E[(x y + 1)^3] for independent 1-D x ~ N(m_x, s_x^2), y ~ N(m_y, s_y^2) (d = 1)."""
    def moments(m, s):
        return m, m * m + s * s, m ** 3 + 3 * m * s * s
    x1, x2, x3 = moments(m_x, s_x)
    y1, y2, y3 = moments(m_y, s_y)
    return x3 * y3 + 3 * x2 * y2 + 3 * x1 * y1 + 1


def test_kid_closed_form_and_unbiasedness():
    p, q = (0.0, 1.0), (0.5, 0.8)
    expected = _cubic_kernel_mean(*p, *p) + _cubic_kernel_mean(*q, *q) - 2 * _cubic_kernel_mean(*p, *q)
    rng = np.random.default_rng(0)
    a, b = rng.normal(*p, size=(20_000, 1)), rng.normal(*q, size=(20_000, 1))
    kid, std = kernel_inception_distance(a, b, subset_size=500, num_subsets=40, return_std=True)
    assert kid == pytest.approx(expected, rel=0.1) and std > 0
    same = kernel_inception_distance(a, rng.normal(*p, size=(20_000, 1)), subset_size=500, num_subsets=40)
    assert abs(same) < 0.1 * expected                   # unbiased: ~0 (may be negative) for one distribution
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(6, 2))
    kxx, kyy, kxy = (x @ x.T / 2 + 1) ** 3, (y @ y.T / 2 + 1) ** 3, (x @ y.T / 2 + 1) ** 3
    brute = ((kxx.sum() - np.trace(kxx)) / 20 + (kyy.sum() - np.trace(kyy)) / 30 - 2 * kxy.mean())
    assert polynomial_mmd2_unbiased(x, y) == pytest.approx(brute)
    with pytest.raises(ConfigError, match="feature sizes"):
        kernel_inception_distance(a, np.zeros((10, 2)))


class _TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 1)


def test_inception_from_local_torchscript(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "inception.pt"
    torch.jit.save(torch.jit.script(_TinyNet()), str(path))
    extractor = InceptionFeatures.from_local_path(path, input_size=32)
    images = np.random.default_rng(0).integers(0, 256, (4, 20, 24, 3), dtype=np.uint8)
    feats = extractor(images)
    assert feats.shape == (4, 8) and extractor.name == "inception:inception.pt"
    scores = distribution_scores(list(images), list(images[::-1]), extractor, kid_subset_size=4, kid_subsets=3)
    assert set(scores) >= {"fid", "kid", "extractor"} and scores["fid"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InputFileError, match="no Inception weights"):
        InceptionFeatures.from_local_path(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputFileError, match="TorchScript"):
        InceptionFeatures.from_local_path(tmp_path / "junk.pt")


def test_proxy_features_are_named_and_deterministic():
    rng = np.random.default_rng(0)
    smooth = [np.full((32, 32, 3), v, dtype=np.uint8) + rng.integers(0, 8, (32, 32, 3), dtype=np.uint8)
              for v in range(40, 240, 10)]
    noisy = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(20)]
    a, b = ProxyFeatures()(smooth), ProxyFeatures()(smooth)
    assert a.shape == (20, 134) and np.array_equal(a, b)
    scores = distribution_scores(smooth, noisy, kid_subset_size=10, kid_subsets=5)
    assert scores["extractor"] == "proxy-randconv-v1" and "fid" not in scores
    same = distribution_scores(smooth[::2], smooth[1::2], kid_subset_size=10, kid_subsets=5)
    assert scores["fid_proxy"] > 5 * same["fid_proxy"] and scores["kid_proxy"] > same["kid_proxy"]
