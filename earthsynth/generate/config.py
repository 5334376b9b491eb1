"""Configuration of the MetaEarth denoiser, and the JSON round trip shared by every generate/ config.

`DenoiserConfig` has three named presets:

- `tiny()`: for tests, < 200 k parameters, runs a training step in milliseconds on a CPU;
- `cpu_default()`: ~7 M parameters, the size that ships as default weights and trains on a 2-core CPU;
- `paper()`: the MetaEarth architecture (5 levels, 3 ResBlocks per level, attention at the 8x levels, RRDBNet
  condition encoder) at GPU scale (~0.6 G parameters, MetaEarth: "about 600 million parameters").

The paper's equations for the resolution encoding were lost in the text we work from; see
`resolution_max_frequency` below for what is used instead and why.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from earthsynth.errors import ConfigError

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------------------
# JSON round trip for frozen (possibly nested) dataclasses
# --------------------------------------------------------------------------------------------------------------

def config_to_dict(config: Any) -> dict:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    out = {}
    for f in dataclasses.fields(config):
        out[f.name] = _to_plain(getattr(config, f.name))
    return out


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    return value


def config_from_dict(cls: type[T], data: dict, *, where: str = "config") -> T:
    """Build `cls` from a dict written by `config_to_dict`; unknown or ill-typed keys raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}", hint=f"valid keys are {sorted(names)}")
    kwargs = {name: _from_plain(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _from_plain(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, where=where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(_from_plain(inner, v, where) for v in value)
    if origin in (typing.Union, types.UnionType):
        return value  # optional scalars: taken as they are, validated by __post_init__
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def config_to_json(config: Any) -> str:
    return json.dumps(config_to_dict(config), indent=2, sort_keys=True)


def config_from_json(cls: type[T], text: str, *, where: str = "config") -> T:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid JSON ({exc})") from None
    return config_from_dict(cls, data, where=where)


# --------------------------------------------------------------------------------------------------------------
# The denoiser
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DenoiserConfig:
    """Architecture of `MetaEarthDenoiser` (see model.py for how each field is used)."""

    image_channels: int = 3                 # RGB today; 4 for RGB + height later
    scale: int = 4                          # MetaEarth: each stage raises the resolution x4 (64 -> 16 -> 4 m/px)
    sample_size: int = 64                   # HR training crop (px); informative, any multiple of the UNet stride runs
    # UNet (diffusers UNet2DModel)
    block_out_channels: tuple[int, ...] = (32, 64, 128, 128)
    layers_per_block: int = 2               # MetaEarth: 3 ResBlocks per level
    attention_levels: tuple[bool, ...] = (False, False, True, True)  # MetaEarth: attention at the 8x-channel levels
    mid_block_attention: bool = True
    attention_head_dim: int = 32
    norm_num_groups: int = 32
    dropout: float = 0.0
    # condition path: RRDB encoder (ESRGAN) on the low-resolution image, then upsampling + convolutions
    rrdb_channels: int = 32                 # ESRGAN RRDBNet nf (64 in ESRGAN)
    rrdb_growth: int = 16                   # ESRGAN gc (32 in ESRGAN)
    rrdb_blocks: int = 2                    # ESRGAN nb (23 in ESRGAN)
    condition_channels: int = 32            # channels of the aligned condition features concatenated to x_t
    # resolution encoding: sinusoids of ln(r) at frequencies geometrically spaced in [min, max] (rad per ln-unit)
    resolution_frequencies: int = 32        # -> 2 * 32 = 64 sin/cos features
    resolution_min_frequency: float = 0.25  # period 8 ln-units > ln(20 km / 0.1 m): no wrap over any real GSD
    resolution_max_frequency: float = 1000.0  # MetaEarth: a "large number" so small changes of r are felt
    resolution_guidance: bool = True        # False = the ablation without the resolution branch: the embedding
                                            # is zeros, so the UNet sees only t (MetaEarth's "w/o sr" rows)
    # what is diffused: the HR image itself (MetaEarth) or, when `residual`, its difference from the bicubic
    # up-sampling of the condition times `residual_scale` (SRDiff-style residual diffusion, not in MetaEarth: the
    # low frequencies then come from the condition by construction, which a CPU-sized training budget needs)
    residual: bool = False
    residual_scale: float = 4.0             # residual std ~0.1 in model units -> ~0.4: near the noise's scale

    def __post_init__(self) -> None:
        _check_positive_ints(self, ("image_channels", "scale", "sample_size", "layers_per_block",
                                    "attention_head_dim", "norm_num_groups", "rrdb_channels", "rrdb_growth",
                                    "rrdb_blocks", "condition_channels", "resolution_frequencies"))
        if self.scale & (self.scale - 1):
            raise ConfigError(f"scale must be a power of two (upsampling is done by x2 steps), got {self.scale}")
        levels = len(self.block_out_channels)
        if levels < 1 or len(self.attention_levels) != levels:
            raise ConfigError(
                f"attention_levels has {len(self.attention_levels)} entries for {levels} block_out_channels",
                hint="give one True/False per UNet level")
        for ch in self.block_out_channels:
            if not isinstance(ch, int) or ch <= 0 or ch % self.norm_num_groups:
                raise ConfigError(f"block_out_channels {self.block_out_channels}: every entry must be a positive "
                                  f"multiple of norm_num_groups={self.norm_num_groups}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.resolution_min_frequency < self.resolution_max_frequency:
            raise ConfigError("need 0 < resolution_min_frequency < resolution_max_frequency, got "
                              f"{self.resolution_min_frequency} and {self.resolution_max_frequency}")
        if not isinstance(self.resolution_guidance, bool):
            raise ConfigError(f"resolution_guidance must be true or false, got {self.resolution_guidance!r}")
        if not self.residual_scale > 0:
            raise ConfigError(f"residual_scale must be positive, got {self.residual_scale}")
        if self.sample_size % self.scale or self.sample_size % self.stride:
            raise ConfigError(f"sample_size {self.sample_size} must be a multiple of scale={self.scale} and of "
                              f"the UNet stride {self.stride}")

    @property
    def stride(self) -> int:
        """Image sizes must be multiples of this (2 ** number of downsamplings)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4  # diffusers UNet2DModel default

    @classmethod
    def tiny(cls) -> DenoiserConfig:
        """Test-size model (< 200 k parameters)."""
        return cls(sample_size=16, block_out_channels=(8, 16), layers_per_block=1, attention_levels=(False, True),
                   mid_block_attention=True, attention_head_dim=8, norm_num_groups=4, rrdb_channels=8,
                   rrdb_growth=4, rrdb_blocks=1, condition_channels=8, resolution_frequencies=8)

    @classmethod
    def cpu_default(cls) -> DenoiserConfig:
        """The default size (~7 M parameters): trains and samples on a 2-core CPU."""
        return cls()

    @classmethod
    def paper(cls) -> DenoiserConfig:
        """MetaEarth at full size (GPU scale, ~0.6 G parameters; MetaEarth: "about 600 million").

        5 levels with 4 x2 downsamplings; channels = base 128 x (1, 2, 4, 8, 8); 3 ResBlocks per level; attention
        blocks only at the 8x-multiplier levels; RRDBNet condition encoder at ESRGAN's size (nf 64, gc 32, 23
        blocks); 256 px crops (MetaEarth's 256 x 256 dataset tiles)."""
        return cls(sample_size=256, block_out_channels=(128, 256, 512, 1024, 1024), layers_per_block=3,
                   attention_levels=(False, False, False, True, True), mid_block_attention=True,
                   attention_head_dim=64, norm_num_groups=32, rrdb_channels=64, rrdb_growth=32, rrdb_blocks=23,
                   condition_channels=64, resolution_frequencies=64)

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DenoiserConfig:
        return config_from_dict(cls, data, where="DenoiserConfig")

    def to_json(self) -> str:
        return config_to_json(self)

    @classmethod
    def from_json(cls, text: str) -> DenoiserConfig:
        return config_from_json(cls, text, where="DenoiserConfig")


def _check_positive_ints(config: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}")


def check_finite_positive(name: str, value: float) -> float:
    """Validate a scalar setting that must be a finite positive number."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)
