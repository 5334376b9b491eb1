"""Self-cascading generation (MetaEarth): x4 stage after x4 stage, each conditioned on the previous output.

    stages = cascade(model, pandora_rgb, 256.0, stages=3, seed=0)    # 256 -> 64 -> 16 -> 4 m/px
    for image_hw3, m_per_px in stages: ...

The first entry is the input itself (as uint8, at its stated m/px); entry k is stage k's output, `scale` times
larger and finer than entry k - 1. Each stage is conditioned on the previous image and told the GSD of the image
it generates (MetaEarth's resolution guidance). The input can be a real raster, a synthetic map or any RGB
picture with a stated m/px (MetaEarth's "Pandora" map). Stage outputs are quantised to uint8 before the next
stage reads them, so a cascade resumed from saved PNGs continues exactly as the in-memory one.

A stage whose output fits in one window (the model's sample size) is one DDIM run; a larger one runs through
the sliding-window generator of tiles.py (overlap + shared noise by default, see `TileConfig`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from earthsynth.errors import ConfigError
from earthsynth.generate.config import check_finite_positive
from earthsynth.generate.data import sample_seed
from earthsynth.generate.tiles import TileConfig, as_condition_chw, generate_array, to_uint8

_STAGE_STREAM = 21


def upscale(model, condition, condition_m: float, *, seed: int = 0, steps: int = 50, device=None,
            tile: TileConfig | None = None, progress: bool = False) -> np.ndarray:
    """One MetaEarth stage: the (H * scale, W * scale, 3) uint8 image generated from `condition`
    ((H, W, 3) array, uint8 or float in [0, 1], or a (3, H, W) tensor) at condition_m / scale m/px."""
    condition_m = check_finite_positive("condition_m", condition_m)
    scale = model.config.scale
    cond = as_condition_chw(condition)
    config = replace(tile or TileConfig(), steps=steps)
    window = config.window_px or model.config.sample_size
    out_h, out_w = cond.shape[1] * scale, cond.shape[2] * scale
    if out_h <= window and out_w <= window:
        return _single_window(model, cond, condition_m / scale, seed=seed, steps=steps, device=device,
                              strength=config.strength)
    chw = generate_array(model, cond, condition_m / scale, seed=seed, config=config, device=device,
                         progress=progress)
    return np.ascontiguousarray(np.moveaxis(chw, 0, -1))


def _single_window(model, cond: torch.Tensor, resolution_m: float, *, seed: int, steps: int, device,
                   strength: float | None = None) -> np.ndarray:
    """One DDIM run at the condition's own size (reflect-padded to the UNet stride, then cropped)."""
    from earthsynth.generate.sample import sample
    scale, stride = model.config.scale, model.config.stride
    multiple = max(1, stride // scale)
    h, w = cond.shape[1:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        cond = torch.from_numpy(np.pad(cond.numpy(), ((0, 0), (0, pad_h), (0, pad_w)), mode="symmetric"))
    out = sample(model, cond, resolution_m, steps=steps, generator=seed, device=device, strength=strength)
    out = out.to("cpu", torch.float32).numpy()[:, : h * scale, : w * scale]
    return to_uint8(np.moveaxis(out, 0, -1))


def cascade(model, low_res, low_res_m: float, *, stages: int, seed: int = 0, steps: int = 50, device=None,
            tile: TileConfig | None = None, progress: bool = False) -> list[tuple[np.ndarray, float]]:
    """Run `stages` x`scale` stages from `low_res` ((H, W, 3) or (3, H, W); uint8 or float in [0, 1]) stated
    at `low_res_m` m/px. Returns [(image (H_k, W_k, 3) uint8, m/px)] for k = 0 (the input) .. stages."""
    if not isinstance(stages, int) or isinstance(stages, bool) or stages < 1:
        raise ConfigError(f"stages must be a positive integer, got {stages!r}")
    current_m = check_finite_positive("low_res_m", low_res_m)
    current = to_uint8(np.moveaxis(as_condition_chw(low_res).numpy(), 0, -1))
    scale = model.config.scale
    results = [(current, current_m)]
    for stage in range(1, stages + 1):
        current = upscale(model, current, current_m, seed=sample_seed(seed, _STAGE_STREAM, stage), steps=steps,
                          device=device, tile=tile, progress=progress)
        current_m = current_m / scale
        results.append((current, current_m))
    return results
