"""Self-cascading generation: resolution bookkeeping and x4 shapes per stage."""

import numpy as np
import pytest
import torch

from earthsynth.errors import ConfigError
from earthsynth.generate.cascade import cascade, upscale
from earthsynth.generate.config import DenoiserConfig
from earthsynth.generate.model import MetaEarthDenoiser
from earthsynth.generate.tiles import TileConfig


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # timings stay sane on 2 cores


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MetaEarthDenoiser(DenoiserConfig.tiny()).eval()   # 16 px windows


def test_two_stages_64_16_4(model, monkeypatch):
    import earthsynth.generate.sample as sample_module
    asked = []
    original = sample_module.sample

    def spy(net, cond, resolution_m, **kwargs):
        asked.append((float(resolution_m), tuple(cond.shape[-2:])))
        return original(net, cond, resolution_m, **kwargs)
    monkeypatch.setattr(sample_module, "sample", spy)
    pandora = np.random.default_rng(0).integers(0, 256, (3, 3, 3), dtype=np.uint8)   # any picture, 64 m/px
    stages = cascade(model, pandora, 64.0, stages=2, seed=0, steps=2)
    assert [m for _, m in stages] == [64.0, 16.0, 4.0]
    assert [img.shape for img, _ in stages] == [(3, 3, 3), (12, 12, 3), (48, 48, 3)]
    assert all(img.dtype == np.uint8 for img, _ in stages)
    np.testing.assert_array_equal(stages[0][0], pandora)
    assert asked[0] == (16.0, (3, 3))                                 # stage 1: one window, GSD of its output
    assert {r for r, _ in asked[1:]} == {4.0}                         # stage 2 (48 px > 16 px window): tiled
    assert len(asked) > 2
    again = cascade(model, pandora, 64.0, stages=2, seed=0, steps=2)
    assert all(a.tobytes() == b.tobytes() for (a, _), (b, _) in zip(stages, again))


def test_chw_float_input_and_errors(model):
    chw = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = upscale(model, chw, 32.0, seed=1, steps=1, tile=TileConfig(overlap=False))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    with pytest.raises(ConfigError, match="stages"):
        cascade(model, chw, 32.0, stages=0)
    with pytest.raises(ConfigError, match="low_res_m"):
        cascade(model, chw, -1.0, stages=1)
