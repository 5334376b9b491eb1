"""The one-step restorer (refine/restorer*.py): the Refiner contract, training, exact resume, shipped weights."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from earthsynth.errors import ConfigError, EarthsynthError, InputFileError
from earthsynth.refine.base import Refiner
from earthsynth.refine.restorer import (DEFAULT_WEIGHTS_DIR, Restorer, RestorerConfig, RestorerNet,
                                        load_default_restorer)
from earthsynth.refine.restorer_data import AugmentConfig, PairDataConfig, PairSet, gaussian_blur
from earthsynth.refine.restorer_export import export_restorer
from earthsynth.refine.restorer_losses import RandomFeatureLoss, charbonnier
from earthsynth.refine.restorer_train import RestorerTrainConfig, evaluate_pairs, learning_rate_at, train

# A world no restorer run used (training seeds 0-7, validation 1000): pairs for the training tests.
HELD_OUT_SEED, HELD_OUT_SIZE_M, HELD_OUT_PAIRS = 4242, 100.0, 5
# 8 (reconstruction render, truth render) pairs of a scene the fine-tuning never saw (it trained on worlds 10, 11,
# 13, 14 and validated on 12): the basic texture of `benchmarks/appearance.py --seeds 2 --size 200`, rendered with
# `python -m earthsynth.refine.mesh_pairs RUN --count 8 --seed 0`. Measured (RECIPE.md): the world-pair weights
# 23.69 -> 23.82 dB, SSIM 0.824 -> 0.821 (sharper, not closer); the shipped fine-tuned weights 23.69 -> 24.39 dB,
# SSIM 0.824 -> 0.855. The test asks for a bit less than the shipped gains.
HELD_OUT_MESH_PAIRS = Path(__file__).parent / "data" / "heldout_mesh_pairs.npz"
SHIPPED_MIN_GAIN_DB, SHIPPED_MIN_SSIM_GAIN = 0.5, 0.02


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # timings stay sane on 2 cores


@pytest.fixture(scope="module")
def held_out_pairs() -> PairSet:
    """5 LoD / full-detail pairs at 128 px of a 100 m world that no training run used, seen from 20-60 m (the
    pairs' 60-180 m scaled from a 300 m world to this one, so that the ground fills the views; lower than any
    training view, so the LoD texture is magnified more than the restorer was trained on)."""
    from earthsynth.refine.pairs import PairConfig, pair_views, render_pairs
    from earthsynth.world.build import WorldConfig, build_world
    world = build_world(WorldConfig(seed=HELD_OUT_SEED, size_m=HELD_OUT_SIZE_M))
    config = PairConfig(altitude_m=(20.0, 60.0))
    degraded, clean = render_pairs(world, pair_views(world, HELD_OUT_PAIRS, config, seed=HELD_OUT_SEED), config)
    return PairSet(degraded, clean)


def _random_net(config: RestorerConfig = RestorerConfig.tiny(), seed: int = 0) -> RestorerNet:
    """A net whose output layer is not zero, so that it is not the identity."""
    torch.manual_seed(seed)
    net = RestorerNet(config)
    with torch.no_grad():
        net.conv_out.weight.normal_(0, 0.05)
    return net.eval()


# ---------------------------------------------------------------------------------------------------------------
# the Refiner contract
# ---------------------------------------------------------------------------------------------------------------

def test_untrained_restorer_is_the_identity_and_conforms():
    restorer = Restorer(RestorerNet(RestorerConfig.tiny()))
    assert isinstance(restorer, Refiner) and restorer.name == "restorer"
    images = torch.rand(3, 20, 24, 3)
    assert torch.equal(restorer.refine(images), images)   # zero-initialised output layer: out = x + 0


def test_shape_dtype_device_and_arbitrary_sizes():
    restorer = Restorer(_random_net(RestorerConfig(channels=(8, 16, 32), norm_groups=4)), max_batch=2)
    for shape in [(1, 70, 93, 3), (5, 33, 17, 3), (2, 4, 4, 3)]:
        for dtype in (torch.float32, torch.float64):
            images = torch.rand(shape, dtype=dtype)
            out = restorer.refine(images)
            assert out.shape == images.shape and out.dtype == dtype and out.device == images.device
            assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
            assert not torch.equal(out.float(), images.float())


def test_deterministic_and_batching_does_not_change_the_result():
    net = _random_net()
    images = torch.rand(5, 40, 36, 3)
    a = Restorer(net, max_batch=2).refine(images, seed=0)
    b = Restorer(net, max_batch=2).refine(images, seed=123)      # deterministic: the seed does not matter
    assert torch.equal(a, b)
    one_by_one = torch.cat([Restorer(net, max_batch=1).refine(images[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(one_by_one, a, atol=1e-6, rtol=0)  # GroupNorm is per image


def test_bad_input_raises_config_error():
    restorer = Restorer(RestorerNet(RestorerConfig.tiny()))
    bad = [np.zeros((1, 8, 8, 3), np.float32), torch.zeros(8, 8, 3), torch.zeros(1, 8, 8, 4),
           torch.zeros(1, 8, 8, 3, dtype=torch.uint8), torch.full((1, 8, 8, 3), float("nan")),
           torch.full((1, 8, 8, 3), 1.5), torch.full((1, 8, 8, 3), -0.1), torch.zeros(1, 1, 8, 3)]
    for images in bad:
        with pytest.raises(ConfigError):
            restorer.refine(images)
    with pytest.raises(ConfigError):
        Restorer(RestorerNet(RestorerConfig.tiny()), max_batch=0)
    with pytest.raises(ConfigError):
        RestorerConfig(channels=(12, 24), norm_groups=8)
    assert restorer.refine(torch.zeros(0, 8, 8, 3)).shape == (0, 8, 8, 3)


# ---------------------------------------------------------------------------------------------------------------
# configs, save / load
# ---------------------------------------------------------------------------------------------------------------

def test_config_json_round_trips_and_rejects_unknown_keys():
    config = RestorerConfig(channels=(16, 32, 64), blocks_per_level=1, mid_blocks=0, norm_groups=4)
    assert RestorerConfig.from_json(config.to_json()) == config
    train_config = RestorerTrainConfig.tiny(augment=AugmentConfig(probability=0.5), lr_schedule="cosine")
    assert RestorerTrainConfig.from_dict(json.loads(json.dumps(train_config.to_dict()))) == train_config
    with pytest.raises(ConfigError):
        RestorerConfig.from_dict({"channels": [8, 16], "attention": True})
    with pytest.raises(ConfigError):
        PairDataConfig(val_world_seed=3)   # a training world cannot be the validation world


def test_fingerprint_names_the_weights():
    a, b = Restorer(_random_net(seed=0)), Restorer(_random_net(seed=0))
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64
    with torch.no_grad():
        b.net.conv_out.bias.add_(1e-3)
    assert a.fingerprint() != b.fingerprint()
    assert Restorer(_random_net(seed=1)).fingerprint() != a.fingerprint()


def test_save_load_round_trip(tmp_path):
    net = _random_net()
    images = torch.rand(2, 30, 26, 3)
    expected = Restorer(net).refine(images)
    net.save_pretrained(tmp_path / "f32")
    assert torch.equal(Restorer.from_dir(tmp_path / "f32").refine(images), expected)
    net.save_pretrained(tmp_path / "f16", dtype=torch.float16)
    half = Restorer.from_dir(tmp_path / "f16")
    assert next(half.net.parameters()).dtype == torch.float32
    torch.testing.assert_close(half.refine(images), expected, atol=2e-3, rtol=0)


def test_missing_or_corrupt_weights_raise_input_file_error(tmp_path):
    with pytest.raises(InputFileError):
        Restorer.from_dir(tmp_path / "nothing")
    _random_net().save_pretrained(tmp_path / "w")
    (tmp_path / "w" / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(InputFileError):
        Restorer.from_dir(tmp_path / "w")
    _random_net().save_pretrained(tmp_path / "v")
    (tmp_path / "v" / "config.json").write_text(json.dumps({"format": "earthsynth.RestorerNet",
                                                            "restorer": {"channels": [16, 32]}}))
    with pytest.raises(InputFileError):   # weights of another shape
        Restorer.from_dir(tmp_path / "v")


# ---------------------------------------------------------------------------------------------------------------
# losses, data, schedule
# ---------------------------------------------------------------------------------------------------------------

def test_losses_closed_forms():
    x = torch.rand(2, 3, 16, 16)
    assert math.isclose(float(charbonnier(x, x, eps=1e-3)), 1e-3, rel_tol=1e-5)
    assert math.isclose(float(charbonnier(x, x + 0.3, eps=1e-3)), math.sqrt(0.09 + 1e-6), rel_tol=1e-5)
    rf = RandomFeatureLoss(seed=3)
    assert float(rf(x, x)) == 0.0
    y = gaussian_blur(x, torch.tensor([1.0, 1.0]))
    assert float(rf(y, x)) > 0 and float(RandomFeatureLoss(seed=3)(y, x)) == float(rf(y, x))
    assert float(RandomFeatureLoss(seed=4)(y, x)) != float(rf(y, x))


def test_blur_and_batches():
    flat = torch.full((2, 3, 12, 12), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([0.0, 2.0])), flat)
    x = torch.rand(2, 3, 12, 12)
    assert torch.equal(gaussian_blur(x, torch.tensor([0.0, 0.0])), x)
    rng = np.random.default_rng(0)
    pairs = PairSet(rng.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8),
                    rng.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8))
    a = pairs.batch(0, 7, 3, 32, AugmentConfig(probability=1.0))
    b = pairs.batch(0, 7, 3, 32, AugmentConfig(probability=1.0))
    c = pairs.batch(0, 8, 3, 32, AugmentConfig(probability=1.0))
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not torch.equal(a[1], c[1])
    assert a[0].shape == (3, 3, 32, 32) and float(a[1].max()) <= 1.0
    with pytest.raises(ConfigError):
        pairs.batch(0, 0, 1, 48)


def test_learning_rate_schedule():
    config = RestorerTrainConfig.tiny(learning_rate=1e-3, warmup_steps=10, steps=110, lr_schedule="cosine")
    assert math.isclose(learning_rate_at(config, 0), 1e-4)
    assert math.isclose(learning_rate_at(config, 10), 1e-3)
    assert math.isclose(learning_rate_at(config, 60), 5e-4)
    assert learning_rate_at(config, 110) < 1e-12
    assert learning_rate_at(replace(config, lr_schedule="constant"), 100) == 1e-3


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------

def test_tiny_restorer_overfits_a_few_pairs(tmp_path, held_out_pairs):
    few = PairSet(held_out_pairs.degraded[:3].permute(0, 2, 3, 1).numpy(),
                  held_out_pairs.clean[:3].permute(0, 2, 3, 1).numpy())
    config = RestorerTrainConfig.tiny(model=RestorerConfig(channels=(16, 32), norm_groups=8), steps=40,
                                      checkpoint_every=40, batch_size=3, crop_px=64, learning_rate=3e-3,
                                      augment=AugmentConfig(probability=0.0), ema_decay=0.0)
    result = train(config, tmp_path / "run", pairs=(few, few), progress=False)
    assert np.mean(result.losses[-8:]) < 0.8 * np.mean(result.losses[:8])
    scores = result.history[-1]
    assert scores["psnr_restored"] > scores["psnr_degraded"] + 0.2, scores
    restored = Restorer.from_dir(result.model_dir)
    assert evaluate_pairs(restored.net, *few.all()) == {k: v for k, v in scores.items() if k != "step"}


def test_resume_is_exact(tmp_path, held_out_pairs):
    one = PairSet(held_out_pairs.degraded[:1].permute(0, 2, 3, 1).numpy(),
                  held_out_pairs.clean[:1].permute(0, 2, 3, 1).numpy())
    pairs = (held_out_pairs, one)
    config = RestorerTrainConfig.tiny(crop_px=32, steps=4, checkpoint_every=2)
    straight = train(config, tmp_path / "a", pairs=pairs, progress=False)
    train(replace(config, steps=2), tmp_path / "b", pairs=pairs, progress=False)
    with pytest.raises(ConfigError):   # a folder with checkpoints is only continued on request
        train(config, tmp_path / "b", pairs=pairs, progress=False)
    with pytest.raises(ConfigError):   # ... and only with the same recipe
        train(replace(config, learning_rate=1e-2), tmp_path / "b", pairs=pairs, progress=False, resume=True)
    resumed = train(config, tmp_path / "b", pairs=pairs, progress=False, resume=True)
    assert resumed.losses == straight.losses[2:] and resumed.history == straight.history
    for name in ("model", "ema", "optimizer"):
        a = load_file(str(tmp_path / "a" / "checkpoints" / "step_000004" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "b" / "checkpoints" / "step_000004" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_writes_the_float16_ema(tmp_path, held_out_pairs):
    with pytest.raises(InputFileError):
        export_restorer(tmp_path / "empty", tmp_path / "w")
    one = PairSet(held_out_pairs.degraded[:1].permute(0, 2, 3, 1).numpy(),
                  held_out_pairs.clean[:1].permute(0, 2, 3, 1).numpy())
    train(RestorerTrainConfig.tiny(crop_px=32, steps=2), tmp_path / "run", pairs=(one, one), progress=False)
    summary = export_restorer(tmp_path / "run", tmp_path / "w")
    assert summary["step"] == 2 and summary["validation"]["step"] == 2
    ema = load_file(str(tmp_path / "run" / "checkpoints" / "step_000002" / "ema.safetensors"))
    exported = Restorer.from_dir(tmp_path / "w").net.state_dict()
    assert all(torch.equal(exported[k], ema[k].half().float()) for k in ema)
    assert json.loads((tmp_path / "w" / "config.json").read_text())["training"]["dtype"] == "float16"


# ---------------------------------------------------------------------------------------------------------------
# the shipped weights
# ---------------------------------------------------------------------------------------------------------------

def test_shipped_weights_bring_a_held_out_reconstruction_closer_to_its_truth():
    weights = DEFAULT_WEIGHTS_DIR / "model.safetensors"
    assert weights.stat().st_size <= 4 * 1024 * 1024
    training = json.loads((DEFAULT_WEIGHTS_DIR / "config.json").read_text())["training"]
    assert training["dtype"] == "float16" and training["init_weights"]     # fine-tuned from the world-pair run
    restorer = load_default_restorer()
    assert 1_000_000 <= restorer.net.num_parameters() <= 2_000_000
    with np.load(HELD_OUT_MESH_PAIRS) as npz:
        pairs = PairSet(npz["degraded"], npz["clean"])
    degraded, clean = pairs.all()
    scores = evaluate_pairs(restorer.net, degraded, clean)
    assert scores["psnr_restored"] > scores["psnr_degraded"] + SHIPPED_MIN_GAIN_DB, scores
    assert scores["ssim_restored"] > scores["ssim_degraded"] + SHIPPED_MIN_SSIM_GAIN, scores
    images = degraded.permute(0, 2, 3, 1)
    assert torch.equal(restorer.refine(images), restorer.refine(images))


def test_load_default_restorer_names_the_missing_folder(monkeypatch, tmp_path):
    import earthsynth.refine.restorer as module
    monkeypatch.setattr(module, "DEFAULT_WEIGHTS_DIR", tmp_path / "gone")
    with pytest.raises(EarthsynthError, match="gone"):
        module.load_default_restorer()


def test_training_on_a_device_this_machine_lacks_is_one_clear_error(tmp_path, held_out_pairs):
    config = RestorerTrainConfig.tiny()
    with pytest.raises(ConfigError, match="device 'no-such-device'"):
        train(config, tmp_path / "run", progress=False, pairs=(held_out_pairs, held_out_pairs), device="no-such-device")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda'"):
            train(config, tmp_path / "run", progress=False, pairs=(held_out_pairs, held_out_pairs), device="cuda")
    assert not (tmp_path / "run" / "checkpoints").exists()
