"""Data-engine mode: labelled tiles -> regenerated variants + labels.csv, resumable and seeded."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.generate.augment import augment_folder, downsample4
from earthsynth.generate.config import DenoiserConfig
from earthsynth.generate.model import MetaEarthDenoiser


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # timings stay sane on 2 cores


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MetaEarthDenoiser(DenoiserConfig.tiny()).eval()


@pytest.fixture
def tiles(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "tiles"
    for label, size in (("forest", (16, 16)), ("desert", (18, 14))):   # 18 x 14: not a multiple of 4
        (src / label).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(src / label / "a.png")
    (src / "notes.txt").write_text("ignored")
    return src


def test_variants_labels_resume_and_seeds(model, tiles, tmp_path):
    out = tmp_path / "out"
    result = augment_folder(model, tiles, out, variants=2, seed=0, steps=1)
    assert (result.tiles, result.written, result.skipped) == (2, 4, 0)
    v0 = np.asarray(Image.open(out / "forest" / "a_v0.png"))
    v1 = np.asarray(Image.open(out / "forest" / "a_v1.png"))
    assert v0.shape == (16, 16, 3) and not np.array_equal(v0, v1)             # variants differ
    assert np.asarray(Image.open(out / "desert" / "a_v1.png")).shape == (18, 14, 3)   # original size kept
    with open(out / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["path"], r["label"], r["variant"]) for r in rows] == [
        ("desert/a_v0.png", "desert", "0"), ("desert/a_v1.png", "desert", "1"),
        ("forest/a_v0.png", "forest", "0"), ("forest/a_v1.png", "forest", "1")]
    (out / "forest" / "a_v1.png").unlink()                                     # a killed run: one file missing
    again = augment_folder(model, tiles, out, variants=2, seed=0, steps=1)
    assert (again.written, again.skipped) == (1, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "forest" / "a_v1.png")), v1)   # same seed, same bytes


def test_downsample_and_errors(model, tmp_path):
    image = np.arange(2 * 8 * 3, dtype=np.float32).reshape(2, 8, 3)
    small = downsample4(image)
    assert small.shape == (1, 2, 3)
    np.testing.assert_allclose(small[0, 0], image[:2, :4].mean(axis=(0, 1)))
    with pytest.raises(InputFileError, match="no such folder"):
        augment_folder(model, tmp_path / "missing", tmp_path / "o")
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(InputFileError, match="no labelled tiles"):
        augment_folder(model, tmp_path / "empty", tmp_path / "o")
    with pytest.raises(ConfigError, match="variants"):
        augment_folder(model, tmp_path / "empty", tmp_path / "o", variants=0)
