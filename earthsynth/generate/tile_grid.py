"""The window layout of unbounded generation (generate/tiles.py): where the windows go, how they blend, and the
initial noise each one starts from. See tiles.py's docstring for the why (MetaEarth's overlap and noise constraint,
the "field" and "periodic" noise layouts, the raised-cosine blend)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from earthsynth.errors import ConfigError
from earthsynth.generate.data import sample_seed

if TYPE_CHECKING:
    from earthsynth.generate.tiles import TileConfig

_NOISE_SHARED, _NOISE_WINDOW, _NOISE_FIELD = 11, 12, 13   # seed streams


@dataclass(frozen=True)
class Grid:
    """Window layout of one generation, in output pixels."""

    window: int        # W
    stride: int        # S (W / 2 with overlap, else W)
    scale: int
    rows: int          # window rows
    cols: int          # window columns
    out_h: int         # wanted output size (condition size x scale)
    out_w: int

    @property
    def carry(self) -> int:
        return self.window - self.stride

    @property
    def bands(self) -> int:
        """Bands of `stride` output rows that hold output pixels (the last one may be shorter)."""
        return math.ceil(self.out_h / self.stride)

    @property
    def padded_h(self) -> int:
        return (self.rows - 1) * self.stride + self.window

    @property
    def padded_w(self) -> int:
        return (self.cols - 1) * self.stride + self.window


def make_grid(model, cond_h: int, cond_w: int, config: TileConfig) -> Grid:
    mc = model.config
    window = config.window_px or mc.sample_size
    step = 2 * mc.scale if config.overlap else mc.scale
    if window % step or window % mc.stride:
        raise ConfigError(f"window_px {window} must be a multiple of {step} (scale {mc.scale}"
                          f"{', halved by the overlap' if config.overlap else ''}) and of the UNet stride "
                          f"{mc.stride}")
    stride = window // 2 if config.overlap else window
    out_h, out_w = cond_h * mc.scale, cond_w * mc.scale

    def count(size: int) -> int:
        return 1 if size <= window else math.ceil((size - window) / stride) + 1
    return Grid(window, stride, mc.scale, count(out_h), count(out_w), out_h, out_w)


def axis_weights(index: int, count: int, window: int, stride: int) -> np.ndarray:
    """Blend weight (window,) of window `index` of `count` along one axis (see the module docstring)."""
    if stride == window or count == 1:
        return np.ones(window, dtype=np.float32)
    w = np.sin(np.pi * (np.arange(window) + 0.5) / window) ** 2
    if index == 0:
        w[: window // 2] = 1.0
    if index == count - 1:
        w[window // 2:] = 1.0
    return w.astype(np.float32)


def shared_window_noise(channels: int, grid: Grid, seed: int) -> torch.Tensor:
    """The one x_T (C, W, W) of every window: an S x S draw tiled so the overlap conditions hold exactly."""
    g = torch.Generator().manual_seed(sample_seed(seed, _NOISE_SHARED))
    block = torch.randn((channels, grid.stride, grid.stride), generator=g)
    reps = grid.window // grid.stride
    return block.repeat(1, reps, reps)


def field_window_noise(channels: int, grid: Grid, seed: int, row: int, col: int) -> torch.Tensor:
    """x_T (C, W, W) of window (row, col) cut from the noise field: S x S blocks, each drawn from a seed of its own
    block position, so neighbouring windows share exactly the blocks of their overlap."""
    reps = grid.window // grid.stride

    def block(i: int, j: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(sample_seed(seed, _NOISE_FIELD, i, j))
        return torch.randn((channels, grid.stride, grid.stride), generator=g)

    return torch.cat([torch.cat([block(row + i, col + j) for j in range(reps)], dim=2) for i in range(reps)], dim=1)


def _window_noise(channels: int, grid: Grid, seed: int, row: int, col: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(sample_seed(seed, _NOISE_WINDOW, row, col))
    return torch.randn((channels, grid.window, grid.window), generator=g)


def pad_condition(cond_chw: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Reflect-pad the condition (C, h, w) at the bottom / right so the windows cover it exactly."""
    pad_h = grid.padded_h // grid.scale - cond_chw.shape[1]
    pad_w = grid.padded_w // grid.scale - cond_chw.shape[2]
    if pad_h == 0 and pad_w == 0:
        return cond_chw
    arr = np.pad(cond_chw.numpy(), ((0, 0), (0, pad_h), (0, pad_w)), mode="symmetric")
    return torch.from_numpy(np.ascontiguousarray(arr))
