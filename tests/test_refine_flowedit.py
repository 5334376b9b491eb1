"""FlowEdit / SDEdit refiners, the quality-conditioned flow model, its training, the shipped weights and the
diffusers img2img refiner.

The ODE bookkeeping is checked against closed forms with stub velocity fields:
- constant field v(z, t, c) = a_c: FlowEdit (n_min = 0) moves the input by -t_{n_max} (a_tar - a_src), where
  t_{n_max} is computed here from diffusers' grid formula (linspace(1, 1/1000, T), then 0);
- point masses (data distribution of label c = the single image p_c): v(z, t, c) = (z - p_c) / t exactly, and
  Euler is exact for it; FlowEdit then satisfies e(t) = D (1 - t / t_{n_max}) for the edit e = z_edit - x_src and
  D = p_tar - p_src, so with n_min = 0 the output is x + D (whatever the noise), and with n_min > 0 the final
  target sampling lands exactly on p_tar; SDEdit lands on p_tar for any strength > 0.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from earthsynth.errors import ConfigError, EarthsynthError, InputFileError
from earthsynth.refine.base import Refiner
from earthsynth.refine.flow_model import FlowModelConfig, QualityFlowModel
from earthsynth.refine.flowedit import FlowEditConfig, FlowEditRefiner, SDEditRefiner, flow_sigmas
from earthsynth.refine.flow_train import FlowTrainConfig, export_weights, step_batch, train


class _Stub(nn.Module):
    """Minimal stand-in for QualityFlowModel: the refiners use .multiple, .device, .config.num_labels, forward."""

    multiple = 1

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.config = FlowModelConfig.tiny()

    @property
    def device(self):
        return self.anchor.device

    def forward(self, z, t, labels):
        assert isinstance(labels, int) and 0 < float(t) <= 1.0
        return self.velocity(z, float(t), labels)


class ConstantField(_Stub):
    def __init__(self, a_src: float, a_tar: float):
        super().__init__()
        self.a = (a_src, a_tar)

    def velocity(self, z, t, label):
        return torch.full_like(z, self.a[label])


class PointMasses(_Stub):
    """Label c's data distribution is the single image points[c] (1, 3, H, W) in model range."""

    def __init__(self, points):
        super().__init__()
        self.points = points

    def velocity(self, z, t, label):
        return (z - self.points[label]) / t


def _grid_t(num_steps: int, n: int) -> float:
    """t_n of diffusers' FlowMatchEulerDiscrete grid (shift 1): sigmas = linspace(1, 1e-3, T) then 0."""
    if n == 0:
        return 0.0
    k = num_steps - n
    return 1.0 - k * (1.0 - 1e-3) / (num_steps - 1)


def _images(b=2, h=12, w=10, seed=0):
    return torch.rand(b, h, w, 3, generator=torch.Generator().manual_seed(seed)) * 0.6 + 0.2


def test_sigma_grid_matches_diffusers_formula():
    sigmas = flow_sigmas(28)
    assert sigmas.shape == (29,)
    for n in range(29):
        assert float(sigmas[28 - n]) == pytest.approx(_grid_t(28, n), abs=1e-6)


@pytest.mark.parametrize("n_avg", [1, 3])
def test_flowedit_constant_field_moves_by_window_length(n_avg):
    x = _images()
    cfg = FlowEditConfig(num_steps=28, n_min=0, n_max=10, n_avg=n_avg)
    out = FlowEditRefiner(ConstantField(0.1, -0.3), cfg).refine(x, seed=3)
    # model range: z_edit = x_src - t_{n_max} (a_tar - a_src); [0, 1] units: half of that
    expected = x + 0.5 * _grid_t(28, 10) * 0.4
    assert torch.allclose(out, expected, atol=1e-6)


def test_flowedit_point_masses_closed_form():
    h, w = 8, 6
    g = torch.Generator().manual_seed(1)
    p_src, p_tar = torch.rand(1, 3, h, w, generator=g) - 0.5, torch.rand(1, 3, h, w, generator=g) - 0.5
    stub = PointMasses([p_src, p_tar])
    x = _images(3, h, w)
    shift = (p_tar - p_src).permute(0, 2, 3, 1) * 0.5          # D in [0, 1] units
    for seed in (0, 1):                                         # the noise cancels exactly
        out = FlowEditRefiner(stub, FlowEditConfig(num_steps=12, n_min=0, n_max=7)).refine(x, seed=seed)
        assert torch.allclose(out, (x + shift).clamp(0, 1), atol=1e-5)
        out = FlowEditRefiner(stub, FlowEditConfig(num_steps=12, n_min=3, n_max=7, n_avg=2)).refine(x, seed=seed)
        target = ((p_tar + 1) * 0.5).permute(0, 2, 3, 1).expand_as(x)
        assert torch.allclose(out, target, atol=1e-5)
        out = SDEditRefiner(stub, strength=0.6, num_steps=5).refine(x, seed=seed)
        assert torch.allclose(out, target, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return QualityFlowModel(FlowModelConfig.tiny()).eval()


def test_identical_conditions_and_zero_strength_return_input_exactly(tiny_model):
    x = _images(3, 21, 30)
    cfg = FlowEditConfig(num_steps=8, n_min=0, n_max=6, n_avg=2, source_label=1, target_label=1)
    assert torch.equal(FlowEditRefiner(tiny_model, cfg).refine(x, seed=5), x)
    assert torch.equal(SDEditRefiner(tiny_model, strength=0.0, num_steps=4).refine(x, seed=5), x)
    # and a real edit does change the image
    moved = FlowEditRefiner(tiny_model, FlowEditConfig(num_steps=8, n_min=2, n_max=6)).refine(x, seed=5)
    assert (moved - x).abs().max() > 1e-3


def test_determinism_sizes_dtype_and_protocol(tiny_model):
    refiner = FlowEditRefiner(tiny_model, FlowEditConfig(num_steps=6, n_min=1, n_max=4, n_avg=2))
    sdedit = SDEditRefiner(tiny_model, strength=0.5, num_steps=3)
    assert isinstance(refiner, Refiner) and isinstance(sdedit, Refiner)
    assert (refiner.name, sdedit.name) == ("flowedit", "sdedit")
    x = _images(3, 17, 23)
    a, b, c = refiner.refine(x, seed=7), refiner.refine(x, seed=7), refiner.refine(x, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    # per-image noise: chunking the batch does not change the result (beyond kernel rounding)
    one_by_one = FlowEditRefiner(tiny_model, replace(refiner.config, batch_size=1)).refine(x, seed=7)
    assert torch.allclose(one_by_one, a, atol=1e-5)
    for shape in [(1, 1, 1, 3), (2, 3, 5, 3), (1, 33, 8, 3)]:
        out = sdedit.refine(torch.rand(shape, dtype=torch.float64), seed=1)
        assert out.shape == shape and out.dtype == torch.float64
    assert refiner.refine(torch.zeros(0, 8, 8, 3)).shape == (0, 8, 8, 3)


def test_bad_inputs_and_configs(tiny_model):
    refiner = FlowEditRefiner(tiny_model, FlowEditConfig(num_steps=4, n_min=0, n_max=2))
    for bad in [torch.zeros(2, 8, 8, 3, dtype=torch.uint8), torch.zeros(8, 8, 3), torch.zeros(1, 8, 8, 4),
                torch.full((1, 4, 4, 3), 1.5), torch.full((1, 4, 4, 3), float("nan")), "image"]:
        with pytest.raises(ConfigError):
            refiner.refine(bad)
    for kwargs in [dict(n_min=10, n_max=5), dict(n_max=40), dict(n_avg=0), dict(guidance=0.5), dict(num_steps=0)]:
        with pytest.raises(ConfigError):
            FlowEditConfig(**kwargs)
    with pytest.raises(ConfigError):
        FlowEditRefiner(tiny_model, FlowEditConfig(target_label=2))
    with pytest.raises(ConfigError):
        SDEditRefiner(tiny_model, strength=1.5)


def test_guidance_extrapolates_the_label_difference():
    # constant field: v_tar with guidance g is a_tar + (g - 1)(a_tar - a_src), so the move scales by g
    x = _images()
    out = FlowEditRefiner(ConstantField(0.1, -0.1), FlowEditConfig(num_steps=28, n_min=0, n_max=10,
                                                                   guidance=2.5)).refine(x)
    assert torch.allclose(out, x + 0.5 * _grid_t(28, 10) * 0.2 * 2.5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# the model and its training
# ---------------------------------------------------------------------------------------------------------------

def test_model_save_load_round_trip(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "m", dtype=torch.float16)
    loaded = QualityFlowModel.from_pretrained(tmp_path / "m")
    z = torch.randn(2, 3, 8, 8)
    assert next(loaded.parameters()).dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(loaded(z, 0.4, 1), tiny_model(z, 0.4, 1), atol=2e-2)
    with pytest.raises(InputFileError):
        QualityFlowModel.from_pretrained(tmp_path / "missing")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputFileError):
        QualityFlowModel.from_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError):
        tiny_model(torch.randn(1, 3, 7, 8), 0.5, 0)


def _toy_data(n=8, size=32):
    """Label 0: smooth colour ramps; label 1: the same ramps plus a fine checkerboard (a 'detail' texture)."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, size)
    base = (ramp[None, :, None, None] * torch.rand(n, 1, 1, 3, generator=g) * 180 + 40).expand(n, size, size, 3)
    checker = ((torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2 * 40 - 20)[None, :, :, None]
    images = torch.cat([base, (base + checker).clamp(0, 255)]).round().to(torch.uint8).contiguous()
    return images, torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])


def test_training_loss_decreases_and_batches_are_pure(tmp_path):
    data = _toy_data()
    config = replace(FlowTrainConfig.tiny(), steps=40, learning_rate=3e-3, checkpoint_every=40, log_every=10)
    assert torch.equal(step_batch(config, 3, *data)["x0"], step_batch(config, 3, *data)["x0"])
    result = train(config, tmp_path / "run", data=data, progress=False)
    first, last = sum(result.losses[:8]) / 8, sum(result.losses[-8:]) / 8
    assert last < 0.8 * first, (first, last)
    assert (result.model_dir / "model.safetensors").is_file()
    info = export_weights(tmp_path / "run", tmp_path / "exported")
    assert info["step"] == 40 and QualityFlowModel.from_pretrained(tmp_path / "exported").num_parameters() > 0


def test_exact_resume(tmp_path):
    from safetensors.torch import load_file
    data = _toy_data()
    config = replace(FlowTrainConfig.tiny(), steps=4, checkpoint_every=2)
    straight = train(config, tmp_path / "a", data=data, progress=False)
    train(replace(config, steps=2), tmp_path / "b", data=data, progress=False)
    resumed = train(config, tmp_path / "b", data=data, progress=False)
    assert resumed.losses == straight.losses[2:]
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a = load_file(str(tmp_path / "a" / "checkpoints" / "step_000004" / name))
        b = load_file(str(tmp_path / "b" / "checkpoints" / "step_000004" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError):   # a different recipe cannot resume this run
        train(replace(config, steps=6, learning_rate=1e-2), tmp_path / "b", data=data, progress=False)
    assert FlowTrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_errors_are_earthsynth_errors():
    with pytest.raises(EarthsynthError):
        FlowTrainConfig(crop_px=30)
    with pytest.raises(EarthsynthError):
        FlowTrainConfig(val_world_seed=0)


def test_validation_statistics_match_independent_references():
    import numpy as np
    from scipy.stats import wasserstein_distance

    from earthsynth.refine.flow_eval import mean_gradient_magnitude, wasserstein_1d
    x = torch.rand(2, 9, 7, 3, generator=torch.Generator().manual_seed(0))
    lum = (x.double() @ torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)).numpy()
    ref = [np.mean(np.hypot(np.diff(im, axis=1)[:-1], np.diff(im, axis=0)[:, :-1])) for im in lum]
    assert np.allclose(mean_gradient_magnitude(x).numpy(), ref)
    a, b = torch.randn(5000, dtype=torch.float64), torch.randn(4000, dtype=torch.float64) * 1.5 + 0.3
    assert wasserstein_1d(a, b) == pytest.approx(wasserstein_distance(a.numpy(), b.numpy()), abs=2e-3)


# ---------------------------------------------------------------------------------------------------------------
# the shipped weights
# ---------------------------------------------------------------------------------------------------------------

def test_shipped_weights_load_and_move_held_out_renders_towards_clean():
    from earthsynth.refine.flow_eval import image_statistics
    from earthsynth.refine.flow_model import DEFAULT_WEIGHTS_DIR, load_default_flow_model
    from earthsynth.refine.flow_train import FlowTrainConfig, world_pairs
    assert (DEFAULT_WEIGHTS_DIR / "model.safetensors").stat().st_size <= 6 * 2**20
    model = load_default_flow_model()
    assert next(model.parameters()).dtype == torch.float32 and 2_000_000 < model.num_parameters() < 3_000_000
    meta = json.loads((DEFAULT_WEIGHTS_DIR / "config.json").read_text())
    assert meta["training"]["val_world_seed"] == FlowTrainConfig().val_world_seed == 100
    assert 100 not in meta["training"]["train_world_seeds"]        # the pairs below were never trained on
    # the first two held-out pairs of the validation set (world 100, views seeded by it)
    degraded, clean = (torch.from_numpy(a).float() / 255.0 for a in world_pairs(100, 2, 128))
    refined = FlowEditRefiner(model, FlowEditConfig()).refine(degraded, seed=0)
    before, after = image_statistics(degraded, clean, kid=False), image_statistics(refined, clean, kid=False)
    # RECIPE.md, 32 held-out pairs: sharpness ratio to clean 0.58 -> 0.81, gradient-distribution W1 30 -> 20,
    # PSNR 24.6 -> 23.9 dB, SSIM 0.75 -> 0.69 (generative texture is not the clean pixels)
    assert abs(1.0 - after["sharpness_ratio"]) < 0.75 * abs(1.0 - before["sharpness_ratio"]), (before, after)
    assert after["gradient_w1_x1000"] < 0.85 * before["gradient_w1_x1000"], (before, after)
    assert after["psnr"] > before["psnr"] - 3.0 and after["ssim"] > 0.5, (before, after)


# ---------------------------------------------------------------------------------------------------------------
# a user's diffusers img2img pipeline from a local folder
# ---------------------------------------------------------------------------------------------------------------

def _tiny_sd_img2img(folder):
    """A randomly initialised StableDiffusionImg2ImgPipeline a few kB large (diffusers' own tests build the same
    kind of dummy components), with a CLIP tokenizer over a hand-written vocabulary: nothing is downloaded."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8,
                                norm_num_groups=2, attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=2)
    text_encoder = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=8,
                                                intermediate_size=16, num_attention_heads=2, num_hidden_layers=1,
                                                vocab_size=64, projection_dim=8))
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz"):
        vocab[ch], vocab[ch + "</w>"] = 3 + i, 30 + i
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(folder / "pipe")
    return folder / "pipe"


def test_diffusers_img2img_refiner_runs_a_local_pipeline(tmp_path):
    pytest.importorskip("transformers", reason="text-conditioned diffusers pipelines need transformers")
    from earthsynth.refine.diffusers_refiner import DiffusersImg2ImgRefiner
    path = _tiny_sd_img2img(tmp_path)
    refiner = DiffusersImg2ImgRefiner(path, strength=0.5, num_inference_steps=4, prompt="clear city")
    refiner.pipe.set_progress_bar_config(disable=True)
    assert isinstance(refiner, Refiner) and refiner.multiple == 4     # VAE x2, UNet x2
    x = _images(3, 18, 23, seed=2).double()
    a, b = refiner.refine(x, seed=4, batch_size=2), refiner.refine(x, seed=4)
    assert a.shape == x.shape and a.dtype == torch.float64
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, refiner.refine(x, seed=5), atol=1e-3)


def test_diffusers_refiner_rejects_bad_folders(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from earthsynth.refine.diffusers_refiner import DiffusersImg2ImgRefiner
    with pytest.raises(InputFileError, match="no diffusers pipeline folder"):
        DiffusersImg2ImgRefiner(tmp_path / "missing")
    with pytest.raises(InputFileError, match="model_index.json"):
        DiffusersImg2ImgRefiner(tmp_path)
    unet = UNet2DModel(sample_size=8, block_out_channels=(4, 8), norm_num_groups=2, layers_per_block=1,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "ddpm")
    with pytest.raises(InputFileError, match="not an image-to-image pipeline"):
        DiffusersImg2ImgRefiner(tmp_path / "ddpm")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model_index.json").write_text("{not json")
    with pytest.raises(InputFileError):
        DiffusersImg2ImgRefiner(tmp_path / "broken")
    with pytest.raises(ConfigError):
        DiffusersImg2ImgRefiner(tmp_path / "ddpm", strength=0.0)
