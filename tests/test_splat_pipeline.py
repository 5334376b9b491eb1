"""`earthsynth splat` end to end on a tiny synthetic scene: satellite stage, IDU episodes, exports, metrics."""

import json

import numpy as np
import pytest
import torch
from conftest import HalfwayToGrey

from earthsynth.errors import EarthsynthError

pytestmark = pytest.mark.slow


def tiny_config(**recon):
    from earthsynth.splat.cameras import CurriculumConfig, PseudoCameraConfig
    from earthsynth.splat.idu import IDUConfig
    from earthsynth.splat.pipeline import SplatPipelineConfig
    from earthsynth.splat.reconstruct import ReconstructConfig

    reconstruct = ReconstructConfig(steps=12, image_scale=0.25, max_init_points=3000,
                                    pseudo=PseudoCameraConfig(views_per_draw=1, every=4, size_px=32), **recon)
    idu = IDUConfig(curriculum=CurriculumConfig(episodes=2, look_at_grid=(1, 1), views_per_point=2, size_px=32),
                    steps_per_episode=6)
    return SplatPipelineConfig(reconstruct=reconstruct, idu=idu, flythrough_frames=4, flythrough_px=32)


def test_splat_pipeline_end_to_end(tiny_scene, tiny_scene_points, tmp_path):
    from earthsynth.io.splats import read_splats_ply
    from earthsynth.splat.pipeline import run_splat

    out = tmp_path / "splats"
    metrics = run_splat(tiny_scene, out, tiny_config(), points_path=tiny_scene_points, refiner=HalfwayToGrey(),
                        progress=False, log=lambda _: None)
    for rel in ("reconstruct/splats.ply", "reconstruct/state.pt", "idu/episode_0/refined.png",
                "idu/episode_1/episode.json", "splats.ply", "flythrough.mp4", "coverage.json", "metrics.json"):
        assert (out / rel).is_file(), rel
    splats = read_splats_ply(out / "splats.ply")
    assert splats.num == metrics["num_gaussians"] > 0 and splats.sh_degree == 1
    episodes = [json.loads((out / f"idu/episode_{e}/episode.json").read_text()) for e in range(2)]
    assert [e["elevation_deg"] for e in episodes] == [85.0, 45.0]      # the curriculum falls from 85 to 45
    coverage = metrics["coverage"]["coverage"]
    assert len(coverage) == 2 and 0.0 < coverage[0] <= coverage[1] <= 1.0
    for stage in ("reconstruct", "idu"):
        assert np.isfinite(metrics[stage]["views"]["psnr"])
        assert 0.0 < metrics[stage]["dsm"]["completeness"] <= 1.0
    # a re-run resumes from the stage states instead of training again
    again = run_splat(tiny_scene, out, tiny_config(), points_path=tiny_scene_points, refiner=HalfwayToGrey(),
                      progress=False, log=lambda _: None)
    assert again["num_gaussians"] == metrics["num_gaussians"]


def test_reconstruct_resume_is_exact(tiny_scene, tiny_scene_points, tmp_path):
    """Stopping at a checkpoint and resuming gives the same Gaussians as one straight run."""
    from earthsynth.io.scene import load_scene
    from earthsynth.io.scene_views import satellite_views
    from earthsynth.splat.pipeline import initial_model, surface_for_depth
    from earthsynth.splat.reconstruct import reconstruct, satellite_training_views
    from earthsynth.splat.trainer import SplatTrainer, scaled_strategy

    config = tiny_config().reconstruct
    scene = load_scene(tiny_scene)
    views = satellite_training_views(satellite_views(scene), config.image_scale)

    def fresh():
        model, source = initial_model(config, points_path=tiny_scene_points, mesh_path=None)
        trainer = SplatTrainer.create(model, len(views), scaled_strategy(config.steps), 40.0)
        return trainer, surface_for_depth(source, scene.bounds_enu, 2.0)

    straight, surface = fresh()
    reconstruct(straight, views, config, surface=surface, scene_size_m=80.0, ground_z=0.0)
    half, _ = fresh()
    reconstruct(half, views, config, surface=surface, scene_size_m=80.0, ground_z=0.0, stop_at=6)
    half.save(tmp_path / "state.pt")
    resumed, _ = fresh()
    resumed.load(tmp_path / "state.pt")
    reconstruct(resumed, views, config, surface=surface, scene_size_m=80.0, ground_z=0.0)
    for key in ("means", "scales", "opacities", "sh0"):
        assert torch.equal(straight.model.params[key], resumed.model.params[key]), key


def test_splat_pipeline_bad_inputs(tiny_scene, tmp_path):
    from earthsynth.splat.pipeline import run_splat

    with pytest.raises(EarthsynthError, match="earthsynth dsm"):
        run_splat(tiny_scene, tmp_path / "a", tiny_config(), points_path=tmp_path / "missing.ply", progress=False)
    with pytest.raises(EarthsynthError, match="earthsynth mesh"):
        run_splat(tiny_scene, tmp_path / "b", tiny_config(init="mesh"), progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_short_runs_keep_their_gaussians_and_nan_stops_training(tiny_scene, tiny_scene_points):
    """A 300-step run scaled from the paper's schedule once reset opacities every 50 steps and the entropy term
    pruned every Gaussian, then trained on NaN; now short runs get no reset, and a bad update stops training."""
    from earthsynth.errors import ConfigError
    from earthsynth.io.scene import load_scene
    from earthsynth.io.scene_views import satellite_views
    from earthsynth.splat.pipeline import initial_model
    from earthsynth.splat.reconstruct import satellite_training_views
    from earthsynth.splat.trainer import MIN_RESET_EVERY, LossWeights, SplatTrainer, scaled_strategy

    assert scaled_strategy(300).reset_every >= MIN_RESET_EVERY > 300
    assert scaled_strategy(30_000).reset_every == 3_000          # the paper's schedule is untouched
    config = tiny_config().reconstruct
    views = satellite_training_views(satellite_views(load_scene(tiny_scene)), config.image_scale)
    model, _ = initial_model(config, points_path=tiny_scene_points, mesh_path=None)
    trainer = SplatTrainer.create(model, len(views), scaled_strategy(300), 40.0)
    trainer.train_step(views[0].camera, views[0].image_hw3, image_id=0, weights=LossWeights())
    with torch.no_grad():
        trainer.model.params["scales"][:3] = float("nan")
    with pytest.raises(ConfigError, match="iteration 1.*not finite|iteration 1.*NaN"):
        trainer.train_step(views[0].camera, views[0].image_hw3, image_id=0, weights=LossWeights())
