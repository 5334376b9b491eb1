"""Orbit to Ground's texture stage: a UV atlas (xatlas) painted from views by differentiable rendering (eq. 3).

    L = 0.8 MSE + 0.2 (1 - SSIM)   on the pixels the mesh covers, summed over views (Orbit to Ground eq. 3)

`unwrap_uv` (texture_atlas.py) makes the atlas; `optimize_texture` paints it:
1. every view is rasterised once (texture_views.py): the fragments do not change while the texture does;
2. the texture starts as the back-projection of the views (a cosine-weighted mean of the pixels that see each
   texel, visibility from the z-buffer), alternated with a per-view colour fit, and texels no view sees are
   filled by pull-push inpainting so the GLB has no grey holes;
3. Adam on the texture (projected back to [0, 1] after every step, so no texel saturates a sigmoid and stops
   learning) and on the per-view appearance.

Per-view appearance (multi-date satellite images): per-channel gain and bias, prediction = gain * render + bias.
That is exactly the exposure / white balance / haze model of `render.shading.Appearance`; a full 3x3 colour
matrix would add cross-channel freedom the texture could trade against. The texture and the appearances are only
defined up to one common affine map (T -> a T + c), so the gauge is fixed by construction: the geometric mean of
the gains is 1 and the mean of the biases is 0 per channel (the texture lives in the views' average colour
space). With `appearance=False` (targets of one date, e.g. restored renders in iterative refinement) every view
uses gain 1, bias 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from earthsynth.errors import ConfigError
from earthsynth.io.mesh import TexturedMesh
from earthsynth.mesh.texture_atlas import fill_holes, unwrap_uv
from earthsynth.mesh.texture_views import (
    PreparedView,
    back_project,
    fit_gain_bias,
    image_to_float,
    prepare_views,
    render_view,
)
from earthsynth.metrics.image import psnr, ssim

LR_SCHEDULES = ("constant", "cosine")


__all__ = ["TextureConfig", "TextureResult", "ViewAppearance", "optimize_texture", "unwrap_uv"]


@dataclass(frozen=True)
class TextureConfig:
    steps: int = 200                 # Adam steps (Orbit to Ground: 100 epochs over the satellite views)
    lr: float = 0.01                 # texture learning rate (texel values in [0, 1])
    appearance_lr: float = 0.005     # per-view log-gain and bias learning rate
    mse_weight: float = 0.8          # Orbit to Ground eq. 3 (lambda_MSE)
    ssim_weight: float = 0.2         # Orbit to Ground eq. 3 (lambda_SSIM)
    appearance: bool = True          # per-view gain + bias (multi-date views); False for one-date targets
    supersample: int = 1             # sub-pixels per pixel side when rendering views
    views_per_step: int = 4          # views in each step's loss (all views when fewer)
    init_rounds: int = 2             # back-projection <-> appearance fit alternations before Adam
    ssim_window: int = 11            # Wang et al. 2004
    seed: int = 0                    # view order

    def __post_init__(self):
        if self.steps < 0 or self.views_per_step < 1 or self.init_rounds < 1 or self.supersample < 1:
            raise ConfigError("TextureConfig: steps >= 0, views_per_step >= 1, init_rounds >= 1 and "
                              "supersample >= 1 are required")
        if not (self.lr > 0 and self.appearance_lr >= 0):
            raise ConfigError(f"TextureConfig: lr must be > 0 and appearance_lr >= 0, got {self.lr}, "
                              f"{self.appearance_lr}")
        if self.mse_weight < 0 or self.ssim_weight < 0 or self.mse_weight + self.ssim_weight == 0:
            raise ConfigError("TextureConfig: loss weights must be >= 0 and not both 0")


@dataclass(eq=False)
class TextureResult:
    mesh: TexturedMesh               # the input mesh with the optimised uint8 texture
    texture_hw3: np.ndarray          # float32 in [0, 1], the texture before quantisation (to continue from)
    gains_v3: np.ndarray             # per-view channel gains (geometric mean 1 per channel)
    biases_v3: np.ndarray            # per-view channel biases (mean 0 per channel)
    loss_log: list = field(default_factory=list)   # per step: step, loss, mse, ssim
    report: dict = field(default_factory=dict)     # PSNR init / final, timings, sizes


class ViewAppearance(torch.nn.Module):
    """Per-view gain and bias with the gauge fixed by centring (mean log-gain 0, mean bias 0 per channel)."""

    def __init__(self, log_gains_v3: torch.Tensor, biases_v3: torch.Tensor, trainable: bool):
        super().__init__()
        self.log_gains = torch.nn.Parameter(log_gains_v3.clone(), requires_grad=trainable)
        self.biases = torch.nn.Parameter(biases_v3.clone(), requires_grad=trainable)

    def gains_biases(self) -> tuple[torch.Tensor, torch.Tensor]:
        log_gains = self.log_gains - self.log_gains.mean(dim=0, keepdim=True)
        return log_gains.exp(), self.biases - self.biases.mean(dim=0, keepdim=True)


def _gauge(gains_v3: torch.Tensor, biases_v3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same family of views with geometric-mean gain 1 and mean bias 0 (texture mapped by T -> a T + c)."""
    scale = gains_v3.log().mean(0).exp()
    shift = biases_v3.mean(0) / gains_v3.mean(0)       # makes the new biases average to 0
    return gains_v3 / scale, biases_v3 - gains_v3 * shift


def _texture_size(mesh: TexturedMesh, init_texture) -> tuple[int, int]:
    if mesh.uvs_n2 is None:
        raise ConfigError("optimize_texture: the mesh has no uvs", hint="run unwrap_uv on it first")
    if np.shape(mesh.uvs_n2) != (len(mesh.vertices_n3), 2):
        raise ConfigError(f"optimize_texture: uvs must be ({len(mesh.vertices_n3)}, 2), got {np.shape(mesh.uvs_n2)}")
    reference = init_texture if init_texture is not None else mesh.texture_hw3
    if reference is None:
        raise ConfigError("optimize_texture: the mesh has no texture to size the atlas and no init_texture")
    shape = tuple(np.shape(reference))
    if len(shape) != 3 or shape[2] != 3:
        raise ConfigError(f"optimize_texture: texture must be (H, W, 3), got {shape}")
    if mesh.texture_hw3 is not None and tuple(mesh.texture_hw3.shape) != shape:
        raise ConfigError(f"optimize_texture: init_texture is {shape} but the mesh's texture is "
                          f"{tuple(mesh.texture_hw3.shape)}")
    return shape[0], shape[1]


def _predict(texture, view: PreparedView, gain_3, bias_3) -> torch.Tensor:
    """The view as the current texture and appearance render it; uncovered pixels copy the target so SSIM
    windows that straddle the silhouette see no false edge."""
    rendered = render_view(texture, view) * gain_3 + bias_3
    return torch.where(view.mask_hw[..., None], rendered, view.target_hw3)


def _view_loss(texture, view, gain_3, bias_3, config: TextureConfig) -> tuple[torch.Tensor, float, float]:
    pred = _predict(texture, view, gain_3, bias_3)
    mask = view.mask_hw
    weight = mask.to(pred.dtype)       # a multiply, not boolean indexing: cheaper forward and backward
    mse = (((pred - view.target_hw3) ** 2).mean(-1) * weight).sum() / weight.sum()
    r = config.ssim_window // 2
    # SSIM is only defined away from the image border; a view whose mesh pixels all lie there keeps MSE only
    use_ssim = config.ssim_weight > 0 and bool(mask[r:mask.shape[0] - r, r:mask.shape[1] - r].any())
    ssim_value = ssim(pred, view.target_hw3, window_size=config.ssim_window, mask=mask) if use_ssim \
        else torch.ones((), device=pred.device)
    loss = config.mse_weight * mse + config.ssim_weight * (1.0 - ssim_value)
    return loss, float(mse.detach()), float(ssim_value.detach())


def _initial_texture(views, height, width, config: TextureConfig):
    """Back-projection alternated with per-view gain/bias fits -> (texture, weight, gains, biases)."""
    device = views[0].target_hw3.device
    gains = torch.ones((len(views), 3), device=device)
    biases = torch.zeros((len(views), 3), device=device)
    for round_ in range(config.init_rounds):
        texture, weight = back_project(views, height, width, gains_v3=gains, biases_v3=biases)
        texture = fill_holes(texture, weight).clamp(0.0, 1.0)
        if not config.appearance or round_ == config.init_rounds - 1:
            break
        fits = [fit_gain_bias(render_view(texture, v), v.target_hw3, v.mask_hw) for v in views]
        gains, biases = _gauge(torch.stack([g for g, _ in fits]), torch.stack([b for _, b in fits]))
    return texture, weight, gains, biases


def _mean_psnr(texture, views, appearance: ViewAppearance) -> float:
    gains, biases = appearance.gains_biases()
    with torch.no_grad():
        values = [float(psnr(_predict(texture, v, gains[k], biases[k]), v.target_hw3, mask=v.mask_hw))
                  for k, v in enumerate(views)]
    return float(np.mean(values))


def _batches(num_views: int, per_step: int, generator: torch.Generator):
    """Endless view batches: a fresh permutation every epoch."""
    while True:
        order = torch.randperm(num_views, generator=generator).tolist()
        for start in range(0, num_views, per_step):
            yield order[start:start + per_step]


def _optimise(texture, appearance, views, config, progress, lr_schedule: str = "constant") -> list[dict]:
    from tqdm.auto import tqdm

    if config.steps == 0:
        return []
    groups = [{"params": [texture], "lr": config.lr}]
    if config.appearance and len(views) > 1 and config.appearance_lr > 0:
        groups.append({"params": list(appearance.parameters()), "lr": config.appearance_lr})
    optimiser = torch.optim.Adam(groups)
    for group in optimiser.param_groups:
        group["initial_lr"] = group["lr"]
    batches = _batches(len(views), min(config.views_per_step, len(views)),
                       torch.Generator().manual_seed(int(config.seed)))
    log = []
    for step in tqdm(range(config.steps), desc="texture", disable=not progress):
        batch = next(batches)
        if lr_schedule == "cosine":
            for group in optimiser.param_groups:
                group["lr"] = group["initial_lr"] * 0.5 * (1.0 + math.cos(math.pi * step / config.steps))
        gains, biases = appearance.gains_biases()
        optimiser.zero_grad(set_to_none=True)
        parts = [_view_loss(texture, views[k], gains[k], biases[k], config) for k in batch]
        loss = torch.stack([p[0] for p in parts]).mean()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            texture.clamp_(0.0, 1.0)   # projected Adam: the texture stays a valid colour
        log.append({"step": step, "loss": float(loss.detach()), "mse": float(np.mean([p[1] for p in parts])),
                    "ssim": float(np.mean([p[2] for p in parts]))})
    return log


def optimize_texture(mesh_with_uv: TexturedMesh, views, config: TextureConfig = TextureConfig(), *,
                     init_texture=None, device=None, progress: bool = True,
                     lr_schedule: str = "constant") -> TextureResult:
    """Paint the mesh's UV atlas from `views`, a list of (Camera | OrthoCamera, image (H, W, 3) uint8 or float in
    [0, 1]) pairs. `init_texture` (H, W, 3) replaces the back-projection start (e.g. the current texture in
    iterative refinement). `lr_schedule`: "constant" or "cosine" (to 0 at the last step; the refinement's re-fits,
    which start near their optimum). Returns the mesh with the optimised texture, the per-view appearance and a
    loss log."""
    if lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    t0 = time.perf_counter()
    device = torch.device(device) if device is not None else torch.device("cpu")
    height, width = _texture_size(mesh_with_uv, init_texture)
    views_prepared = prepare_views(mesh_with_uv, views, supersample=config.supersample, device=device)
    t_prepared = time.perf_counter()
    if init_texture is None:
        texture0, weight, gains0, biases0 = _initial_texture(views_prepared, height, width, config)
        seen_fraction = float((weight > 0).float().mean())
    else:
        texture0 = image_to_float(init_texture, "init_texture").to(device)
        gains0 = torch.ones((len(views_prepared), 3), device=device)
        biases0 = torch.zeros((len(views_prepared), 3), device=device)
        seen_fraction = None
    appearance = ViewAppearance(gains0.log(), biases0, trainable=config.appearance).to(device)
    texture = texture0.detach().clone().requires_grad_(True)
    psnr_init = _mean_psnr(texture.detach(), views_prepared, appearance)
    t_init = time.perf_counter()
    log = _optimise(texture, appearance, views_prepared, config, progress, lr_schedule)
    final = texture.detach().clamp(0.0, 1.0)
    gains, biases = (x.detach().cpu().numpy().astype(np.float64) for x in appearance.gains_biases())
    report = {"psnr_init": psnr_init, "psnr_final": _mean_psnr(final, views_prepared, appearance),
              "texture_size": [width, height], "views": len(views_prepared), "seen_texel_fraction": seen_fraction,
              "seconds_prepare": t_prepared - t0, "seconds_init": t_init - t_prepared,
              "seconds_optimise": time.perf_counter() - t_init, "config": asdict(config)}
    texture_np = final.cpu().numpy().astype(np.float32)
    out = TexturedMesh(mesh_with_uv.vertices_n3, mesh_with_uv.faces_f3, mesh_with_uv.uvs_n2,
                       np.round(texture_np * 255.0).astype(np.uint8), None, dict(mesh_with_uv.metadata))
    out.metadata["texture"] = {k: v for k, v in report.items() if k != "config"}
    return TextureResult(out, texture_np, gains, biases, log, report)
