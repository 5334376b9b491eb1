"""The quality-conditioned rectified-flow model: Skyfall-GS's FLUX.1 [dev], shrunk to what a CPU can train.

    v = QualityFlowModel(config)(x_t, t_b, labels_b)        # labels: 0 = degraded render, 1 = clean render

Skyfall-GS edits its splat renders with FlowEdit on FLUX.1 [dev], from a source prompt describing the degraded
render to a target prompt describing a clean one. Here the two prompts are the two values of a quality label
(`DEGRADED` / `CLEAN`) fed to diffusers' `UNet2DModel` through `num_class_embeds=2` (the label's embedding is
added to the time embedding), and the model is trained on the synthetic world's reduced / full level-of-detail
render pairs (earthsynth.refine.pairs, earthsynth.refine.flow_train).

Conventions are those of diffusers' `FlowMatchEulerDiscreteScheduler` (SD3, FLUX): images in [-1, 1],
x_t = (1 - t) x_0 + t * noise for t in [0, 1], the model predicts the velocity v = noise - x_0 (so dx/dt = v and
sampling integrates from t = 1 down to t = 0), and the UNet sees the timestep 1000 t.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from diffusers import UNet2DModel
from torch import nn

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.io.training import (WEIGHTS_NAME, cpu_state, model_folder_exists, read_model_folder,
                                    require_model_folder, write_model_folder)

DEGRADED, CLEAN = 0, 1        # the quality labels (Skyfall-GS: source prompt, target prompt)
NUM_TRAIN_TIMESTEPS = 1000    # diffusers' FlowMatchEulerDiscreteScheduler: the UNet sees timestep = 1000 t
_FORMAT = "earthsynth.QualityFlowModel"
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "flowedit"


@dataclass(frozen=True)
class FlowModelConfig:
    """UNet2DModel settings. The default is the shipped CPU model (~2.5 M parameters, 4.9 MB in float16)."""

    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    attention_levels: tuple[bool, ...] = (False, False, False)   # self-attention per level (lowest = last)
    mid_block_attention: bool = False
    attention_head_dim: int = 32
    norm_num_groups: int = 16
    image_channels: int = 3
    num_labels: int = 2                                         # DEGRADED, CLEAN

    def __post_init__(self):
        chans = tuple(self.block_out_channels)
        if len(chans) < 2 or any(not isinstance(c, int) or c < 1 for c in chans):
            raise ConfigError(f"block_out_channels must list >= 2 positive ints, got {self.block_out_channels}")
        if len(self.attention_levels) != len(chans):
            raise ConfigError(f"attention_levels needs one flag per level ({len(chans)}), "
                              f"got {self.attention_levels}")
        if any(c % self.norm_num_groups for c in chans):
            raise ConfigError(f"every block_out_channels value must be divisible by norm_num_groups "
                              f"{self.norm_num_groups}, got {chans}")
        if self.layers_per_block < 1 or self.num_labels < 2 or self.image_channels < 1:
            raise ConfigError("need layers_per_block >= 1, num_labels >= 2 and image_channels >= 1")

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this (one x2 down-sampling between consecutive levels)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def tiny(cls) -> FlowModelConfig:
        """For tests: ~40 k parameters."""
        return cls(block_out_channels=(8, 16), norm_num_groups=4, attention_levels=(False, False))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> FlowModelConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a flow model config must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"flow model config: unknown keys {unknown}", hint=f"valid keys are {sorted(names)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"flow model config: {exc}") from None


class QualityFlowModel(nn.Module):
    """v_theta(x_t, t, label): rectified-flow velocity of degraded (label 0) or clean (label 1) renders."""

    def __init__(self, config: FlowModelConfig = FlowModelConfig()):
        super().__init__()
        self.config = config
        levels = config.attention_levels
        self.unet = UNet2DModel(
            sample_size=64,   # informative only: the UNet is fully convolutional
            in_channels=config.image_channels,
            out_channels=config.image_channels,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in levels),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels)),
            block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            attention_head_dim=config.attention_head_dim,
            norm_num_groups=config.norm_num_groups,
            add_attention=config.mid_block_attention,
            num_class_embeds=config.num_labels,     # the quality label, added to the time embedding
        )

    @property
    def multiple(self) -> int:
        return self.config.multiple

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, x_t: torch.Tensor, t, labels) -> torch.Tensor:
        """Velocity (B, C, H, W) at x_t (B, C, H, W) in model range, t in [0, 1] (scalar or (B,)), labels
        (int or (B,) ints in [0, num_labels))."""
        if x_t.ndim != 4 or x_t.shape[1] != self.config.image_channels:
            raise ConfigError(f"x_t must be (B, {self.config.image_channels}, H, W), got {tuple(x_t.shape)}")
        h, w = x_t.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ConfigError(f"image size {h}x{w} is not a multiple of {self.multiple}",
                              hint="pad the images (the refiners do this by reflection)")
        b = x_t.shape[0]
        t_b = torch.as_tensor(t, dtype=torch.float32, device=x_t.device).reshape(-1).expand(b)
        labels_b = torch.as_tensor(labels, dtype=torch.long, device=x_t.device).reshape(-1).expand(b)
        if labels_b.numel() and (int(labels_b.min()) < 0 or int(labels_b.max()) >= self.config.num_labels):
            raise ConfigError(f"labels must be in [0, {self.config.num_labels}), got {labels_b.tolist()}")
        return self.unet(x_t, t_b * NUM_TRAIN_TIMESTEPS, class_labels=labels_b, return_dict=False)[0]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---------------------------------------------------------------------------------------------------------
    # save / load: config.json + model.safetensors, no pickles
    # ---------------------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, *, dtype: torch.dtype | None = None,
                        extra: dict | None = None) -> Path:
        """Write `config.json` and `model.safetensors` (tensors cast to `dtype` if given; `extra` is stored
        in config.json, e.g. a "training" entry)."""
        meta = {"format": _FORMAT, "model": self.config.to_dict(), **(extra or {})}
        return write_model_folder(directory, meta, cpu_state(self, dtype), metadata={"format": _FORMAT})

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: torch.device | str | None = None
                        ) -> QualityFlowModel:
        """Load a folder written by `save_pretrained`: float32, eval mode, on `device` (default CPU)."""
        meta, state = read_model_folder(directory, format_name=_FORMAT, config_key="model",
                                        missing="flow model file missing",
                                        hint="point at a folder written by QualityFlowModel.save_pretrained")
        model = cls(FlowModelConfig.from_dict(meta["model"]))
        try:
            model.load_state_dict({k: v.float() for k, v in state.items()})
        except RuntimeError as exc:
            raise InputFileError(f"weights do not match the config ({str(exc)[:300]})",
                                 path=Path(directory) / WEIGHTS_NAME) from None
        return model.to(device or "cpu").eval()


def default_flow_weights_available(directory: str | Path = DEFAULT_WEIGHTS_DIR) -> bool:
    return model_folder_exists(directory)


def load_default_flow_model(device: torch.device | str | None = None, *,
                            directory: str | Path | None = None) -> QualityFlowModel:
    """The shipped quality-conditioned flow model (earthsynth/weights/flowedit/, float32, eval mode)."""
    directory = require_model_folder(
        directory if directory is not None else DEFAULT_WEIGHTS_DIR,
        "the default FlowEdit weights are not there (config.json + model.safetensors)",
        hint="train and export them: scripts/train_flow_refiner.sh start, then "
             "scripts/train_flow_refiner.sh export; or load a model folder with QualityFlowModel.from_pretrained")
    return QualityFlowModel.from_pretrained(directory, device=device)
