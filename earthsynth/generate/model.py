"""MetaEarth denoiser: RRDB condition encoder + alignment + diffusers UNet2DModel + resolution embedding.

    eps = MetaEarthDenoiser(config)(noisy_x, timesteps, condition_lr, resolution_m)

- `noisy_x` (B, C, H, W) is x_t in model range [-1, 1]; `condition_lr` (B, C, H/scale, W/scale) is the
  low-resolution image, also in [-1, 1] (`to_model_range` maps [0, 1] images there).
- The condition is encoded by an RRDB encoder (ESRGAN's Residual-in-Residual Dense Blocks, written here), brought
  to H x W by log2(scale) rounds of (nearest x2 upsampling, 3x3 conv, LeakyReLU), projected to
  `condition_channels` and concatenated with x_t on channels (MetaEarth: E, then the alignment layers, then concat).
- `resolution_m` is the ground sampling distance of the image being generated (the output, metres per pixel);
  the condition is `scale` times coarser. MetaEarth embeds the resolution of the condition, r_{i-1}; with a fixed
  scale the two differ by a constant factor (a constant shift of ln r), so they carry the same information, and
  naming the output's GSD is what callers (the cascade) ask for.
- The resolution is encoded as sinusoids of u = ln(r): GSD is a scale quantity, MetaEarth's levels
  (64, 16, 4 m) are equally spaced in ln r, a 10 % change weighs the same at 0.3 m and at 300 m, and the range of
  real sensors (0.1 m .. 20 km, ln-span 12) fits under the lowest frequency without wrapping; the highest
  frequency (`resolution_max_frequency`, a "large number" as in MetaEarth) makes r = 4 and 4.4 m clearly
  different. An MLP projects the encoding to the time-embedding width, and the result is ADDED to the timestep
  embedding through UNet2DModel's `class_embed_type="identity"`. Every ResBlock splits the summed embedding
  into scale and shift (`resnet_time_scale_shift="scale_shift"`: h = norm(h) * (1 + scale) + shift).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from diffusers import UNet2DModel
from torch import nn
from torch.nn import functional as F

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.generate.config import DenoiserConfig
from earthsynth.io.training import WEIGHTS_NAME, cpu_state, read_model_folder, write_model_folder

_FORMAT = "earthsynth.MetaEarthDenoiser"


def to_model_range(image01: torch.Tensor) -> torch.Tensor:
    """[0, 1] image -> [-1, 1] model range."""
    return image01 * 2.0 - 1.0


def from_model_range(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] model range -> [0, 1] image (clamped)."""
    return ((image + 1.0) * 0.5).clamp(0.0, 1.0)


def condition_upsampled(config, condition_m: torch.Tensor) -> torch.Tensor:
    """The condition (model range) brought to the HR size by bicubic interpolation: the base of residual models."""
    return F.interpolate(condition_m, scale_factor=config.scale, mode="bicubic", align_corners=False)


def diffusion_target(config, hr_m: torch.Tensor, condition_m: torch.Tensor) -> torch.Tensor:
    """x_0 of the diffusion for an HR image (model range): the image, or its scaled residual over the condition."""
    if not config.residual:
        return hr_m
    return (hr_m - condition_upsampled(config, condition_m)) * config.residual_scale


def image_from_target(config, x0: torch.Tensor, condition_m: torch.Tensor) -> torch.Tensor:
    """Inverse of `diffusion_target`: the HR image (model range, unclamped) from a sampled x_0."""
    if not config.residual:
        return x0
    return condition_upsampled(config, condition_m.to(x0.dtype)) + x0 / config.residual_scale


# --------------------------------------------------------------------------------------------------------------
# Condition path: RRDB encoder (ESRGAN) + alignment to the target size
# --------------------------------------------------------------------------------------------------------------

class ResidualDenseBlock(nn.Module):
    """ESRGAN RDB: 5 densely connected 3x3 convs with growth `growth`, residual scaled by 0.2."""

    def __init__(self, channels: int, growth: int):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth if i < 4 else channels, 3, padding=1) for i in range(5))
        for conv in self.convs:  # ESRGAN: Kaiming init scaled by 0.1 keeps the deep residual trunk stable
            nn.init.kaiming_normal_(conv.weight, a=0.0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(features, dim=1))
            if i < 4:
                features.append(F.leaky_relu(out, 0.2))
        return x + 0.2 * out


class RRDB(nn.Module):
    """Residual-in-Residual Dense Block: three RDBs inside one more 0.2-scaled residual."""

    def __init__(self, channels: int, growth: int):
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualDenseBlock(channels, growth) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.blocks(x)


class ConditionEncoder(nn.Module):
    """E (RRDBNet trunk) then the alignment layers A: LR image (B, C, h, w) -> features (B, Cc, h*s, w*s)."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        nf = config.rrdb_channels
        self.conv_first = nn.Conv2d(config.image_channels, nf, 3, padding=1)
        self.trunk = nn.Sequential(*(RRDB(nf, config.rrdb_growth) for _ in range(config.rrdb_blocks)))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.upsample_convs = nn.ModuleList(
            nn.Conv2d(nf, nf, 3, padding=1) for _ in range(int(math.log2(config.scale))))
        self.conv_out = nn.Conv2d(nf, config.condition_channels, 3, padding=1)

    def forward(self, condition_lr: torch.Tensor) -> torch.Tensor:
        features = self.conv_first(condition_lr)
        features = features + self.trunk_conv(self.trunk(features))
        for conv in self.upsample_convs:
            features = F.leaky_relu(conv(F.interpolate(features, scale_factor=2.0, mode="nearest")), 0.2)
        return self.conv_out(features)


# --------------------------------------------------------------------------------------------------------------
# Resolution embedding
# --------------------------------------------------------------------------------------------------------------

class ResolutionEmbedding(nn.Module):
    """r (m/px) -> [sin(w_k ln r), cos(w_k ln r)]_k -> MLP -> (B, time_embed_dim)."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        k = config.resolution_frequencies
        freqs = torch.logspace(math.log10(config.resolution_min_frequency),
                               math.log10(config.resolution_max_frequency), k, dtype=torch.float64)
        self.register_buffer("frequencies", freqs.float(), persistent=False)  # rebuilt from the config
        dim = config.time_embed_dim
        self.mlp = nn.Sequential(nn.Linear(2 * k, dim), nn.SiLU(), nn.Linear(dim, dim))

    def encode(self, resolution_m: torch.Tensor) -> torch.Tensor:
        """The fixed sinusoidal features (B, 2K) of ln r."""
        u = torch.log(resolution_m.to(torch.float32))
        angles = u[:, None] * self.frequencies[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    def forward(self, resolution_m: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encode(resolution_m))


def _as_resolution_batch(resolution_m, batch: int, device) -> torch.Tensor:
    r = torch.as_tensor(resolution_m, dtype=torch.float32, device=device).reshape(-1)
    if r.numel() == 1:
        r = r.expand(batch)
    if r.numel() != batch:
        raise ConfigError(f"resolution_m has {r.numel()} values for a batch of {batch}",
                          hint="give one GSD (m/px) for the batch or one per image")
    if not bool(torch.isfinite(r).all()) or bool((r <= 0).any()):
        raise ConfigError(f"resolution_m must be finite and > 0 m/px, got {r.tolist()}")
    return r


# --------------------------------------------------------------------------------------------------------------
# The denoiser
# --------------------------------------------------------------------------------------------------------------

class MetaEarthDenoiser(nn.Module):
    """eps_theta(x_t, t, condition image, resolution): the MetaEarth noise predictor."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        self.condition_encoder = ConditionEncoder(config)
        self.resolution_embedding = ResolutionEmbedding(config)
        self.unet = UNet2DModel(
            sample_size=config.sample_size,
            in_channels=config.image_channels + config.condition_channels,
            out_channels=config.image_channels,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels)),
            block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            attention_head_dim=config.attention_head_dim,
            norm_num_groups=config.norm_num_groups,
            attn_norm_num_groups=config.norm_num_groups,  # else the mid attention has no norm with scale_shift
            add_attention=config.mid_block_attention,
            dropout=config.dropout,
            resnet_time_scale_shift="scale_shift",         # MetaEarth: chunk the embedding into scale and shift
            class_embed_type="identity",                   # the resolution embedding is added to the time one
        )

    # the parts, so that a sampler can encode the condition and the resolution once for all steps
    def encode_condition(self, condition_lr: torch.Tensor) -> torch.Tensor:
        self._check_image(condition_lr, "condition_lr")
        return self.condition_encoder(condition_lr)

    def embed_resolution(self, resolution_m, batch: int) -> torch.Tensor:
        device = self.resolution_embedding.frequencies.device
        embedding = self.resolution_embedding(_as_resolution_batch(resolution_m, batch, device))
        if not self.config.resolution_guidance:   # ablation: module kept so state dicts keep their shape
            return torch.zeros_like(embedding)
        return embedding

    def denoise(self, noisy_x: torch.Tensor, timesteps, condition_features: torch.Tensor,
                resolution_embedding: torch.Tensor) -> torch.Tensor:
        """eps from x_t and the precomputed condition features / resolution embedding."""
        self._check_image(noisy_x, "noisy_x")
        if condition_features.shape[-2:] != noisy_x.shape[-2:]:
            raise ConfigError(
                f"condition is {tuple(condition_features.shape[-2:])} px after x{self.config.scale} alignment "
                f"but noisy_x is {tuple(noisy_x.shape[-2:])} px",
                hint=f"the condition must be exactly {self.config.scale}x smaller than the generated image")
        h, w = noisy_x.shape[-2:]
        if h % self.config.stride or w % self.config.stride:
            raise ConfigError(f"image size {h}x{w} px is not a multiple of the UNet stride {self.config.stride}")
        sample = torch.cat([noisy_x, condition_features.to(noisy_x.dtype)], dim=1)
        return self.unet(sample, timesteps, class_labels=resolution_embedding, return_dict=False)[0]

    def forward(self, noisy_x: torch.Tensor, timesteps, condition_lr: torch.Tensor, resolution_m) -> torch.Tensor:
        """eps (B, C, H, W) for x_t (B, C, H, W), t, LR condition (B, C, H/s, W/s), GSD of x (m/px)."""
        features = self.encode_condition(condition_lr)
        return self.denoise(noisy_x, timesteps, features, self.embed_resolution(resolution_m, noisy_x.shape[0]))

    def _check_image(self, x: torch.Tensor, name: str) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.image_channels:
            raise ConfigError(f"{name} must be (B, {self.config.image_channels}, H, W), got {tuple(x.shape)}")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---------------------------------------------------------------------------------------------------------
    # save / load: config.json + model.safetensors, no pickles
    # ---------------------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` into `directory` (each file written atomically)."""
        return write_model_folder(directory, {"format": _FORMAT, "denoiser": self.config.to_dict()}, cpu_state(self),
                                  metadata={"format": _FORMAT})

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: torch.device | str | None = None
                        ) -> MetaEarthDenoiser:
        """Load a model written by `save_pretrained` (on `device`, default CPU), in eval mode."""
        meta, state = read_model_folder(directory, format_name=_FORMAT, config_key="denoiser",
                                        missing="model file missing",
                                        hint="point at a folder written by MetaEarthDenoiser.save_pretrained")
        model = cls(DenoiserConfig.from_dict(meta["denoiser"]))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InputFileError(f"weights do not match the config: missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]}", path=Path(directory) / WEIGHTS_NAME)
        return model.to(device or "cpu").eval()
