"""Noise schedule (MetaEarth: linear betas 0.0015 -> 0.0155 over 1000 steps), SNR and P2 loss weighting.

P2 weighting (Choi et al. 2022, "Perception Prioritized Training of Diffusion Models"), used by MetaEarth:
lambda_t = 1 / (k + SNR_t) ** gamma with SNR_t = alpha_bar_t / (1 - alpha_bar_t). The values of k and gamma
are not legible in the MetaEarth text we work from; the defaults are P2's own (k = 1, gamma = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from earthsynth.errors import ConfigError

P2_K = 1.0      # P2: k = 1 (keeps lambda finite as SNR -> 0)
P2_GAMMA = 1.0  # P2: gamma = 1 (their recommended strength; gamma = 0 is the plain epsilon loss)


@dataclass(frozen=True)
class ScheduleConfig:
    num_train_timesteps: int = 1000  # MetaEarth: 1000 diffusion steps in training
    beta_start: float = 0.0015       # MetaEarth: linear schedule minimum
    beta_end: float = 0.0155         # MetaEarth: linear schedule maximum
    clip_sample: bool = True         # clamp the predicted x0 to [-clip_sample_range, clip_sample_range] while sampling
    clip_sample_range: float = 1.0   # the image range [-1, 1]; residual models use their own (sample.py)

    def __post_init__(self) -> None:
        if not isinstance(self.num_train_timesteps, int) or self.num_train_timesteps < 2:
            raise ConfigError(f"num_train_timesteps must be an integer >= 2, got {self.num_train_timesteps!r}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ConfigError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")

    def _common(self) -> dict:
        return dict(num_train_timesteps=self.num_train_timesteps, beta_start=self.beta_start,
                    beta_end=self.beta_end, beta_schedule="linear", prediction_type="epsilon",
                    clip_sample=self.clip_sample, clip_sample_range=self.clip_sample_range)


def ddpm_scheduler(config: ScheduleConfig = ScheduleConfig()) -> DDPMScheduler:
    """The training-time forward process (add_noise) as a diffusers DDPMScheduler."""
    return DDPMScheduler(**config._common(), variance_type="fixed_small")


def ddim_scheduler(config: ScheduleConfig = ScheduleConfig()) -> DDIMScheduler:
    """The sampler (MetaEarth: DDIM, eta = 0, 50 steps) on the same betas."""
    return DDIMScheduler(**config._common(), set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")


def alphas_cumprod(config: ScheduleConfig = ScheduleConfig()) -> torch.Tensor:
    """alpha_bar_t for t = 0 .. T-1, float64."""
    betas = torch.linspace(config.beta_start, config.beta_end, config.num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def snr(config: ScheduleConfig = ScheduleConfig()) -> torch.Tensor:
    """SNR_t = alpha_bar_t / (1 - alpha_bar_t) for t = 0 .. T-1, float64."""
    abar = alphas_cumprod(config)
    return abar / (1.0 - abar)


def p2_weights(config: ScheduleConfig = ScheduleConfig(), *, k: float = P2_K, gamma: float = P2_GAMMA
               ) -> torch.Tensor:
    """lambda_t = 1 / (k + SNR_t) ** gamma for t = 0 .. T-1, float32 (gamma = 0 gives all ones)."""
    if k < 0 or gamma < 0 or (k == 0 and gamma > 0):
        raise ConfigError(f"P2 needs k > 0 and gamma >= 0 (or gamma = 0), got k={k}, gamma={gamma}")
    return (1.0 / (k + snr(config)) ** gamma).to(torch.float32)
