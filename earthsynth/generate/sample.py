"""DDIM sampling of the MetaEarth denoiser (MetaEarth: DDIM, eta = 0, 50 steps).

    hr = sample(model, condition_lr, resolution_m, seed=0)

With eta = 0 the result depends only on the initial noise and the condition (MetaEarth's injective generation
function), which is what lets the tiled generator pass the same noise to every window and get identical
content in the overlaps. The initial noise is drawn on the CPU from the seed, then moved to `device`, so one
seed gives the same x_T on every device.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from earthsynth.errors import ConfigError
from earthsynth.generate.degrade import as_generator
from earthsynth.generate.model import MetaEarthDenoiser, from_model_range, image_from_target, to_model_range
from earthsynth.generate.schedule import ScheduleConfig, ddim_scheduler


def initial_noise_for(model: MetaEarthDenoiser, condition_lr: torch.Tensor,
                      generator: torch.Generator | int) -> torch.Tensor:
    """x_T ~ N(0, I) of the output shape for this condition, drawn on the CPU (float32): what `sample` draws
    from the same seed. The tiled generator draws it once and passes it to every window."""
    return _initial(model, _as_batch(condition_lr, model), as_generator(generator), None)


def _as_batch(condition_lr: torch.Tensor, model: MetaEarthDenoiser) -> torch.Tensor:
    if not isinstance(condition_lr, torch.Tensor) or condition_lr.ndim not in (3, 4):
        raise ConfigError("condition_lr must be a tensor (C, h, w) or (B, C, h, w) with values in [0, 1]")
    cond = condition_lr[None] if condition_lr.ndim == 3 else condition_lr
    if cond.shape[1] != model.config.image_channels:
        raise ConfigError(f"condition_lr has {cond.shape[1]} channels, the model expects "
                          f"{model.config.image_channels}")
    return cond


@torch.no_grad()
def sample(model: MetaEarthDenoiser, condition_lr: torch.Tensor, resolution_m, *, steps: int = 50,
           eta: float = 0.0, generator: torch.Generator | int = 0, initial_noise: torch.Tensor | None = None,
           device: torch.device | str | None = None, schedule: ScheduleConfig = ScheduleConfig(),
           progress: bool = False) -> torch.Tensor:
    """Generate the HR image for a low-resolution condition.

    condition_lr: (C, h, w) or (B, C, h, w) in [0, 1]. resolution_m: GSD of the image to generate (m/px; the
    condition is `model.config.scale` times coarser), one value or one per image. generator: a seed or a CPU
    torch.Generator, used for x_T (unless `initial_noise` is given) and for the eta > 0 noise.
    initial_noise: x_T, shape (B, C, h * scale, w * scale) (or without B). Returns (B, C, H, W) in [0, 1]
    (no batch axis if the condition had none), on `device` (default: the model's device)."""
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta must be in [0, 1], got {eta}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    unbatched = condition_lr.ndim == 3 if isinstance(condition_lr, torch.Tensor) else False
    cond = _as_batch(condition_lr, model)
    gen = as_generator(generator)
    x = _initial(model, cond, gen, initial_noise).to(device)
    was_training = model.training
    model = model.to(device).eval()
    condition_m = to_model_range(cond.to(device, torch.float32))
    if model.config.residual:
        # x_0 is a residual times residual_scale: clamp it where |residual| reaches 1 in model units (half the
        # image range), which bounds the wild early x_0 estimates as the [-1, 1] clamp does for images
        schedule = replace(schedule, clip_sample_range=float(model.config.residual_scale))
    try:
        x = _ddim_loop(model, x, condition_m, resolution_m, steps=steps, eta=eta, generator=gen,
                       schedule=schedule, progress=progress)
    finally:
        model.train(was_training)
    out = from_model_range(image_from_target(model.config, x, condition_m))
    return out[0] if unbatched else out


def _ddim_loop(model, x, cond, resolution_m, *, steps, eta, generator, schedule, progress) -> torch.Tensor:
    features = model.encode_condition(cond)               # once for all steps: the condition does not change
    res_emb = model.embed_resolution(resolution_m, cond.shape[0])
    scheduler = ddim_scheduler(schedule)
    scheduler.set_timesteps(steps, device=x.device)
    timesteps = scheduler.timesteps
    if progress:
        from tqdm.auto import tqdm
        timesteps = tqdm(timesteps, desc="DDIM", leave=False)
    for t in timesteps:
        eps = model.denoise(x, t, features, res_emb)
        x = scheduler.step(eps, t, x, eta=eta, generator=generator if eta > 0 else None).prev_sample
    return x


def _initial(model, cond, gen, initial_noise) -> torch.Tensor:
    b, c, h, w = cond.shape
    want = (b, c, h * model.config.scale, w * model.config.scale)
    if initial_noise is None:
        return torch.randn(want, generator=gen, dtype=torch.float32)
    noise = initial_noise[None] if initial_noise.ndim == 3 else initial_noise
    if tuple(noise.shape) != want:
        raise ConfigError(f"initial_noise has shape {tuple(initial_noise.shape)}, expected {want} "
                          f"(the condition {h}x{w} px times scale {model.config.scale})")
    return noise.to(torch.float32)
