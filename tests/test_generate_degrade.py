"""High-order degradation: determinism, shapes, kernels, configuration."""

import dataclasses
import math

import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.generate.config import config_from_json, config_to_json
from earthsynth.generate.degrade import (DegradationConfig, DegradationStage, anisotropic_kernel, degrade, filter2d,
                                         jpeg, sinc_kernel)


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # timings stay sane on 2 cores


def _image(size: int = 48, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    coarse = torch.rand(channels, size // 8, size // 8, generator=g)
    fine = torch.nn.functional.interpolate(coarse[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return (0.8 * fine + 0.2 * torch.rand(channels, size, size, generator=g)).clamp(0, 1)


def test_same_seed_same_bytes_different_seeds_differ():
    hr = _image()
    outs = [degrade(hr, scale=4, generator=seed) for seed in (0, 0, 1, 2)]
    assert outs[0].numpy().tobytes() == outs[1].numpy().tobytes()
    assert not torch.equal(outs[0], outs[2]) and not torch.equal(outs[2], outs[3])
    # a Generator works as well as a seed, and is advanced by the call
    g = torch.Generator().manual_seed(0)
    assert torch.equal(degrade(hr, generator=g), outs[0])
    assert not torch.equal(degrade(hr, generator=g), outs[0])


def test_shape_range_quantisation():
    hr = _image(64)
    for seed in range(6):
        lr = degrade(hr, scale=4, generator=seed)
        assert lr.shape == (3, 16, 16) and lr.dtype == torch.float32
        assert lr.min() >= 0 and lr.max() <= 1
        assert torch.equal((lr * 255).round() / 255, lr)
    assert degrade(hr, scale=2, generator=0).shape == (3, 32, 32)


def test_degraded_is_close_to_a_plain_downsample_on_average():
    """The LR keeps the content: its mean colour stays near the HR's (noise and blur are zero-mean-ish)."""
    hr = _image(64)
    lr = torch.stack([degrade(hr, generator=s) for s in range(8)]).mean(0)
    ref = torch.nn.functional.avg_pool2d(hr[None], 4)[0]
    assert (lr.mean(dim=(1, 2)) - ref.mean(dim=(1, 2))).abs().max() < 0.1


def test_other_channel_counts_and_tiny_images():
    assert degrade(_image(16, channels=4), generator=3).shape == (4, 4, 4)   # RGB + height
    assert degrade(_image(16, channels=1), generator=3).shape == (1, 4, 4)
    assert degrade(_image(8), generator=5).shape == (3, 2, 2)               # kernels larger than the image


def test_bad_inputs():
    with pytest.raises(ConfigError, match="not divisible"):
        degrade(_image(30), scale=4, generator=0)
    with pytest.raises(ConfigError, match="float tensor"):
        degrade((_image() * 255).to(torch.uint8), generator=0)
    bad = _image()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ConfigError, match="NaN"):
        degrade(bad, generator=0)
    with pytest.raises(ConfigError, match="seed"):
        degrade(_image(), generator="zero")


def test_kernels():
    iso = anisotropic_kernel(21, 2.0, 2.0, 0.0)
    assert iso.sum().item() == pytest.approx(1.0)
    assert torch.allclose(iso, iso.T) and torch.allclose(iso, iso.flip(0))
    # the variance along x of an isotropic Gaussian kernel is sigma^2
    ax = torch.arange(21, dtype=torch.float64) - 10
    assert (iso.sum(0) * ax**2).sum().item() == pytest.approx(4.0, rel=1e-3)
    aniso = anisotropic_kernel(21, 3.0, 0.5, math.pi / 2)
    assert (aniso.sum(0) * ax**2).sum() < (aniso.sum(1) * ax**2).sum()   # rotated: long along y
    for shape in ("generalized", "plateau"):
        k = anisotropic_kernel(15, 1.5, 1.0, 0.3, beta=1.5, shape=shape)
        assert k.sum().item() == pytest.approx(1.0) and (k > 0).all()
    sinc = sinc_kernel(21, math.pi / 3)
    assert sinc.sum().item() == pytest.approx(1.0) and (sinc < 0).any()   # ringing lobes
    flat = torch.full((3, 12, 12), 0.5)
    assert torch.allclose(filter2d(flat, iso.float()), flat, atol=1e-6)


def test_jpeg_round_trip():
    img = torch.nn.functional.interpolate(_image(32)[None], scale_factor=0.25, mode="area")
    img = torch.nn.functional.interpolate(img, size=(32, 32), mode="bilinear", align_corners=False)[0]  # smooth
    out = jpeg(img, 95)
    assert out.shape == img.shape and (out - img).abs().mean() < 0.03
    assert (jpeg(img, 10) - img).abs().mean() > (out - img).abs().mean()


def test_config_defaults_and_validation():
    c = DegradationConfig()
    assert c.first.blur_sigma == (0.2, 3.0) and c.second.blur_sigma == (0.2, 1.5)      # Real-ESRGAN
    assert c.first.resize_probabilities == (0.2, 0.7, 0.1) and c.second.blur_prob == 0.8
    assert c.kernel_sizes == (7, 9, 11, 13, 15, 17, 19, 21) and c.final_sinc_prob == 0.8
    assert config_from_json(DegradationConfig, config_to_json(c)) == c
    with pytest.raises(ConfigError, match="summing to 1"):
        DegradationStage(resize_probabilities=(0.5, 0.5, 0.5))
    with pytest.raises(ConfigError, match="odd"):
        DegradationConfig(kernel_sizes=(8,))
    mild = DegradationConfig(first=dataclasses.replace(DegradationStage(), blur_sigma=(0.2, 0.3)))
    assert degrade(_image(), generator=0, config=mild).shape == (3, 12, 12)
