"""Generative priors used by the reconstruction pipelines (mesh/ and splat/): every one is a `Refiner`."""

from earthsynth.refine.base import Refiner, check_images

__all__ = ["Refiner", "check_images"]
