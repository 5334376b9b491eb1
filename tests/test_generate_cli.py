"""`earthsynth generate ...` sub-app, driven through typer's CliRunner with a tiny model."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from earthsynth.generate.cli import generate_app
from earthsynth.generate.config import DenoiserConfig
from earthsynth.generate.model import MetaEarthDenoiser

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # timings stay sane on 2 cores


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    return MetaEarthDenoiser(DenoiserConfig.tiny()).save_pretrained(tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture
def condition_png(tmp_path):
    path = tmp_path / "pandora.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)).save(path)
    return path


def _text(result) -> str:
    return " ".join(result.output.split())    # rich wraps long messages


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def test_sample_cascade_tiles(model_dir, condition_png, tmp_path):
    _ok(runner.invoke(generate_app, ["sample", str(condition_png), "--condition-m", "16", "--out",
                                     str(tmp_path / "hr.png"), "--model", str(model_dir), "--steps", "1"]))
    assert Image.open(tmp_path / "hr.png").size == (24, 16)
    _ok(runner.invoke(generate_app, ["cascade", str(condition_png), "--input-m", "64", "--stages", "2", "--out",
                                     str(tmp_path / "cas"), "--model", str(model_dir), "--steps", "1"]))
    listing = json.loads((tmp_path / "cas" / "cascade.json").read_text())
    assert [s["m_per_px"] for s in listing["stages"]] == [64.0, 16.0, 4.0]
    assert Image.open(tmp_path / "cas" / "stage_2_4m.png").size == (96, 64)
    _ok(runner.invoke(generate_app, ["tiles", str(condition_png), "--condition-m", "16", "--out",
                                     str(tmp_path / "t.tif"), "--model", str(model_dir), "--steps", "1",
                                     "--no-shared-noise"]))
    from earthsynth.io.raster import raster_info
    info = raster_info(tmp_path / "t.tif")
    assert (info.width, info.height) == (24, 16)


def test_augment_train_and_export(model_dir, tmp_path):
    (tmp_path / "src" / "farm").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "src" / "farm" / "x.png")
    _ok(runner.invoke(generate_app, ["augment", str(tmp_path / "src"), "--out", str(tmp_path / "aug"),
                                     "--variants", "2", "--model", str(model_dir), "--steps", "1"]))
    assert (tmp_path / "aug" / "farm" / "x_v1.png").is_file() and (tmp_path / "aug" / "labels.csv").is_file()
    _ok(runner.invoke(generate_app, ["train", "--out", str(tmp_path / "run"), "--preset", "tiny", "--steps", "2",
                                     "--device", "cpu"]))
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    from safetensors.torch import load_file

    from earthsynth.generate.export_weights import export_weights
    from earthsynth.generate.weights import default_weights_info, load_default_model
    exported = export_weights(tmp_path / "run", tmp_path / "shipped")           # float16 on disk
    assert exported["step"] == 2 and default_weights_info(tmp_path / "shipped")["dtype"] == "float16"
    assert {t.dtype for t in load_file(str(tmp_path / "shipped" / "model.safetensors")).values()} == {torch.float16}
    loaded = load_default_model(directory=tmp_path / "shipped")                  # float32 in memory
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}


def test_user_errors_exit_2(model_dir, condition_png, tmp_path, monkeypatch):
    result = runner.invoke(generate_app, ["sample", str(condition_png), "--out", str(tmp_path / "x.png"),
                                          "--model", str(model_dir)])
    assert result.exit_code == 2 and "--condition-m" in _text(result)       # a PNG has no geotransform
    result = runner.invoke(generate_app, ["tiles", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "o.tif"),
                                          "--model", str(model_dir)])
    assert result.exit_code == 2 and "no such image" in _text(result)
    import earthsynth.generate.weights as weights
    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS_DIR", tmp_path / "nowhere")
    result = runner.invoke(generate_app, ["sample", str(condition_png), "--condition-m", "16", "--out",
                                          str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "default MetaEarth weights are not there yet" in _text(result)
    result = runner.invoke(generate_app, ["train", "--out", str(tmp_path / "r"), "--preset", "huge"])
    assert result.exit_code == 2 and "unknown preset" in _text(result)


def test_mosaic_verb(model_dir, condition_png, tmp_path):
    _ok(runner.invoke(generate_app, ["mosaic", str(condition_png), "--input-m", "64", "--stages", "2", "--crop", "0",
                                     "--crop", "12", "--out", str(tmp_path / "mos"), "--model", str(model_dir),
                                     "--steps", "1", "--strength", "0.5", "--preview-px", "20"]))
    listing = json.loads((tmp_path / "mos" / "mosaic.json").read_text())
    assert [(s["width"], s["height"], s["m_per_px"]) for s in listing["stages"]] == [(24, 16, 16.0), (48, 48, 4.0)]
    assert listing["tile"]["strength"] == 0.5 and listing["crops_px"] == [None, 12]
    assert max(Image.open(tmp_path / "mos" / "stage_2_preview.png").size) == 20
    bad = runner.invoke(generate_app, ["mosaic", str(condition_png), "--out", str(tmp_path / "x"), "--model",
                                       str(model_dir)])
    assert bad.exit_code != 0 and "m/px" in _text(bad)
