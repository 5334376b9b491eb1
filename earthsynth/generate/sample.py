"""DDIM sampling of the MetaEarth denoiser (MetaEarth: DDIM, eta = 0, 50 steps).

    hr = sample(model, condition_lr, resolution_m, seed=0)

With eta = 0 the result depends only on the initial noise and the condition (MetaEarth's injective generation
function), which is what lets the tiled generator pass the same noise to every window and get identical
content in the overlaps. The initial noise is drawn on the CPU from the seed, then moved to `device`, so one
seed gives the same x_T on every device.

`strength` < 1 runs only the last part of the schedule, as diffusers' img2img does with the bicubic up-sampling
of the condition as the initial image: x_t0 = sqrt(abar_t0) x0_bicubic + sqrt(1 - abar_t0) noise, t0 ~ strength T.
Residual models default to RESIDUAL_STRENGTH: their x_0 (the scaled residual, std ~0.4) has an SNR under 1 %
from t ~ 600 on, so the skipped steps carry almost no signal, while their x_0 estimates, amplified by
sqrt((1 - abar) / abar) ~ 70 near T, turn a small bias of the predicted noise into a colour cast of the whole
window (measured on the shipped model: mean shifts up to 0.27 of the range at strength 1, 0.02 at 0.6).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from earthsynth.errors import ConfigError
from earthsynth.generate.degrade import as_generator
from earthsynth.generate.model import (MetaEarthDenoiser, condition_upsampled, from_model_range,
                                       diffusion_target, image_from_target, to_model_range)
from earthsynth.generate.schedule import ScheduleConfig, ddim_scheduler

RESIDUAL_STRENGTH = 0.6   # default for residual models (module docstring); image-space models run the whole schedule


def default_strength(model: MetaEarthDenoiser) -> float:
    return RESIDUAL_STRENGTH if model.config.residual else 1.0


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
           strength: float | None = None, progress: bool = False) -> torch.Tensor:
    """Generate the HR image for a low-resolution condition.

    condition_lr: (C, h, w) or (B, C, h, w) in [0, 1]. resolution_m: GSD of the image to generate (m/px; the
    condition is `model.config.scale` times coarser), one value or one per image. generator: a seed or a CPU
    torch.Generator, used for x_T (unless `initial_noise` is given) and for the eta > 0 noise.
    initial_noise: x_T, shape (B, C, h * scale, w * scale) (or without B). Returns (B, C, H, W) in [0, 1]
    (no batch axis if the condition had none), on `device` (default: the model's device).
    strength: fraction of the schedule run, from the noised bicubic up-sampling (module docstring); `steps` DDIM
    steps are run either way. Default: `default_strength(model)`."""
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    strength = default_strength(model) if strength is None else float(strength)
    if not 0.0 < strength <= 1.0:
        raise ConfigError(f"strength must be in (0, 1], got {strength}")
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta must be in [0, 1], got {eta}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    unbatched = condition_lr.ndim == 3 if isinstance(condition_lr, torch.Tensor) else False
    cond = _as_batch(condition_lr, model)
    gen = as_generator(generator)
    noise = _initial(model, cond, gen, initial_noise).to(device)
    was_training = model.training
    model = model.to(device).eval()
    condition_m = to_model_range(cond.to(device, torch.float32))
    if model.config.residual:
        # x_0 is a residual times residual_scale: clamp it where |residual| reaches 1 in model units (half the
        # image range), which bounds the wild early x_0 estimates as the [-1, 1] clamp does for images
        schedule = replace(schedule, clip_sample_range=float(model.config.residual_scale))
    scheduler = ddim_scheduler(schedule)
    timesteps = _timesteps(scheduler, steps, strength, device)
    x = _start(model.config, scheduler, noise, condition_m, timesteps[0], strength)
    try:
        x = _ddim_loop(model, x, condition_m, resolution_m, scheduler, timesteps, eta=eta, generator=gen,
                       progress=progress)
    finally:
        model.train(was_training)
    out = from_model_range(image_from_target(model.config, x, condition_m))
    return out[0] if unbatched else out


def _timesteps(scheduler, steps: int, strength: float, device) -> torch.Tensor:
    """The last `steps` of a DDIM grid whose spacing T / total puts its (steps - 1)-th point near (at or just
    below) strength * T; the whole grid at strength 1. DDIM steps by T // total, so the grid must be uniform."""
    total = steps if strength >= 1.0 else max(steps, math.ceil((steps - 1) / strength))
    scheduler.set_timesteps(total, device=device)
    return scheduler.timesteps[-steps:]


def _start(config, scheduler, noise, condition_m, t0, strength: float) -> torch.Tensor:
    """x at the first timestep: pure noise for the whole schedule, else the noised bicubic up-sampling."""
    if strength >= 1.0:
        return noise
    x0 = diffusion_target(config, condition_upsampled(config, condition_m), condition_m)
    abar = scheduler.alphas_cumprod[int(t0)].to(noise.device, torch.float32)
    return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise


def _ddim_loop(model, x, cond, resolution_m, scheduler, timesteps, *, eta, generator, progress) -> torch.Tensor:
    features = model.encode_condition(cond)               # once for all steps: the condition does not change
    res_emb = model.embed_resolution(resolution_m, cond.shape[0])
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
