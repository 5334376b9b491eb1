"""The reconstruction stage of Skyfall-GS: 3D Gaussians fitted to the multi-date satellite views with the colour
loss (L1 + 0.2 D-SSIM), the opacity entropy (lambda_op = 10) and pseudo-camera depth supervision (lambda_depth =
0.5) whose target is the depth of the scene's own surface (MVS points binned to a height field, or the
Z-monotonic mesh); per-image appearance embeddings absorb the dates' radiometry. Every term can be switched off
(the paper's Table 4 ablation)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from earthsynth.errors import ConfigError
from earthsynth.splat.cameras import PseudoCameraConfig, pseudo_cameras
from earthsynth.splat.depth_prior import SurfaceDepth, pearson_depth_loss
from earthsynth.splat.trainer import LossWeights, SplatTrainer

INIT_SOURCES = ("points", "mesh")


@dataclass(frozen=True)
class ReconstructConfig:
    steps: int = 1500                       # Skyfall-GS: 30,000 iterations on a GPU; a CPU budget here
    image_scale: float = 0.5                # satellite views are fitted at this scale (512 px -> 256 px)
    weights: LossWeights = field(default_factory=LossWeights)
    use_appearance: bool = True             # Skyfall-GS: WildGaussians-style appearance modelling
    pseudo: PseudoCameraConfig = field(default_factory=lambda: PseudoCameraConfig(views_per_draw=2, every=10))
    # Skyfall-GS draws 24 pseudo-views every 10 iterations at 1024^2; 2 views of 128^2 keep the CPU budget
    init: str = "points"                    # "points": the `earthsynth dsm` cloud (the paper's SfM points);
                                            # "mesh": points sampled on the Z-monotonic mesh, facades included
    max_init_points: int = 40_000
    sh_degree: int = 1                      # Skyfall-GS: SH up to degree 1
    depth_cell_m: float = 1.0               # height-field cell of the depth target built from points
    seed: int = 0

    def __post_init__(self):
        if self.init not in INIT_SOURCES:
            raise ConfigError(f"init must be one of {INIT_SOURCES}, got {self.init!r}")
        if self.steps < 0 or not 0 < self.image_scale <= 1 or self.max_init_points < 1:
            raise ConfigError("steps must be >= 0, image_scale in (0, 1], max_init_points >= 1")


@dataclass
class SatelliteView:
    name: str
    camera: object
    image_hw3: torch.Tensor     # float32 [0, 1] at the fitted scale


def satellite_training_views(views, image_scale: float) -> list[SatelliteView]:
    """(name, camera, uint8 image) triples -> views resampled to `image_scale` (area averaging)."""
    import torch.nn.functional as F
    out = []
    for name, camera, image in views:
        w, h = max(8, round(camera.width * image_scale)), max(8, round(camera.height * image_scale))
        img = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)[None]
        if (w, h) != (camera.width, camera.height):
            img = F.interpolate(img, size=(h, w), mode="area")
        out.append(SatelliteView(name, camera.resized(w, h), img[0].permute(1, 2, 0).contiguous()))
    return out


def nadir_index(views: list[SatelliteView]) -> int:
    """The view whose optical axis is closest to straight down (its appearance is exported)."""
    return int(np.argmax([-v.camera.rotation[2][2] for v in views]))


def depth_prior_step(surface: SurfaceDepth, scene_size_m: float, ground_z: float, config: ReconstructConfig,
                     total_steps: int):
    """A callable for SplatTrainer.train_step: every `pseudo.every` steps, the mean Pearson depth loss over
    freshly drawn pseudo-cameras (each rendered with a random image's appearance, as the paper does). The draw
    depends only on (seed, step), so a resumed run draws the same cameras."""
    def term(trainer: SplatTrainer):
        if trainer.step % config.pseudo.every:
            return None
        rng = np.random.default_rng([config.seed, 31, trainer.step])
        progress = trainer.step / max(total_steps - 1, 1)
        losses = []
        for camera in pseudo_cameras(progress, scene_size_m, ground_z, config.pseudo, rng=rng):
            image_id = None
            if trainer.appearance is not None and not trainer.appearance.is_fixed:
                image_id = [int(rng.integers(trainer.appearance.num_images))]
            renders, alphas, _ = trainer.render([camera], image_ids=image_id, render_mode="ED")
            target = surface.depth(camera).to(renders.device)
            mask = (alphas[0, ..., 0] > 0.5) & torch.isfinite(target)
            losses.append(pearson_depth_loss(renders[0, ..., 0], target, mask))
        return torch.stack(losses).mean()
    return term


def reconstruct(trainer: SplatTrainer, views: list[SatelliteView], config: ReconstructConfig, *,
                surface: SurfaceDepth | None, scene_size_m: float, ground_z: float, progress: bool = False,
                checkpoint=None, checkpoint_every: int = 250, stop_at: int | None = None) -> list[dict]:
    """Run the satellite stage from `trainer.step` to `config.steps` (or `stop_at`, to stop early; resumable:
    `checkpoint(trainer)` is called every `checkpoint_every` steps). Views and pseudo-cameras are drawn from
    seeds that depend only on the step, so stop + resume == one straight run."""
    depth = None
    if config.weights.depth > 0 and surface is not None:
        depth = depth_prior_step(surface, scene_size_m, ground_z, config, config.steps)
    log = []
    steps = range(trainer.step, config.steps if stop_at is None else min(stop_at, config.steps))
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="splats: satellite stage", initial=trainer.step, total=config.steps)
    for step in steps:
        k = int(np.random.default_rng([config.seed, step, 17]).integers(len(views)))
        parts = trainer.train_step(views[k].camera, views[k].image_hw3, image_id=k if trainer.appearance else None,
                                   weights=config.weights, depth_terms=depth)
        if step % 50 == 0 or step == config.steps - 1:
            log.append({"step": step, **parts})
        if checkpoint is not None and (step + 1) % checkpoint_every == 0:
            checkpoint(trainer)
    return log
