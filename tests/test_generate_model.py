"""MetaEarth denoiser: presets, shapes, resolution conditioning, save / load."""

import dataclasses
import json

import pytest
import torch

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.generate.config import DenoiserConfig
from earthsynth.generate.model import MetaEarthDenoiser, ResolutionEmbedding


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # timings stay sane on 2 cores


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return MetaEarthDenoiser(DenoiserConfig.tiny()).eval()


def _inputs(config: DenoiserConfig, batch: int = 2, size: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    size = size or config.sample_size
    x = torch.randn(batch, config.image_channels, size, size, generator=g)
    lr = torch.rand(batch, config.image_channels, size // config.scale, size // config.scale, generator=g) * 2 - 1
    return x, torch.tensor([10, 900][:batch]), lr


def test_preset_sizes():
    tiny = MetaEarthDenoiser(DenoiserConfig.tiny()).num_parameters()
    cpu = MetaEarthDenoiser(DenoiserConfig.cpu_default()).num_parameters()
    with torch.device("meta"):  # no memory: only the parameter count
        paper = MetaEarthDenoiser(DenoiserConfig.paper()).num_parameters()
    assert tiny < 200_000
    assert 5_000_000 <= cpu <= 10_000_000
    assert 450_000_000 <= paper <= 750_000_000  # MetaEarth: "about 600 million parameters"


def test_paper_preset_structure():
    c = DenoiserConfig.paper()
    assert len(c.block_out_channels) == 5 and c.layers_per_block == 3
    base = c.block_out_channels[0]
    attention_at = {m // base for m, a in zip(c.block_out_channels, c.attention_levels) if a}
    assert attention_at == {8}


def test_forward_shapes_and_scale_shift(tiny_model):
    x, t, lr = _inputs(tiny_model.config)
    with torch.no_grad():
        eps = tiny_model(x, t, lr, 4.0)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    assert tiny_model.unet.config.resnet_time_scale_shift == "scale_shift"
    assert tiny_model.unet.config.class_embed_type == "identity"
    # any size that is a multiple of the UNet stride works, not just sample_size
    x2, t2, lr2 = _inputs(tiny_model.config, size=24)
    with torch.no_grad():
        assert tiny_model(x2, t2, lr2, [4.0, 16.0]).shape == x2.shape


def test_resolution_changes_eps(tiny_model):
    x, t, lr = _inputs(tiny_model.config)
    with torch.no_grad():
        a = tiny_model(x, t, lr, 4.0)
        b = tiny_model(x, t, lr, 4.4)
        again = tiny_model(x, t, lr, 4.0)
    assert torch.equal(a, again)
    assert (a - b).abs().max() > 1e-4
    # the encoding itself separates 4 and 4.4 m clearly (high frequencies) and is smooth in ln r
    enc = tiny_model.resolution_embedding.encode(torch.tensor([4.0, 4.4, 4.0001]))
    assert (enc[0] - enc[1]).abs().max() > 0.5
    assert (enc[0] - enc[2]).abs().max() < 0.05


def test_condition_changes_eps(tiny_model):
    x, t, lr = _inputs(tiny_model.config)
    with torch.no_grad():
        assert not torch.equal(tiny_model(x, t, lr, 4.0), tiny_model(x, t, -lr, 4.0))


def test_four_channel_images():
    config = dataclasses.replace(DenoiserConfig.tiny(), image_channels=4)  # RGB + height
    model = MetaEarthDenoiser(config)
    x, t, lr = _inputs(config)
    with torch.no_grad():
        assert model(x, t, lr, 2.0).shape == x.shape


def test_save_load_round_trip(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = MetaEarthDenoiser.from_pretrained(tmp_path / "m")
    assert loaded.config == tiny_model.config
    x, t, lr = _inputs(tiny_model.config)
    with torch.no_grad():
        assert torch.equal(tiny_model(x, t, lr, 16.0), loaded(x, t, lr, 16.0))


def test_load_errors(tmp_path, tiny_model):
    with pytest.raises(InputFileError, match="model file missing"):
        MetaEarthDenoiser.from_pretrained(tmp_path / "nothing")
    tiny_model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(InputFileError, match="cannot read the weights"):
        MetaEarthDenoiser.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(InputFileError, match="not valid JSON"):
        MetaEarthDenoiser.from_pretrained(tmp_path / "m")


def test_config_json_round_trip_and_validation():
    for preset in (DenoiserConfig.tiny(), DenoiserConfig.cpu_default(), DenoiserConfig.paper()):
        assert DenoiserConfig.from_json(preset.to_json()) == preset
    data = json.loads(DenoiserConfig.tiny().to_json())
    data["bogus"] = 1
    with pytest.raises(ConfigError, match="unknown keys"):
        DenoiserConfig.from_dict(data)
    with pytest.raises(ConfigError, match="attention_levels"):
        dataclasses.replace(DenoiserConfig.tiny(), attention_levels=(True,))
    with pytest.raises(ConfigError, match="power of two"):
        dataclasses.replace(DenoiserConfig.tiny(), scale=3)
    with pytest.raises(ConfigError, match="norm_num_groups"):
        dataclasses.replace(DenoiserConfig.tiny(), block_out_channels=(6, 16))


def test_bad_inputs(tiny_model):
    x, t, lr = _inputs(tiny_model.config)
    with pytest.raises(ConfigError, match="finite and > 0"):
        tiny_model(x, t, lr, 0.0)
    with pytest.raises(ConfigError, match="batch of 2"):
        tiny_model(x, t, lr, [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="4x smaller"):
        tiny_model(x, t, lr[..., :2, :2], 4.0)
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\)"):
        tiny_model(x[:, :2], t, lr, 4.0)


def test_resolution_embedding_is_not_in_state_dict():
    emb = ResolutionEmbedding(DenoiserConfig.tiny())
    assert "frequencies" not in emb.state_dict()
    assert emb.frequencies[0] == pytest.approx(0.25) and emb.frequencies[-1] == pytest.approx(1000.0, rel=1e-5)


def test_residual_target_round_trip_and_base():
    """A residual model diffuses (hr - bicubic(lr)) * scale; the inverse recovers the HR image exactly."""
    from dataclasses import replace as _replace

    from earthsynth.generate.config import DenoiserConfig
    from earthsynth.generate.model import condition_upsampled, diffusion_target, image_from_target
    cfg = _replace(DenoiserConfig.tiny(), residual=True, residual_scale=4.0)
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    lr = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    x0 = diffusion_target(cfg, hr, lr)
    assert torch.allclose(image_from_target(cfg, x0, lr), hr, atol=1e-6)
    # a constant condition up-samples to the same constant, so the residual of a constant HR image is zero
    const = torch.full((1, 3, 4, 4), 0.25)
    assert torch.allclose(condition_upsampled(cfg, const), torch.full((1, 3, 16, 16), 0.25), atol=1e-6)
    assert torch.allclose(diffusion_target(cfg, torch.full((1, 3, 16, 16), 0.25), const), torch.zeros(1, 3, 16, 16),
                          atol=1e-6)
    plain = _replace(cfg, residual=False)
    assert torch.equal(diffusion_target(plain, hr, lr), hr)
