"""Orbit to Ground's deterministic one-step restorer, at CPU scale: a compact residual UNet.

    restorer = load_default_restorer()                     # earthsynth/weights/restorer/, float32, eval mode
    sharp_bhw3 = restorer.refine(render_bhw3)              # (B, H, W, 3) in [0, 1] -> same shape, dtype, device

Orbit to Ground fine-tunes FLUX-Schnell into a single-step mapping from the latent of a degraded close-range
render to the latent of a sharp one (no noise, so the same render always gives the same target; their texture
optimisation needs that). No such weights exist here, so `RestorerNet` is trained from scratch on the synthetic
world's LoD / full-detail render pairs (refine/pairs.py): a 3-level UNet with residual blocks (GroupNorm, SiLU,
no time input) that predicts a correction of its input, out = clamp(x + f(x), 0, 1). The last convolution starts
at zero, so an untrained net is the identity. How the shipped weights were made: earthsynth/weights/restorer/RECIPE.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.io.training import cpu_state, model_folder_exists, require_model_folder, write_model_folder
from earthsynth.refine.base import check_images

FORMAT = "earthsynth.RestorerNet"
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "restorer"


@dataclass(frozen=True)
class RestorerConfig:
    channels: tuple[int, ...] = (32, 64, 128)   # one entry per level; each level halves H and W
    blocks_per_level: int = 2                   # residual blocks per level, in the encoder and in the decoder
    mid_blocks: int = 2                         # residual blocks at the coarsest level
    norm_groups: int = 8

    def __post_init__(self) -> None:
        if len(self.channels) < 1 or any(not isinstance(c, int) or c < 1 for c in self.channels):
            raise ConfigError(f"RestorerConfig.channels must be positive integers, got {self.channels}")
        if any(c % self.norm_groups for c in self.channels) or self.norm_groups < 1:
            raise ConfigError(f"every channel count must be a multiple of norm_groups ({self.norm_groups}), "
                              f"got {self.channels}")
        if self.blocks_per_level < 1 or self.mid_blocks < 0:
            raise ConfigError("blocks_per_level must be >= 1 and mid_blocks >= 0")

    @property
    def multiple(self) -> int:
        """H and W are reflect-padded to a multiple of this (the total downsampling factor)."""
        return 2 ** (len(self.channels) - 1)

    @classmethod
    def tiny(cls) -> RestorerConfig:
        """For tests: ~20 k parameters."""
        return cls(channels=(8, 16), blocks_per_level=1, mid_blocks=1, norm_groups=4)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> RestorerConfig:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict):
            raise ConfigError(f"a restorer config must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"restorer config: unknown keys {unknown}", hint=f"valid keys are {sorted(names)}")
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
        except TypeError as exc:
            raise ConfigError(f"restorer config: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RestorerConfig:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"restorer config is not JSON ({exc})") from None
        return cls.from_dict(data)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class RestorerNet(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1], any H and W."""

    def __init__(self, config: RestorerConfig = RestorerConfig()):
        super().__init__()
        self.config = config
        ch, g, n = config.channels, config.norm_groups, config.blocks_per_level
        self.conv_in = nn.Conv2d(3, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(nn.Sequential(*[ResBlock(c, c, g) for _ in range(n)]) for c in ch[:-1])
        self.downsamples = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(ch[:-1], ch[1:]))
        self.mid = nn.Sequential(*[ResBlock(ch[-1], ch[-1], g) for _ in range(config.mid_blocks)])
        self.upsamples = nn.ModuleList(nn.Conv2d(b, a, 3, padding=1) for a, b in zip(ch[:-1], ch[1:]))
        # the first decoder block of a level reads [upsampled, skip] concatenated
        self.up_blocks = nn.ModuleList(
            nn.Sequential(ResBlock(2 * c, c, g), *[ResBlock(c, c, g) for _ in range(n - 1)]) for c in ch[:-1])
        self.norm_out = nn.GroupNorm(g, ch[0])
        self.conv_out = nn.Conv2d(ch[0], 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)   # an untrained restorer returns its input unchanged
        nn.init.zeros_(self.conv_out.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def residual(self, x_b3hw: torch.Tensor) -> torch.Tensor:
        """f(x): the predicted correction, at the input's size."""
        h_in, w_in = x_b3hw.shape[-2:]
        m = self.config.multiple
        pad_h, pad_w = -h_in % m, -w_in % m
        x = x_b3hw
        if pad_h or pad_w:   # reflect needs pad < size; replicate covers tiny images
            mode = "reflect" if pad_h < h_in and pad_w < w_in else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        h = self.conv_in(x * 2.0 - 1.0)
        skips = []
        for block, down in zip(self.down_blocks, self.downsamples):
            h = block(h)
            skips.append(h)
            h = down(h)
        h = self.mid(h)
        for k in reversed(range(len(self.up_blocks))):
            h = self.upsamples[k](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = self.up_blocks[k](torch.cat([h, skips[k]], dim=1))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :h_in, :w_in]

    def forward(self, x_b3hw: torch.Tensor, *, clamp: bool = True) -> torch.Tensor:
        """x + f(x), clamped to [0, 1] (training uses clamp=False so that overshoots still get a gradient)."""
        out = x_b3hw + self.residual(x_b3hw)
        return out.clamp(0.0, 1.0) if clamp else out

    def save_pretrained(self, directory: str | Path, *, dtype: torch.dtype = torch.float32,
                        training: dict | None = None) -> None:
        """config.json + model.safetensors (atomic writes); `training` goes into config.json as provenance."""
        meta = {"format": FORMAT, "restorer": self.config.to_dict()}
        if training:
            meta["training"] = training
        write_model_folder(directory, meta, cpu_state(self, dtype), metadata={"format": FORMAT})   # all floating-point

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: torch.device | str | None = None) -> RestorerNet:
        """The net saved in `directory`, float32, eval mode, on `device` (default CPU)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise InputFileError("restorer file missing", path=path,
                                     hint="a restorer folder holds config.json + model.safetensors "
                                          "(RestorerNet.save_pretrained or scripts/train_restorer.sh export)")
        try:
            meta = json.loads(config_path.read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"format is {meta.get('format')!r}, not {FORMAT!r}")
            config = RestorerConfig.from_dict(meta["restorer"])
        except (OSError, ValueError, KeyError, AttributeError, ConfigError) as exc:
            raise InputFileError(f"not a restorer config ({exc})", path=config_path,
                                 hint="re-export the weights (scripts/train_restorer.sh export)") from None
        net = cls(config)
        try:
            state = {k: v.float() for k, v in load_file(str(weights_path)).items()}
            net.load_state_dict(state)
        except (OSError, SafetensorError, RuntimeError, ValueError) as exc:
            raise InputFileError(f"corrupt or mismatched restorer weights ({str(exc).splitlines()[0]})",
                                 path=weights_path, hint="re-export the weights "
                                 "(scripts/train_restorer.sh export)") from None
        return net.to(device or "cpu").eval()


class Restorer:
    """The `Refiner` around a `RestorerNet`: deterministic (seed is ignored), batched by `max_batch`."""

    name = "restorer"

    def __init__(self, net: RestorerNet, *, max_batch: int = 8):
        if not isinstance(net, RestorerNet):
            raise ConfigError(f"Restorer needs a RestorerNet, got {type(net).__name__}")
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        self.net = net.eval()
        self.max_batch = int(max_batch)

    @classmethod
    def from_dir(cls, path: str | Path, *, device: torch.device | str | None = None,
                 max_batch: int = 8) -> Restorer:
        return cls(RestorerNet.from_pretrained(path, device=device), max_batch=max_batch)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> Restorer:
        self.net.to(device)
        return self

    def fingerprint(self) -> str:
        """sha256 of the net's config and weights (float32): what a cached stage that used it records, so that
        other weights invalidate it."""
        import hashlib
        digest = hashlib.sha256(self.net.config.to_json().encode())
        for key, value in sorted(self.net.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()

    @torch.no_grad()
    def refine(self, images_bhw3: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
        """(B, H, W, 3) float in [0, 1] -> restored, same shape, dtype and device; computed in float32 on the
        net's device, `max_batch` images at a time."""
        check_images(images_bhw3, what="restorer input images")
        if images_bhw3.numel() and (float(images_bhw3.min()) < 0.0 or float(images_bhw3.max()) > 1.0):
            raise ConfigError(f"restorer input images must lie in [0, 1], got [{float(images_bhw3.min()):.3g}, "
                              f"{float(images_bhw3.max()):.3g}]", hint="clamp or rescale the renders first")
        if images_bhw3.shape[0] == 0:
            return images_bhw3.clone()
        if min(images_bhw3.shape[1:3]) < 2:
            raise ConfigError(f"restorer input images must be at least 2x2 pixels, got {tuple(images_bhw3.shape)}")
        out = []
        for start in range(0, images_bhw3.shape[0], self.max_batch):
            chunk = images_bhw3[start:start + self.max_batch].to(self.device, torch.float32)
            out.append(self.net(chunk.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        return torch.cat(out).to(images_bhw3.device, images_bhw3.dtype)


def default_restorer_available(directory: str | Path | None = None) -> bool:
    return model_folder_exists(directory if directory is not None else DEFAULT_WEIGHTS_DIR)


def load_default_restorer(device: torch.device | str | None = None, *, max_batch: int = 8) -> Restorer:
    """The shipped restorer (earthsynth/weights/restorer/, float16 on disk, float32 in memory) on `device`."""
    directory = require_model_folder(
        DEFAULT_WEIGHTS_DIR, "the default restorer weights are not there (config.json + model.safetensors)",
        hint="train and export them: scripts/train_restorer.sh start, then "
             "scripts/train_restorer.sh export; or load a folder with Restorer.from_dir")
    return Restorer.from_dir(directory, device=device, max_batch=max_batch)
