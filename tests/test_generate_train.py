"""MetaEarth training: data triples, P2 loss, checkpoints, resume, multi-process accelerate."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.generate.config import DenoiserConfig
from earthsynth.generate.data import (ImageSource, LandscapeSource, TripletDataset, procedural_source,
                                      raster_gsd_m, real_sources)
from earthsynth.generate.model import MetaEarthDenoiser
from earthsynth.generate.schedule import ddpm_scheduler, p2_weights
from earthsynth.generate.train import DataConfig, TrainConfig, draw_noise, find_checkpoint, p2_loss, train

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # timings stay sane on 2 cores


def _tiny_config(**changes) -> TrainConfig:
    base = TrainConfig(model=DenoiserConfig.tiny(), steps=4, batch_size=2, gradient_accumulation_steps=2,
                       learning_rate=1e-3, ema_decay=0.99, checkpoint_every=2,
                       data=DataConfig(sources=("procedural",), zoom_factors=(1, 2)))
    return dataclasses.replace(base, **changes)


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------

def test_batches_are_a_function_of_seed_and_step():
    ds = TripletDataset([procedural_source(0), procedural_source(1, gsd_m=8.0)], crop_px=16)
    a, b = ds.batch(5, 3, 8), ds.batch(5, 3, 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["hr"].shape == (8, 3, 16, 16) and a["lr"].shape == (8, 3, 4, 4)
    assert len(set(a["resolution_m"].tolist())) > 1            # several resolution levels in one batch
    assert set(a["resolution_m"].tolist()) <= {2.0, 4.0, 8.0, 16.0, 32.0}
    assert not torch.equal(a["hr"], ds.batch(5, 4, 8)["hr"])
    assert not torch.equal(a["hr"], ds.batch(5, 3, 8, rank=1)["hr"])
    assert not torch.equal(a["hr"], ds.batch(5, 3, 8, micro=1)["hr"])


def test_image_source_levels_and_zoom():
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 255
    src = ImageSource("halves", lambda: (img, 1.5), zoom_factors=(1, 2, 4, 8))
    assert src.levels(16) == (1.5, 3.0, 6.0)   # x8 would need a 128 px image
    crop = src.crop(torch.Generator().manual_seed(0), 16, 6.0)
    assert crop.shape == (16, 16, 3) and crop.dtype == np.float32
    assert crop[:, :8].max() == 0 and crop[:, 8:].min() == 1   # area average of the full image
    with pytest.raises(ConfigError, match="GSD"):
        ImageSource("bad", lambda: (img, -1.0)).levels(16)


def test_crops_avoid_nodata():
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 24:] = 200
    valid = img[..., 0] > 0                                 # the left strip is nodata
    masked = ImageSource("masked", lambda: (img, 1.0, valid), zoom_factors=(1,))
    plain = ImageSource("plain", lambda: (img, 1.0), zoom_factors=(1,))
    clean_masked = sum(masked.crop(torch.Generator().manual_seed(s), 16, 1.0).min() > 0 for s in range(10))
    clean_plain = sum(plain.crop(torch.Generator().manual_seed(s), 16, 1.0).min() > 0 for s in range(10))
    assert clean_masked == 10 and clean_plain < 10


def test_landscape_source():
    src = LandscapeSource(3, gsd_levels_m=(4.0, 16.0))
    ds = TripletDataset([src], crop_px=16)
    batch = ds.batch(0, 0, 2)
    assert set(batch["resolution_m"].tolist()) <= {4.0, 16.0}
    assert batch["hr"].min() >= 0 and batch["hr"].max() <= 1 and batch["hr"].std() > 0


def test_real_sources_carry_their_true_gsd(real_data):
    sources = real_sources(real_data, zoom_factors=(1,))
    gsd = {s.name.split(":")[0]: s.levels(64)[0] for s in sources}
    assert gsd["naip"] == pytest.approx(5.0)
    assert gsd["rasterio_rgb"] == pytest.approx(300.0, rel=1e-3)
    assert 85 < gsd["landsat"] < 95         # EPSG:4326 pixels of 0.00081 deg at 8.4 S
    assert gsd["jax"] == 0.3 and gsd["pleiades"] == 0.5   # RPC-only images: stated GSDs
    pleiades = next(s for s in sources if s.name.startswith("pleiades"))
    crop = pleiades.crop(torch.Generator().manual_seed(0), 32, 0.5)
    assert crop.shape == (32, 32, 3) and np.array_equal(crop[..., 0], crop[..., 2])  # panchromatic -> RGB
    with pytest.raises(InputFileError, match="GSD is unknown"):
        raster_gsd_m(real_data / "s2p_pair_reunion" / "img_01.tif")


def test_missing_real_data_is_a_clear_error(tmp_path):
    with pytest.raises(InputFileError, match="real data folder not found"):
        real_sources(tmp_path / "absent")
    with pytest.raises(InputFileError, match="no \\*.tif files"):
        real_sources(tmp_path, names=("naip",))
    with pytest.raises(ConfigError, match="unknown real dataset"):
        real_sources(tmp_path, names=("modis",))


# ---------------------------------------------------------------------------------------------------------------
# loss and training
# ---------------------------------------------------------------------------------------------------------------

def test_a_few_steps_decrease_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = MetaEarthDenoiser(DenoiserConfig.tiny())
    batch = TripletDataset([procedural_source(0)], crop_px=16).batch(0, 0, 4)
    noise, _ = draw_noise(0, 0, 0, 0, batch["hr"].shape, 1000)
    t = torch.tensor([100, 400, 700, 950])
    scheduler, weights = ddpm_scheduler(), p2_weights()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = p2_loss(model, batch, noise, t, scheduler, weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_train_checkpoints_and_resume_give_identical_weights(tmp_path):
    config = _tiny_config()
    whole = train(config, tmp_path / "whole", device="cpu", progress=False)
    assert whole.step == 4 and len(whole.losses) == 4 and all(np.isfinite(whole.losses))
    # the same run stopped after 2 steps, then resumed to 4
    first = train(dataclasses.replace(config, steps=2), tmp_path / "split", device="cpu", progress=False)
    assert first.step == 2
    (tmp_path / "split" / "checkpoints" / ".earthsynth-tmp-step_000004-dead").mkdir()  # a killed write
    second = train(config, tmp_path / "split", device="cpu", progress=False)
    assert second.step == 4 and second.losses == whole.losses[2:]
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a = (tmp_path / "whole" / "checkpoints" / "step_000004" / name).read_bytes()
        b = (tmp_path / "split" / "checkpoints" / "step_000004" / name).read_bytes()
        assert a == b, name
    assert (tmp_path / "split" / "checkpoints" / "latest").read_text().strip() == "step_000004"
    assert not list((tmp_path / "split" / "checkpoints").glob(".earthsynth-tmp-*"))   # cleaned on resume
    final = MetaEarthDenoiser.from_pretrained(whole.model_dir)
    assert final.config == config.model
    # nothing left to do: a finished run resumes to the same step without training
    again = train(config, tmp_path / "whole", device="cpu", progress=False)
    assert again.step == 4 and again.losses == []


def test_resume_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    config = _tiny_config(steps=2, checkpoint_every=1, keep_checkpoints=3)
    train(config, tmp_path, device="cpu", progress=False)
    ckpts = tmp_path / "checkpoints"
    assert find_checkpoint(tmp_path).name == "step_000002"
    (ckpts / "latest").write_text("step_000099\n")        # points nowhere
    (ckpts / "step_000003").mkdir()                      # no state.json: incomplete
    assert find_checkpoint(tmp_path).name == "step_000002"


def test_resume_refuses_a_different_run(tmp_path):
    train(_tiny_config(steps=1, checkpoint_every=1), tmp_path, device="cpu", progress=False)
    with pytest.raises(ConfigError, match="learning_rate"):
        train(_tiny_config(steps=2, learning_rate=5e-4), tmp_path, device="cpu", progress=False)


def test_train_config_presets_and_json():
    paper = TrainConfig.paper()
    assert paper.learning_rate == 2e-6 and paper.batch_size == 1 and paper.gradient_accumulation_steps == 8
    assert paper.model == DenoiserConfig.paper() and paper.schedule.beta_end == 0.0155
    assert paper.p2_k == 1.0 and paper.p2_gamma == 1.0
    for config in (paper, TrainConfig.cpu_default(), _tiny_config()):
        assert TrainConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="data.sources"):
        DataConfig(sources=("internet",))


@pytest.mark.slow
def test_two_process_accelerate_launch(tmp_path):
    config = _tiny_config(steps=2, batch_size=1, gradient_accumulation_steps=1)
    (tmp_path / "c.json").write_text(config.to_json())
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="1")
    # accelerate's --cpu flag means "one plain process"; --multi_gpu is its torchrun launcher, which on CPUs
    # (ACCELERATE_USE_CPU=1, or a machine without accelerator) gives gloo data parallelism
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "earthsynth.generate.train", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["step"] == 2 and summary["num_processes"] == 2 and np.isfinite(summary["last_loss"])
    assert (tmp_path / "run" / "checkpoints" / "step_000002" / "model.safetensors").is_file()
    MetaEarthDenoiser.from_pretrained(tmp_path / "run" / "model")
