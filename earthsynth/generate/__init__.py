"""MetaEarth (paper 001): resolution-guided self-cascading diffusion for Earth-observation imagery.

    config.py    DenoiserConfig (tiny / cpu_default / paper presets), JSON round trip of configs
    model.py     MetaEarthDenoiser: RRDB condition encoder + alignment + diffusers UNet2DModel + resolution embedding
    degrade.py   degrade(): Real-ESRGAN high-order degradation that makes the LR condition of a training pair
    schedule.py  linear betas 0.0015 -> 0.0155 over 1000 steps, SNR, P2 weights; diffusers DDPM / DDIM schedulers
    data.py      TripletDataset of (HR crop, LR condition, m/px) from landscape, real-raster and function sources
    train.py     train(): P2-weighted epsilon loss with accelerate, EMA, atomic checkpoints, exact resume
    sample.py    sample(): DDIM (eta = 0, 50 steps), deterministic from a seed or a given initial noise
    cascade.py   cascade(): stage-by-stage x4 super-resolution with resolution bookkeeping
    tiles.py     generate_tiles(): unbounded sliding-window generation, shared noise, streamed resumable COG
    augment.py   augment_folder(): the data-engine mode (regenerate variants of labelled tiles)
    presets.py   the shipped CPU model and its training recipe; weights.py loads earthsynth/weights/metaearth
    cli.py       the `earthsynth generate ...` verbs

The package imports its submodules lazily (diffusers is slow to import); the functions `degrade`, `sample` and
`train` share their module's name, so import them from the module: `from earthsynth.generate.sample import sample`.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DenoiserConfig": "config",
    "MetaEarthDenoiser": "model",
    "DegradationConfig": "degrade",
    "ScheduleConfig": "schedule",
    "TripletDataset": "data",
    "TrainConfig": "train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
