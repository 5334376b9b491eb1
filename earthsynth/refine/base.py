"""The Refiner protocol: anything that turns rendered views into better-looking views of the same place.

Orbit to Ground restores close-range renders of its textured mesh with a deterministic one-step network;
Skyfall-GS edits renders of its splats with FlowEdit. Both pipelines only see this protocol, so any refiner
(a trained restorer, FlowEdit or SDEdit on the small rectified-flow model, a user's diffusers pipeline) plugs
into either.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from earthsynth.errors import ConfigError


@runtime_checkable
class Refiner(Protocol):
    """refine(images_bhw3, seed=...) -> images_bhw3.

    Images are float32 tensors (B, H, W, 3) in [0, 1], on any device; the output has the input's shape, dtype and
    device. `seed` makes stochastic refiners reproducible (same seed -> same bytes); deterministic refiners
    ignore it. `name` says what the refiner is in reports and run configs.
    """

    name: str

    def refine(self, images_bhw3: torch.Tensor, *, seed: int = 0) -> torch.Tensor: ...


def check_images(images_bhw3, *, what: str = "images") -> torch.Tensor:
    """Validate a refiner's input batch: (B, H, W, 3) floating point in [0, 1], finite."""
    if not isinstance(images_bhw3, torch.Tensor):
        raise ConfigError(f"{what} must be a torch tensor of shape (B, H, W, 3), got {type(images_bhw3).__name__}")
    if images_bhw3.ndim != 4 or images_bhw3.shape[-1] != 3:
        raise ConfigError(f"{what} must have shape (B, H, W, 3), got {tuple(images_bhw3.shape)}")
    if not images_bhw3.is_floating_point():
        raise ConfigError(f"{what} must be floating point in [0, 1], got {images_bhw3.dtype}",
                          hint="divide uint8 images by 255")
    if images_bhw3.numel() and not bool(torch.isfinite(images_bhw3).all()):
        raise ConfigError(f"{what} contain NaN or infinite values")
    return images_bhw3
