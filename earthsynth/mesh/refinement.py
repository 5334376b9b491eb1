"""Iterative texture refinement (Orbit to Ground): render the textured mesh along simulated UAV paths, restore the
renders with a Refiner, re-optimise the texture against the restored views; two iterations by default (paper).

The restorer was trained on shaded renders over a sky background (refine/pairs.py); the textured mesh carries its
lighting baked in from the satellite images, so its unlit render over the same sky is what the restorer sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from earthsynth.errors import ConfigError
from earthsynth.io.mesh import TexturedMesh
from earthsynth.mesh.texture import LR_SCHEDULES
from earthsynth.mesh.uav_path import UAVPathConfig, uav_cameras
from earthsynth.refine.base import Refiner
from earthsynth.refine.pairs import SKY_RGB
from earthsynth.render.mesh import render_textured


@dataclass(frozen=True)
class RefinementConfig:
    iterations: int = 2                                   # Orbit to Ground: 2 refinement iterations
    uav: UAVPathConfig = field(default_factory=UAVPathConfig)
    texture_steps: int = 60                               # re-optimisation steps per iteration (CPU budget)
    # Sub-pixels per pixel side of the UAV renders AND of the texture re-fit against their restorations: the two
    # must match, or the re-fit bends the texture to make one sampling look like the other (with 2 / 1, an
    # identity "restorer" cost 0.009 SSIM on the demo's truth views).
    supersample: int = 1
    # The re-fit starts at (near) its optimum: at constant lr, Adam's normalised steps turn the tiny residual
    # gradients into +-lr jitter of every texel (identity restorer, demo scene: the re-fit fell from 59 dB to 44
    # dB against its own targets). A cosine decay to 0 lets the texture settle.
    lr_schedule: str = "cosine"
    # The re-fit's Adam lr (None: the texture stage's 0.01). The restored views differ from the renders by a few
    # hundredths (mean |restored - render| 0.013 on the demo), and Adam moves each texel by ~lr per step whatever
    # its gradient, so a large lr mostly adds texel jitter, which costs SSIM. Seed 1 of benchmarks/appearance.py
    # (200 m; basic 19.047 / 0.5802) with the fine-tuned restorer, truth views, PSNR / SSIM: 19.331 / 0.5662 at
    # 0.006, 19.300 / 0.5771 at 0.003, 19.221 / 0.5811 at 0.0015 (the only one that raises both); seeds 0 and 2
    # at 0.0015: +0.22 dB / +0.0050 and +0.38 dB / +0.0057. Supersampling both sides by 2 did not help
    # (19.299 / 0.5735 at 0.003).
    texture_lr: float | None = 0.0015
    batch_size: int = 8                                   # views per refiner call
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.uav, dict):
            object.__setattr__(self, "uav", UAVPathConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                             for k, v in self.uav.items()}))
        if self.iterations < 0 or self.texture_steps < 0 or self.batch_size < 1 or self.supersample < 1:
            raise ConfigError("iterations and texture_steps must be >= 0, batch_size and supersample >= 1")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")


@dataclass
class RefinementResult:
    mesh: TexturedMesh
    iterations: list[dict]          # per iteration: cameras, mean |restored - render|, texture loss log


def render_views(mesh: TexturedMesh, cameras: dict, *, supersample: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Unlit renders (B, H, W, 3) float32 over the sky colour and their coverage (B, H, W)."""
    rgbs, alphas = [], []
    for camera in cameras.values():
        out = render_textured(mesh, camera, supersample=supersample, background=SKY_RGB)
        rgbs.append(out.rgb_hw3)
        alphas.append(out.alpha_hw)
    return torch.stack(rgbs), torch.stack(alphas)


def restore_views(refiner: Refiner, renders_bhw3: torch.Tensor, *, batch_size: int, seed: int) -> torch.Tensor:
    """The refiner applied in batches (each batch seeded from `seed` and its index: reproducible)."""
    chunks = [refiner.refine(renders_bhw3[i:i + batch_size], seed=seed + i)
              for i in range(0, len(renders_bhw3), batch_size)]
    return torch.cat(chunks).clamp(0.0, 1.0)


def refine_texture(mesh: TexturedMesh, refiner: Refiner, *, ground_z: float, bounds_xy, texture_config,
                   config: RefinementConfig = RefinementConfig(), device=None, progress: bool = False,
                   keep_dir: Path | None = None) -> RefinementResult:
    """`config.iterations` rounds of render -> restore -> re-optimise the texture of `mesh` (which must carry
    uvs and a texture). `texture_config` is the texture stage's TextureConfig (its steps are replaced by
    `config.texture_steps` and per-view appearance is switched off: the targets share one look).
    keep_dir: where to save each iteration's render / restored contact sheets (PNG), if given."""
    from earthsynth.mesh.texture import optimize_texture

    if mesh.uvs_n2 is None or mesh.texture_hw3 is None:
        raise ConfigError("iterative refinement needs a textured mesh (run the texture stage first)")
    cameras = uav_cameras(bounds_xy, ground_z, config.uav)
    tex_config = replace(texture_config, steps=config.texture_steps, appearance=False,
                         supersample=config.supersample, lr=config.texture_lr or texture_config.lr)
    history, texture = [], None
    for iteration in range(config.iterations):
        renders, alphas = render_views(mesh, cameras, supersample=config.supersample)
        if iteration == 0:      # a view that sees no mesh (a heading off a small mesh's edge) has nothing to fit
            seen = [k for k in range(len(cameras)) if bool((alphas[k] >= 1.0).any())]
            if not seen:
                raise ConfigError("no UAV view of the refinement sees the mesh",
                                  hint="lower RefinementConfig.uav.altitude_m or check the mesh's bounds")
            names = list(cameras)
            cameras = {names[k]: cameras[names[k]] for k in seen}
            renders, alphas = renders[seen], alphas[seen]
        restored = restore_views(refiner, renders, batch_size=config.batch_size,
                                 seed=config.seed + 1000 * iteration)
        if keep_dir is not None:
            save_contact_sheet(Path(keep_dir) / f"iteration_{iteration}.png", renders, restored)
        # float targets: uint8 rounding alone is a residual that Adam's normalised steps would chase
        targets = [(camera, restored[k].numpy()) for k, camera in enumerate(cameras.values())]
        if texture is None:
            texture = torch.from_numpy(mesh.texture_hw3.astype(np.float32) / 255.0)
        result = optimize_texture(mesh, targets, tex_config, init_texture=texture, device=device, progress=progress,
                                  lr_schedule=config.lr_schedule)
        texture = torch.from_numpy(result.texture_hw3)     # continue in float: no re-quantisation per round
        change = float(((restored - renders).abs().sum(-1) * alphas).sum() / alphas.sum().clamp(min=1) / 3)
        history.append({"iteration": iteration, "views": len(cameras), "mean_abs_restoration": change,
                        "loss": _loss_summary(result)})
        mesh = result.mesh
    return RefinementResult(mesh, history)


def _loss_summary(result) -> dict:
    log = result.loss_log
    return {"first": log[0], "last": log[-1], "report": result.report} if log else {"report": result.report}


def save_contact_sheet(path: Path, renders_bhw3: torch.Tensor, restored_bhw3: torch.Tensor, columns: int = 8) -> Path:
    """Renders (top of each pair of rows) over their restorations, as one PNG."""
    from PIL import Image

    from earthsynth.io.atomic import atomic_path

    n = min(len(renders_bhw3), columns)
    top = torch.cat(list(renders_bhw3[:n]), dim=1)
    bottom = torch.cat(list(restored_bhw3[:n]), dim=1)
    sheet = (torch.cat([top, bottom], dim=0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return path
