"""The optimisation core shared by the reconstruction stage and the IDU episodes: one Gaussian model, its
appearance model, one Adam per parameter, a densification strategy, and a `step` that renders one target view,
adds the configured regularisers and updates everything (gsplat's simple_trainer order: backward, optimisers,
then the strategy's post-backward densification)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.metrics.image import ssim
from earthsynth.splat.appearance import AppearanceConfig, AppearanceModel
from earthsynth.splat.model import GaussianModel, SplatLRConfig, update_means_lr
from earthsynth.splat.strategy import DensifyPruneStrategy


@dataclass(frozen=True)
class LossWeights:
    dssim: float = 0.2          # Skyfall-GS lambda_D-SSIM (3DGS): (1 - l) L1 + l D-SSIM
    # Skyfall-GS lambda_op = 10 (eq. 2, summed over Gaussians, 30k GPU iterations). Our entropy is the mean over
    # Gaussians, and under Adam a small but steady gradient moves every opacity logit at the full learning rate:
    # at 10, every opacity of the 300 m demo scene sank from the initial 0.1 below the prune threshold within
    # ~100 iterations (median 0.042, 0.018, 0.010, 0.007 at 20, 40, 60, 80) and the model emptied. 0.1 keeps
    # the term a tie-breaker towards binary opacities. 0 switches it off (the IDU stage does).
    opacity: float = 0.1
    depth: float = 0.5          # Skyfall-GS lambda_depth (eq. 3); 0 switches it off


MIN_RESET_EVERY = 1_000   # iterations a reset needs before the next: see scaled_strategy


def scaled_strategy(steps: int, *, seed: int = 0, paper_steps: int = 30_000, **overrides) -> DensifyPruneStrategy:
    """The paper's densification schedule (from 1,000 to 21,000 of 30,000 iterations, every 100, opacity reset
    every 3,000) scaled to a run of `steps` iterations.

    Opacity resets are not scaled below MIN_RESET_EVERY: a reset sets every opacity to 2 * prune_opa, and the
    opacity entropy term (lambda 10) pulls such values down to 0 faster than the colour loss can lift them back,
    so resets a few dozen iterations apart (a 300-step CPU run scaled from 30,000) prune every Gaussian (seen
    on the demo scene: 89k Gaussians at step 50, none at step 100). Short runs thus get no reset at all."""
    f = steps / paper_steps
    base = dict(refine_start_iter=max(1, round(1_000 * f)), refine_stop_iter=max(2, round(21_000 * f)),
                refine_every=max(10, round(100 * f)), reset_every=max(MIN_RESET_EVERY, round(3_000 * f)), seed=seed)
    return DensifyPruneStrategy(**{**base, **overrides})


def opacity_entropy(opacities_n: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Skyfall-GS eq. 2, averaged over the Gaussians (the paper sums; the mean keeps lambda_op = 10 meaningful
    whatever the number of Gaussians)."""
    o = opacities_n.clamp(eps, 1.0 - eps)
    return -(o * torch.log(o) + (1.0 - o) * torch.log(1.0 - o)).mean()


def colour_loss(render_hw3: torch.Tensor, target_hw3: torch.Tensor, dssim_weight: float) -> torch.Tensor:
    l1 = (render_hw3 - target_hw3).abs().mean()
    if dssim_weight <= 0:
        return l1
    return (1.0 - dssim_weight) * l1 + dssim_weight * (1.0 - ssim(render_hw3, target_hw3))


@dataclass
class SplatTrainer:
    model: GaussianModel
    appearance: AppearanceModel | None
    strategy: DensifyPruneStrategy
    scene_scale: float
    lrs: SplatLRConfig = field(default_factory=SplatLRConfig)
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    step: int = 0
    display_image_id: int = 0     # whose appearance renders without an image id (before IDU fixes one)

    def __post_init__(self):
        self.optimizers = self.model.create_optimizers(self.lrs, scene_scale=self.scene_scale)
        if self.appearance is not None:
            self.optimizers.update(self.appearance.create_optimizers(self.lrs))
        self.strategy_state = self.strategy.initialize_state(self.scene_scale)

    @classmethod
    def create(cls, model: GaussianModel, num_images: int, strategy: DensifyPruneStrategy, scene_scale: float, *,
               use_appearance: bool = True, appearance_config: AppearanceConfig = AppearanceConfig(),
               lrs: SplatLRConfig = SplatLRConfig(), seed: int = 0, background=(0.0, 0.0, 0.0)) -> "SplatTrainer":
        appearance = None
        if use_appearance:
            appearance = AppearanceModel(num_images, appearance_config, seed=seed, device=model.device)
            appearance.attach(model, seed=seed)
        return cls(model, appearance, strategy, scene_scale, lrs, tuple(background))

    def render(self, cameras, *, image_ids=None, render_mode: str = "RGB"):
        bg = torch.tensor([self.background] * len(cameras), dtype=torch.float32, device=self.model.device)
        if render_mode.startswith("RGB") and render_mode != "RGB":
            bg = torch.cat([bg, torch.zeros(len(cameras), 1, device=bg.device)], dim=1)
        elif render_mode != "RGB":
            bg = None
        if image_ids is None and self.appearance is not None and not self.appearance.is_fixed:
            image_ids = [self.display_image_id] * len(cameras)
        return self.model.render(cameras, appearance=self.appearance, image_ids=image_ids, backgrounds_c3=bg,
                                 render_mode=render_mode)

    def train_step(self, camera, target_hw3: torch.Tensor, *, image_id: int | None, weights: LossWeights,
                   depth_terms=None) -> dict:
        """One optimisation step on one target view. `depth_terms`: a callable returning the pseudo-camera
        depth loss (or None) for this step. Returns the loss parts."""
        update_means_lr(self.optimizers, self.step, self.lrs, scene_scale=self.scene_scale)
        colors, _, meta = self.render([camera], image_ids=None if image_id is None else [image_id])
        self.strategy.step_pre_backward(self.model.params, self.optimizers, self.strategy_state, self.step, meta)
        parts = {"colour": colour_loss(colors[0], target_hw3, weights.dssim)}
        if weights.opacity > 0:
            parts["opacity"] = weights.opacity * opacity_entropy(self.model.opacities_activated)
        if weights.depth > 0 and depth_terms is not None:
            depth = depth_terms(self)
            if depth is not None:
                parts["depth"] = weights.depth * depth
        total = sum(parts.values())
        if not torch.isfinite(total):
            bad = ", ".join(f"{k} = {float(v.detach())}" for k, v in parts.items())
            raise ConfigError(f"the loss is not finite at iteration {self.step} ({bad}; {self.model.num} "
                              "Gaussians): training stopped before the update, the stage's last saved state is kept",
                              hint="lower the learning rates or the opacity weight, or check the input views")
        total.backward()
        for optimizer in self.optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        counts = self.strategy.step_post_backward(self.model.params, self.optimizers, self.strategy_state,
                                                  self.step, meta)
        bad_tensor = next((k for k, v in self.model.params.items() if not torch.isfinite(v).all()), None)
        if bad_tensor is not None or self.model.num == 0:
            what = f"the parameter '{bad_tensor}' holds NaN / inf" if bad_tensor else "no Gaussian is left"
            raise ConfigError(f"after the update of iteration {self.step} {what}: training stopped, the stage's last "
                              "saved state is kept", hint="lower the learning rates or the pruning thresholds")
        self.step += 1
        return {**{k: float(v.detach()) for k, v in parts.items()}, "total": float(total.detach()), "num": self.model.num,
                **counts}

    # --------------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {"step": self.step, "params": {k: v.detach().cpu() for k, v in self.model.params.items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "appearance": None if self.appearance is None else self.appearance.state_dict(),
                "strategy_state": {k: v for k, v in self.strategy_state.items()}}

    def save(self, path: Path) -> Path:
        from earthsynth.io.atomic import atomic_path
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)
        return path

    def load(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location=self.model.device, weights_only=True)
        except Exception as exc:      # torch raises several types for truncated / foreign files
            raise InputFileError(f"cannot read the splat checkpoint ({exc})", path=path,
                                 hint="delete it to start the stage again") from None
        self.model = GaussianModel({k: v for k, v in state["params"].items()})
        if self.appearance is not None and state["appearance"] is not None:
            self.appearance.load_state_dict(state["appearance"])
        self.optimizers = self.model.create_optimizers(self.lrs, scene_scale=self.scene_scale)
        if self.appearance is not None:
            self.optimizers.update(self.appearance.create_optimizers(self.lrs))
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        self.strategy_state = dict(state["strategy_state"])
        self.step = int(state["step"])
