"""The synthesis stage of Skyfall-GS: curriculum Iterative Dataset Update (Algorithm 1, supplementary 0.B.1.5).

Each episode renders the splats from orbit cameras around a grid of look-at points at that episode's elevation
and radius (85 -> 45 degrees: the curriculum falls from the sky towards the ground), refines every render N_s
times with a Refiner (different seeds), then trains on 75 % refined / 25 % satellite views with one fixed
appearance embedding and the opacity regulariser off. Schedules are config (splat/cameras.py), not constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from earthsynth.errors import ConfigError
from earthsynth.refine.base import Refiner
from earthsynth.splat.cameras import CurriculumConfig, episode_cameras
from earthsynth.splat.trainer import LossWeights, SplatTrainer, scaled_strategy


@dataclass(frozen=True)
class IDUConfig:
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    steps_per_episode: int = 300            # Skyfall-GS: 10,000 iterations per episode (GPU)
    samples_per_view: int = 2               # Skyfall-GS: N_s = 2 refinements per view, different seeds
    refined_fraction: float = 0.75          # Skyfall-GS: 75 % refined views, 25 % satellite views
    densify_until: float = 0.9              # Skyfall-GS: densification through 9,000 of 10,000 iterations
    weights: LossWeights = field(default_factory=lambda: LossWeights(opacity=0.0, depth=0.0))  # op. reg. off
    refine_batch: int = 8
    seed: int = 0

    def __post_init__(self):
        if self.steps_per_episode < 0 or self.samples_per_view < 1 or self.refine_batch < 1:
            raise ConfigError("steps_per_episode must be >= 0, samples_per_view and refine_batch >= 1")
        if not 0.0 <= self.refined_fraction <= 1.0 or not 0.0 <= self.densify_until <= 1.0:
            raise ConfigError("refined_fraction and densify_until must be in [0, 1]")


@dataclass
class EpisodeResult:
    episode: int
    elevation_deg: float
    radius_m: float
    cameras: list
    renders_bhw3: torch.Tensor
    refined_nbhw3: torch.Tensor         # (N_s, B, H, W, 3)
    log: list


@torch.no_grad()
def render_views(trainer: SplatTrainer, cameras, *, batch: int = 8) -> torch.Tensor:
    chunks = []
    for i in range(0, len(cameras), batch):
        colors, _, _ = trainer.render(cameras[i:i + batch])
        chunks.append(colors[..., :3].clamp(0.0, 1.0).cpu())
    return torch.cat(chunks)


def refine_renders(refiner: Refiner, renders_bhw3: torch.Tensor, config: IDUConfig, episode: int, *,
                   advance=lambda n: None) -> torch.Tensor:
    """(N_s, B, H, W, 3): each render refined N_s times with seeds that depend on (seed, episode, sample, batch).
    `advance(n)` is called after every batch of n views (progress)."""
    samples = []
    for s in range(config.samples_per_view):
        chunks = []
        for i in range(0, len(renders_bhw3), config.refine_batch):
            batch = renders_bhw3[i:i + config.refine_batch]
            chunks.append(refiner.refine(batch, seed=config.seed * 1_000_003 + episode * 10_007 + s * 101 + i))
            advance(len(batch))
        samples.append(torch.cat(chunks).clamp(0.0, 1.0))
    return torch.stack(samples)


def train_episode(trainer: SplatTrainer, cameras, refined_nbhw3: torch.Tensor, satellite_views, config: IDUConfig,
                  episode: int, *, advance=lambda n: None) -> list[dict]:
    """`steps_per_episode` steps: a refined target with probability `refined_fraction` (a random camera, a random
    one of its N_s samples), else a satellite view; densification for the first `densify_until` of them."""
    start, steps = trainer.step, config.steps_per_episode
    trainer.strategy = scaled_strategy(steps, seed=config.seed + episode, paper_steps=10_000,
                                       refine_start_iter=start + 1,
                                       refine_stop_iter=start + max(2, int(config.densify_until * steps)))
    trainer.strategy_state = trainer.strategy.initialize_state(trainer.scene_scale)
    log = []
    for k in range(steps):
        rng = np.random.default_rng([config.seed, episode, k, 23])
        if rng.random() < config.refined_fraction or not satellite_views:
            i, s = int(rng.integers(len(cameras))), int(rng.integers(refined_nbhw3.shape[0]))
            camera, target = cameras[i], refined_nbhw3[s, i]
        else:
            view = satellite_views[int(rng.integers(len(satellite_views)))]
            camera, target = view.camera, view.image_hw3
        parts = trainer.train_step(camera, target.to(trainer.model.device), image_id=None, weights=config.weights)
        if k % 50 == 0 or k == steps - 1:
            log.append({"step": trainer.step - 1, **parts})
        advance(1)
    return log


def run_episode(trainer: SplatTrainer, refiner: Refiner, satellite_views, config: IDUConfig, episode: int, *,
                scene_size_m: float, ground_z: float, progress: bool = False) -> EpisodeResult:
    """One episode; with `progress`, one bar per phase (refining the renders is the long one on a CPU)."""
    from tqdm.auto import tqdm

    if trainer.appearance is not None and not trainer.appearance.is_fixed:
        trainer.appearance.fix_embedding(seed=config.seed)   # Skyfall-GS: one random embedding, fixed for IDU
    cameras = episode_cameras(episode, scene_size_m, ground_z, config.curriculum, seed=config.seed)
    renders = render_views(trainer, cameras)
    with tqdm(total=len(cameras) * config.samples_per_view, desc=f"IDU episode {episode}: refine views",
              unit="view", disable=not progress) as bar:
        refined = refine_renders(refiner, renders, config, episode, advance=bar.update)
    with tqdm(total=config.steps_per_episode, desc=f"IDU episode {episode}: train", disable=not progress) as bar:
        log = train_episode(trainer, cameras, refined, satellite_views, config, episode, advance=bar.update)
    return EpisodeResult(episode, config.curriculum.elevation(episode),
                         config.curriculum.radius(episode, scene_size_m), cameras, renders, refined, log)


def visible_fraction(trainer: SplatTrainer, cameras) -> torch.Tensor:
    """(N,) bool: Gaussians that contribute to at least one pixel of any of `cameras` (the gradient of the
    rendered alpha w.r.t. a per-Gaussian opacity factor is non-zero) - the coverage of supplementary 0.D.0.6."""
    from earthsynth.render.splat import rasterize_gaussians
    model = trainer.model
    seen = torch.zeros(model.num, dtype=torch.bool)
    for camera in cameras:
        factor = torch.ones(model.num, requires_grad=True)
        from earthsynth.splat.model import cameras_to_tensors
        viewmats, ks, w, h = cameras_to_tensors([camera], device=model.device)
        _, alphas, _ = rasterize_gaussians(model.means.detach(), model.quats.detach(),
                                           model.scales_activated.detach(),
                                           model.opacities_activated.detach() * factor,
                                           torch.zeros(model.num, 3), viewmats, ks, w, h)
        alphas.sum().backward()
        seen |= factor.grad.abs() > 0
    return seen
