"""Fine-tuning the restorer on the pipeline's own reconstructions (refine/mesh_pairs.py, restorer_finetune.py):
cameras, aligned pairs, the cache, starting from trained weights, exporting the best checkpoint."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from earthsynth.errors import ConfigError, InputFileError, SceneError
from earthsynth.refine import mesh_pairs
from earthsynth.refine.mesh_pairs import (MeshPairConfig, MeshPairDataConfig, build_mesh_pair_cache, pair_cameras,
                                          render_run_pairs)
from earthsynth.refine.pairs import SKY_RGB
from earthsynth.refine.restorer import RestorerConfig, RestorerNet
from earthsynth.refine.restorer_data import PairSet
from earthsynth.refine.restorer_export import export_restorer
from earthsynth.refine.restorer_train import RestorerTrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = MeshPairConfig(views_per_run=3, val_views_per_run=2, size_px=48, altitude_m=(30.0, 50.0))


@pytest.fixture(scope="module")
def truth_run(tiny_scene, tmp_path_factory):
    """A stand-in `earthsynth mesh` run folder of the tiny scene whose "reconstruction" is the truth mesh itself:
    the pair's two sides then differ only by the lighting and the sampling, so alignment can be checked."""
    run = tmp_path_factory.mktemp("truth_run") / "run"
    (run / "texture").mkdir(parents=True)
    shutil.copyfile(tiny_scene / "truth" / "mesh.glb", run / "texture" / "mesh.glb")
    (run / "config.json").write_text(json.dumps({"scene": str(tiny_scene)}))
    return run


def test_pair_cameras_are_seeded_and_fly_like_the_uav_path():
    config = MeshPairConfig(altitude_m=(70.0, 170.0), pitch_deg=(40.0, 60.0), margin_frac=0.2)
    cams = pair_cameras((-100, -50, 100, 50), 4.0, config, count=50, seed=3)
    again = pair_cameras((-100, -50, 100, 50), 4.0, config, count=50, seed=3)
    other = pair_cameras((-100, -50, 100, 50), 4.0, config, count=50, seed=4)
    assert len(cams) == 50
    assert all(np.array_equal(a.center, b.center) for a, b in zip(cams, again))
    assert not all(np.array_equal(a.center, b.center) for a, b in zip(cams, other))
    centres = np.array([c.center for c in cams])
    assert centres[:, 2].min() >= 74.0 and centres[:, 2].max() <= 174.0
    assert np.abs(centres[:, 0]).max() <= 60.0 and np.abs(centres[:, 1]).max() <= 30.0   # 20 % margins
    pitch = np.degrees(np.arcsin(-np.array([c.rotation[2][2] for c in cams])))
    assert pitch.min() >= 40.0 - 1e-9 and pitch.max() <= 60.0 + 1e-9
    headings = np.degrees(np.arctan2(*np.array([c.rotation[2][:2] for c in cams]).T)) % 360
    assert np.ptp(headings) > 180.0                     # all around, not one direction


def test_pairs_are_aligned_views_of_the_run_and_of_the_truth(truth_run):
    degraded, clean = render_run_pairs(truth_run, SMALL, count=3, seed=0)
    assert degraded.shape == clean.shape == (3, 48, 48, 3) and degraded.dtype == clean.dtype == np.uint8
    again, _ = render_run_pairs(truth_run, SMALL, count=3, seed=0)
    assert np.array_equal(degraded, again)
    sky = np.round(np.array(SKY_RGB) * 255).astype(np.uint8)
    sky_d, sky_c = (np.all(x == sky, axis=-1) for x in (degraded, clean))
    assert 0.05 < (~sky_d).mean()                       # the views see the scene
    # same geometry seen from the same camera: the coverage agrees up to the anti-aliased rim of the truth render
    assert (sky_d != sky_c).mean() < 0.03
    assert not np.array_equal(degraded, clean)          # unlit reconstruction vs the truth under the truth sun


def test_cache_round_trip_resume_and_bad_runs(truth_run, tmp_path, monkeypatch):
    val_run = tmp_path / "val_run"
    shutil.copytree(truth_run, val_run)
    data = MeshPairDataConfig(train_runs=(str(truth_run),), val_runs=(str(val_run),), pairs=SMALL)
    train_set, val_set = build_mesh_pair_cache(data, tmp_path / "ft", progress=False)
    assert len(train_set) == 3 and len(val_set) == 2
    assert not (tmp_path / "ft" / "mesh_pairs_parts").exists()

    def no_rendering(*args, **kwargs):
        raise AssertionError("a complete cache is read back, not rendered again")
    monkeypatch.setattr(mesh_pairs, "render_run_pairs", no_rendering)
    train_again, _ = build_mesh_pair_cache(data, tmp_path / "ft", progress=False)
    assert torch.equal(train_again.degraded, train_set.degraded) and torch.equal(train_again.clean, train_set.clean)
    with pytest.raises(ConfigError, match="another data config"):
        build_mesh_pair_cache(replace(data, pairs=replace(SMALL, seed=1)), tmp_path / "ft", progress=False)
    monkeypatch.undo()

    with pytest.raises(ConfigError):
        MeshPairDataConfig(train_runs=(str(truth_run),), val_runs=(str(truth_run),))
    with pytest.raises(ConfigError):
        MeshPairDataConfig(train_runs=(), val_runs=(str(val_run),))
    (val_run / "texture" / "mesh.glb").unlink()
    with pytest.raises(InputFileError, match="mesh.glb"):
        render_run_pairs(val_run, SMALL, count=1)
    no_truth = tmp_path / "no_truth"
    shutil.copytree(truth_run, no_truth)
    scene_copy = tmp_path / "scene_without_truth"
    shutil.copytree(json.loads((truth_run / "config.json").read_text())["scene"], scene_copy)
    shutil.rmtree(scene_copy / "truth")
    (no_truth / "config.json").write_text(json.dumps({"scene": str(scene_copy)}))
    with pytest.raises(SceneError, match="truth"):
        render_run_pairs(no_truth, SMALL, count=1)


def _pairs(n=3, size=32, seed=0) -> PairSet:
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    degraded = np.clip(clean.astype(int) + rng.integers(-30, 31, clean.shape), 0, 255).astype(np.uint8)
    return PairSet(degraded, clean)


def test_fine_tuning_starts_from_the_init_weights_and_checks_them(tmp_path):
    torch.manual_seed(5)
    init = RestorerNet(RestorerConfig.tiny())
    with torch.no_grad():
        init.conv_out.weight.normal_(0, 0.05)
    init.save_pretrained(tmp_path / "init")
    pairs = (_pairs(), _pairs(seed=1))
    config = RestorerTrainConfig.tiny(init_weights=str(tmp_path / "init"), steps=2, learning_rate=1e-12,
                                      weight_decay=0.0, ema_decay=0.0)
    train(config, tmp_path / "run", pairs=pairs, progress=False)
    tuned = RestorerNet.from_pretrained(tmp_path / "run" / "model").state_dict()
    start = init.state_dict()
    assert all(torch.allclose(tuned[k], start[k], atol=1e-6) for k in start)
    scratch = RestorerTrainConfig.tiny(steps=2, learning_rate=1e-12, weight_decay=0.0, ema_decay=0.0)
    train(scratch, tmp_path / "scratch", pairs=pairs, progress=False)
    other = RestorerNet.from_pretrained(tmp_path / "scratch" / "model").state_dict()
    assert not torch.allclose(other["conv_out.weight"], start["conv_out.weight"])
    with pytest.raises(ConfigError, match="init_weights"):
        train(replace(config, model=RestorerConfig(channels=(8, 16, 32), norm_groups=4)), tmp_path / "bad",
              pairs=pairs, progress=False)


def test_fine_tune_recipe_round_trips_and_export_picks_the_best_checkpoint(tmp_path):
    recipe = RestorerTrainConfig.mesh_finetune(["runs/a", "runs/b"], ["runs/c"], "earthsynth/weights/restorer")
    assert RestorerTrainConfig.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    assert isinstance(recipe.data, MeshPairDataConfig) and recipe.crop_px <= recipe.data.size_px
    config = RestorerTrainConfig.tiny(steps=4, checkpoint_every=1, keep_checkpoints=4, learning_rate=3e-3)
    result = train(config, tmp_path / "run", pairs=(_pairs(), _pairs(seed=1)), progress=False)
    best = max(result.history, key=lambda h: h["psnr_restored"])
    summary = export_restorer(tmp_path / "run", tmp_path / "w", checkpoint="best")
    assert summary["step"] == best["step"] and summary["validation"] == best
    with pytest.raises(InputFileError):
        export_restorer(tmp_path / "run", tmp_path / "w", checkpoint="step_999999")
