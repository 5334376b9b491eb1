"""FlowEdit and SDEdit refiners on the quality-conditioned rectified-flow model (Skyfall-GS's refinement step).

    refiner = FlowEditRefiner(load_default_flow_model(), FlowEditConfig())
    refined_bhw3 = refiner.refine(renders_bhw3, seed=0)

FlowEdit (Kulikov et al. 2024) edits an image from a source condition to a target condition without inverting
it. Its ODE runs on the edit itself, starting at the source image: at each time t_i of the editing window it
draws noise n, makes the noisy source z_src = (1 - t_i) x_src + t_i n, shifts it by the edit so far
(z_tar = z_src + z_edit - x_src), and moves the edit by the difference of the two conditional velocities,
z_edit += (t_{i-1} - t_i) (v(z_tar, c_tar) - v(z_src, c_src)), averaged over `n_avg` noise draws. The noise
cancels wherever the two conditions agree, which is what keeps the structure of the input; steps above
t_{n_max} are skipped (they would change the layout), and below t_{n_min} the edit is noised to t_{n_min}
once more and finished by plain Euler sampling with the target condition (FlowEdit's n_min handling, which adds
fine detail). Skyfall-GS runs it on FLUX.1 [dev] with n_min = 4, n_max = 10 of FLUX's 28 steps, source and
target prompts describing degraded and clean renders; here the prompts are the model's quality labels.

SDEdit (Meng et al. 2022), Skyfall-GS's ablation: noise the input to t = strength, integrate the target ODE back.

The time grid is diffusers' `FlowMatchEulerDiscreteScheduler` sigma grid (t_n = sigmas[num_steps - n], t_0 = 0).
Images are moved to model range [-1, 1] and reflect-padded to the UNet's multiple; the refined image is the
input plus the edit (z_edit - x_src) mapped back to [0, 1], so an edit of exactly zero returns the input bytes.
Noise is drawn per image from a generator seeded by (seed, image index), on the CPU: same seed, same bytes on
any device and for any chunking of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from earthsynth.errors import ConfigError
from earthsynth.refine.base import check_images
from earthsynth.refine.flow_checkpoint import step_seed
from earthsynth.refine.flow_model import CLEAN, DEGRADED, NUM_TRAIN_TIMESTEPS, load_default_flow_model

__all__ = ["FlowEditConfig", "FlowEditRefiner", "SDEditRefiner", "flow_sigmas", "load_default_flow_model"]

_NOISE_STREAM = 9173  # keeps the refiners' noise apart from anything else seeded by (seed, index)


@dataclass(frozen=True)
class FlowEditConfig:
    num_steps: int = 28          # FlowEdit with FLUX.1 [dev]: T = 28 steps
    n_min: int = 4               # Skyfall-GS supplementary B.1.4: n_min = 4
    n_max: int = 10              # Skyfall-GS supplementary B.1.4: n_max = 10
    n_avg: int = 1               # FlowEdit default (FLUX and SD3): n_avg = 1
    source_label: int = DEGRADED  # Skyfall-GS source prompt: "... blurring and warping artifacts"
    target_label: int = CLEAN     # Skyfall-GS target prompt: "Clear satellite image ... sharp buildings ..."
    guidance: float = 1.0        # target velocity v_tar + (g - 1)(v_tar - v_src) at z_tar; 1 = off
    shift: float = 1.0           # sigma-grid shift of FlowMatchEulerDiscreteScheduler (SD3: 3.0; 1 = linear)
    batch_size: int = 8          # images per model call

    def __post_init__(self):
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ConfigError(f"FlowEditConfig.num_steps must be a positive integer, got {self.num_steps!r}")
        if not 0 <= self.n_min < self.n_max <= self.num_steps:
            raise ConfigError(f"need 0 <= n_min < n_max <= num_steps, got n_min={self.n_min}, n_max={self.n_max}, "
                              f"num_steps={self.num_steps}", hint="Skyfall-GS: n_min=4, n_max=10 of 28 steps")
        if self.n_avg < 1 or self.batch_size < 1:
            raise ConfigError("n_avg and batch_size must be >= 1")
        if not self.guidance >= 1.0 or not self.shift > 0:
            raise ConfigError(f"need guidance >= 1 and shift > 0, got {self.guidance}, {self.shift}")


def flow_sigmas(num_steps: int, shift: float = 1.0) -> torch.Tensor:
    """The (num_steps + 1,) float32 time grid from t = 1 down to t = 0 (diffusers' FlowMatchEulerDiscrete)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=float(shift))
    scheduler.set_timesteps(int(num_steps))
    return scheduler.sigmas.detach().to("cpu", torch.float32)


def _check_label(model, label: int, what: str) -> None:
    if not 0 <= int(label) < model.config.num_labels:
        raise ConfigError(f"{what} {label} is not a label of this model (0 .. {model.config.num_labels - 1})")


class _FlowRefinerBase:
    """Shared plumbing: validation, device / dtype round trip, padding, chunking, per-image noise."""

    name = "flow"

    def __init__(self, model, batch_size: int):
        self.model = model.eval()
        self.batch_size = int(batch_size)

    def _noise_draws(self) -> int:
        raise NotImplementedError

    def _edit(self, x_src: torch.Tensor, noise_bk: torch.Tensor) -> torch.Tensor:
        """z_edit (B, 3, H, W) for x_src in model range and noise (B, K, 3, H, W)."""
        raise NotImplementedError

    @torch.no_grad()
    def refine(self, images_bhw3: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
        images = check_images(images_bhw3)
        if images.shape[0] == 0:
            return images.clone()
        if images.shape[1] < 1 or images.shape[2] < 1:
            raise ConfigError(f"images must be at least 1x1 pixels, got {tuple(images.shape)}")
        if float(images.min()) < 0.0 or float(images.max()) > 1.0:
            raise ConfigError("images must be in [0, 1]", hint="divide uint8 images by 255")
        device = self.model.device
        x = images.to(device, torch.float32).permute(0, 3, 1, 2)
        h, w = x.shape[-2:]
        m = self.model.multiple
        pad_h, pad_w = -h % m, -w % m
        x_src = _pad(x * 2.0 - 1.0, pad_h, pad_w)
        edits = []
        for start in range(0, x_src.shape[0], self.batch_size):
            chunk = x_src[start: start + self.batch_size]
            noise = torch.stack([_image_noise(seed, start + i, self._noise_draws(), chunk.shape[1:])
                                 for i in range(chunk.shape[0])]).to(device)
            edits.append(self._edit(chunk, noise) - chunk)
        delta = torch.cat(edits)[..., :h, :w] * 0.5     # the edit in [0, 1] units
        out = (x + delta).clamp(0.0, 1.0).permute(0, 2, 3, 1)
        return out.to(images.device, images.dtype)

    def _velocity(self, z: torch.Tensor, t: float, label: int) -> torch.Tensor:
        return self.model(z, t, label)

    def _euler_target(self, z: torch.Tensor, times: list[float], label: int) -> torch.Tensor:
        """Plain Euler integration of dz/dt = v(z, t, label) along `times` (decreasing)."""
        for t_i, t_next in zip(times[:-1], times[1:]):
            z = z + (t_next - t_i) * self._velocity(z, t_i, label)
        return z


def _pad(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    if not pad_h and not pad_w:
        return x
    # reflection needs the pad to be smaller than the side; tiny images fall back to edge replication
    mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _image_noise(seed: int, index: int, draws: int, shape_chw) -> torch.Tensor:
    g = torch.Generator().manual_seed(step_seed(seed, index, _NOISE_STREAM))
    return torch.randn((draws, *shape_chw), generator=g)


class FlowEditRefiner(_FlowRefinerBase):
    """FlowEdit from the source label (degraded) to the target label (clean); Refiner protocol."""

    name = "flowedit"

    def __init__(self, model, config: FlowEditConfig = FlowEditConfig()):
        super().__init__(model, config.batch_size)
        _check_label(model, config.source_label, "source_label")
        _check_label(model, config.target_label, "target_label")
        self.config = config
        sigmas = flow_sigmas(config.num_steps, config.shift)
        self.times = [float(sigmas[config.num_steps - n]) for n in range(config.num_steps + 1)]  # times[n] = t_n

    def _noise_draws(self) -> int:
        c = self.config
        return (c.n_max - c.n_min) * c.n_avg + (1 if c.n_min > 0 else 0)

    def _delta_velocity(self, z_edit, x_src, noise, t_i: float) -> torch.Tensor:
        c = self.config
        z_src = (1.0 - t_i) * x_src + t_i * noise
        z_tar = z_src + (z_edit - x_src)      # this order keeps z_tar == z_src bit for bit while the edit is 0
        # two calls rather than one of twice the batch: CPU kernels may split a batch unevenly, and only
        # identical calls guarantee v_tar == v_src bit for bit when the two conditions are the same
        v_tar, v_src = self.model(z_tar, t_i, c.target_label), self.model(z_src, t_i, c.source_label)
        if c.guidance != 1.0:
            v_tar = v_tar + (c.guidance - 1.0) * (v_tar - self.model(z_tar, t_i, c.source_label))
        return v_tar - v_src

    def _edit(self, x_src: torch.Tensor, noise_bk: torch.Tensor) -> torch.Tensor:
        c, t = self.config, self.times
        z_edit = x_src.clone()
        draw = 0
        for i in range(c.n_max, c.n_min, -1):                 # t_{n_max} .. t_{n_min + 1}
            dv = torch.zeros_like(x_src)
            for _ in range(c.n_avg):
                dv = dv + self._delta_velocity(z_edit, x_src, noise_bk[:, draw], t[i])
                draw += 1
            z_edit = z_edit + (t[i - 1] - t[i]) * (dv / c.n_avg if c.n_avg > 1 else dv)
        if c.n_min > 0:
            # noise the edit to t_{n_min} with a fresh draw (z_tar = z_edit + z_src - x_src), then sample
            z = z_edit + t[c.n_min] * (noise_bk[:, draw] - x_src)
            z_edit = self._euler_target(z, t[c.n_min::-1], c.target_label)
        return z_edit


class SDEditRefiner(_FlowRefinerBase):
    """SDEdit: x_t = (1 - s) x + s n at t = strength s, then `num_steps` Euler steps of the target ODE to t = 0."""

    name = "sdedit"

    def __init__(self, model, strength: float = 0.35, num_steps: int = 28, *, target_label: int = CLEAN,
                 shift: float = 1.0, batch_size: int = 8):
        super().__init__(model, batch_size)
        if not 0.0 <= float(strength) <= 1.0:
            raise ConfigError(f"SDEdit strength must be in [0, 1], got {strength}")
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ConfigError(f"num_steps must be a positive integer, got {num_steps!r}")
        _check_label(model, target_label, "target_label")
        self.strength, self.num_steps, self.target_label = float(strength), num_steps, int(target_label)
        # the scheduler's grid scaled to start exactly at t = strength (default 0.35 ~ FlowEdit's t_{n_max})
        self.times = [float(s) * self.strength for s in flow_sigmas(num_steps, shift)]

    def _noise_draws(self) -> int:
        return 1

    def _edit(self, x_src: torch.Tensor, noise_bk: torch.Tensor) -> torch.Tensor:
        if self.strength == 0.0:
            return x_src.clone()
        z = (1.0 - self.strength) * x_src + self.strength * noise_bk[:, 0]
        return self._euler_target(z, self.times, self.target_label)
