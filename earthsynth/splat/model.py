"""The trainable 3D Gaussian model: raw parameters in one `nn.ParameterDict`, gsplat's layout.

Keys (N Gaussians, K = (degree + 1)^2 SH coefficients):
    means [N, 3]        centres, ENU metres
    quats [N, 4]        rotations w, x, y, z (normalised by the renderer)
    scales [N, 3]       log standard deviations
    opacities [N]       logits
    sh0 [N, 1, 3]       SH DC coefficient
    shN [N, K-1, 3]     higher SH coefficients ([N, 0, 3] at degree 0)
    + any extra per-Gaussian tensor (e.g. `gaussian_embeddings` [N, 24] of the appearance model).
Every tensor in the dict has the Gaussians on its first axis, so the densification ops in `strategy.py` grow and
prune all of them alike without knowing what they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from earthsynth.errors import ConfigError
from earthsynth.io.splats import GaussianSplats

GAUSSIAN_KEYS = ("means", "quats", "scales", "opacities", "sh0", "shN")


@dataclass(frozen=True)
class SplatLRConfig:
    """Adam learning rates, one per parameter (3DGS / Inria names in the comments)."""

    means: float = 1.6e-4                # Inria position_lr_init, times the scene scale
    means_final: float = 1.6e-6          # Inria position_lr_final, times the scene scale
    means_max_steps: int = 30_000        # Inria position_lr_max_steps (Skyfall-GS 0.B.1.3: 30,000 iterations)
    quats: float = 1e-3                  # Inria rotation_lr
    scales: float = 1e-3                 # Skyfall-GS 0.B.1.3 scaling lr, lowered from Inria's 0.005
    opacities: float = 5e-2              # Inria opacity_lr
    sh0: float = 2.5e-3                  # Inria feature_lr
    shN: float = 2.5e-3 / 20.0           # Inria feature_lr / 20 for the rest coefficients
    gaussian_embeddings: float = 5e-3    # Skyfall-GS 0.B.1.3 per-Gaussian embeddings g_i
    image_embeddings: float = 1e-3       # Skyfall-GS 0.B.1.3 per-image embeddings e_j
    appearance_mlp: float = 5e-4         # Skyfall-GS 0.B.1.3 appearance MLP f

    def __post_init__(self):
        for name, value in vars(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"SplatLRConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.means_max_steps < 1:
            raise ConfigError(f"SplatLRConfig.means_max_steps must be >= 1, got {self.means_max_steps}")


def make_adam(params, lr: float, *, batch_size: int = 1) -> torch.optim.Adam:
    """One Adam for one parameter (or one module's parameters), scaled for a batch of `batch_size` images the
    way gsplat's trainer does (lr * sqrt(B), eps / sqrt(B), betas 1 - B (1 - beta)); eps 1e-15 as in Inria's."""
    b = int(batch_size)
    if b < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    return torch.optim.Adam(params, lr=lr * math.sqrt(b), eps=1e-15 / math.sqrt(b),
                            betas=(1.0 - b * (1.0 - 0.9), 1.0 - b * (1.0 - 0.999)))


def means_lr_at(step: int, lrs: SplatLRConfig, scene_scale: float = 1.0) -> float:
    """Inria's exponential (log-linear) decay of the position lr from `means` to `means_final` over
    `means_max_steps`, constant afterwards; both ends times the scene scale (metres)."""
    t = min(max(step / lrs.means_max_steps, 0.0), 1.0)
    if lrs.means == 0.0 or lrs.means_final == 0.0:
        return 0.0
    return float(np.exp(np.log(lrs.means) * (1.0 - t) + np.log(lrs.means_final) * t)) * scene_scale


def update_means_lr(optimizers: Mapping[str, torch.optim.Optimizer], step: int, lrs: SplatLRConfig, *,
                    scene_scale: float = 1.0, batch_size: int = 1) -> float:
    """Set the means optimizer's lr for `step`; returns it."""
    lr = means_lr_at(step, lrs, scene_scale) * math.sqrt(batch_size)
    for group in optimizers["means"].param_groups:
        group["lr"] = lr
    return lr


def _check_params(params: Mapping[str, torch.Tensor]) -> int:
    missing = [k for k in GAUSSIAN_KEYS if k not in params]
    if missing:
        raise ConfigError(f"GaussianModel needs the parameters {', '.join(missing)}")
    n = params["means"].shape[0]
    expected = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,), "sh0": (n, 1, 3)}
    for key, shape in expected.items():
        if tuple(params[key].shape) != shape:
            raise ConfigError(f"GaussianModel parameter {key} must have shape {shape}, got {tuple(params[key].shape)}")
    sh_n = params["shN"]
    if sh_n.ndim != 3 or sh_n.shape[0] != n or sh_n.shape[2] != 3 or sh_n.shape[1] not in (0, 3, 8, 15):
        raise ConfigError(f"GaussianModel parameter shN must be ({n}, K-1, 3) with K-1 in 0, 3, 8, 15 "
                          f"(SH degree 0..3), got {tuple(sh_n.shape)}")
    for key, value in params.items():
        if value.shape[0] != n:
            raise ConfigError(f"per-Gaussian tensor {key} has {value.shape[0]} rows, the model has {n} Gaussians")
    return n


class GaussianModel(nn.Module):
    """N 3D Gaussians with raw (activation-free) trainable parameters in `self.params`."""

    def __init__(self, params: Mapping[str, torch.Tensor]):
        super().__init__()
        _check_params(params)
        self.params = nn.ParameterDict({k: nn.Parameter(torch.as_tensor(v, dtype=torch.float32).detach().clone())
                                        for k, v in params.items()})

    # ------------------------------------------------------------------------------------------- views
    @property
    def num(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.params["shN"].shape[1] + 1))) - 1

    @property
    def means(self) -> torch.Tensor:
        return self.params["means"]

    @property
    def quats(self) -> torch.Tensor:
        return self.params["quats"]

    @property
    def scales_activated(self) -> torch.Tensor:
        """Standard deviations (metres) along the rotated axes."""
        return torch.exp(self.params["scales"])

    @property
    def opacities_activated(self) -> torch.Tensor:
        return torch.sigmoid(self.params["opacities"])

    @property
    def sh(self) -> torch.Tensor:
        """[N, K, 3] SH coefficients, DC first (gsplat's `colors` with `sh_degree`)."""
        return torch.cat([self.params["sh0"], self.params["shN"]], dim=1)

    # ------------------------------------------------------------------------------------------- io
    @classmethod
    def from_splats(cls, splats: GaussianSplats, *, device=None) -> "GaussianModel":
        def t(array):
            return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(device)
        return cls({"means": t(splats.means_n3), "quats": t(splats.quats_n4), "scales": t(splats.log_scales_n3),
                    "opacities": t(splats.opacity_logits_n), "sh0": t(splats.sh_n_k_3[:, :1]),
                    "shN": t(splats.sh_n_k_3[:, 1:])})

    def to_splats(self) -> GaussianSplats:
        """The standard 3DGS parameters (extra per-Gaussian tensors are not part of a 3DGS PLY)."""
        def a(tensor):
            return tensor.detach().to("cpu", torch.float32).numpy().copy()
        return GaussianSplats(means_n3=a(self.params["means"]), quats_n4=a(self.params["quats"]),
                              log_scales_n3=a(self.params["scales"]), opacity_logits_n=a(self.params["opacities"]),
                              sh_n_k_3=a(self.sh))

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], *, device=None) -> "GaussianModel":
        """Rebuild from `model.state_dict()` (a checkpoint), whatever N the checkpoint had."""
        prefix = "params."
        params = {k[len(prefix):]: v.to(device) for k, v in state_dict.items() if k.startswith(prefix)}
        return cls(params)

    def add_per_gaussian(self, name: str, values: torch.Tensor) -> None:
        """Register an extra per-Gaussian tensor (first axis N) that densification grows and prunes."""
        if name in self.params:
            raise ConfigError(f"the model already has a parameter named {name!r}")
        if values.shape[0] != self.num:
            raise ConfigError(f"{name} has {values.shape[0]} rows, the model has {self.num} Gaussians")
        self.params[name] = nn.Parameter(values.detach().to(self.device, torch.float32).clone())

    # ------------------------------------------------------------------------------------------- training
    def create_optimizers(self, lrs: SplatLRConfig = SplatLRConfig(), *, scene_scale: float = 1.0,
                          batch_size: int = 1) -> dict[str, torch.optim.Adam]:
        """One Adam per parameter, as gsplat's strategies expect. `scene_scale` (metres: the radius of the
        reconstructed area) multiplies the means lr, as Inria's spatial_lr_scale does."""
        if not (scene_scale > 0 and math.isfinite(scene_scale)):
            raise ConfigError(f"scene_scale must be a positive number of metres, got {scene_scale}")
        known = GAUSSIAN_KEYS + ("gaussian_embeddings",)
        optimizers = {}
        for name, param in self.params.items():
            if name not in known:
                raise ConfigError(f"no learning rate for the parameter {name!r}",
                                  hint=f"the per-Gaussian parameters with a learning rate are {sorted(known)}")
            lr = means_lr_at(0, lrs, scene_scale) if name == "means" else getattr(lrs, name)
            optimizers[name] = make_adam(param, lr, batch_size=batch_size)
        return optimizers

    # ------------------------------------------------------------------------------------------- rendering
    def render(self, cameras, *, appearance=None, image_ids=None, image_embeddings_ce=None,
               sh_degree: int | None = None, backgrounds_c3=None, render_mode: str = "RGB",
               rasterizer: Callable | None = None, **raster_kwargs):
        """Render C same-size cameras -> (render_colors [C, H, W, D], render_alphas [C, H, W, 1], meta).

        With an `AppearanceModel`, colours follow the embedding of `image_ids` (or `image_embeddings_ce`, or
        the appearance model's fixed embedding). `rasterizer` defaults to earthsynth.render.splat's
        `rasterize_gaussians` (gsplat's conventions); meta["means2d"] feeds the densification strategy."""
        viewmats_c44, ks_c33, width, height = cameras_to_tensors(cameras, device=self.device)
        if sh_degree is None:
            sh_degree = self.sh_degree
        if not 0 <= sh_degree <= self.sh_degree:
            raise ConfigError(f"sh_degree must be in 0..{self.sh_degree} for this model, got {sh_degree}")
        colors = self.sh
        if appearance is not None:
            embeddings = (appearance.image_embeddings(image_ids, n_cameras=len(viewmats_c44))
                          if image_embeddings_ce is None else image_embeddings_ce)
            if len(embeddings) != len(viewmats_c44):
                raise ConfigError(f"{len(embeddings)} image embeddings for {len(viewmats_c44)} cameras")
            colors = appearance.modulate_sh(self, embeddings)             # [C, N, K, 3]
            if colors.shape[0] == 1:
                colors = colors[0]    # one camera: the plain [N, K, 3] layout every backend takes
        if rasterizer is None:
            from earthsynth.render.splat import rasterize_gaussians as rasterizer   # noqa: N813 (lazy: optional)
        return rasterizer(self.means, self.quats, self.scales_activated, self.opacities_activated, colors,
                          viewmats_c44, ks_c33, width, height, sh_degree=sh_degree, backgrounds_c3=backgrounds_c3,
                          render_mode=render_mode, **raster_kwargs)


def cameras_to_tensors(cameras, *, device=None) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """One `Camera` or a sequence of same-size cameras -> (viewmats [C, 4, 4], Ks [C, 3, 3], width, height)."""
    cams: Sequence = [cameras] if hasattr(cameras, "viewmat") else list(cameras)
    if not cams:
        raise ConfigError("render needs at least one camera")
    sizes = {(c.width, c.height) for c in cams}
    if len(sizes) != 1:
        raise ConfigError(f"cameras rendered together must share one image size, got {sorted(sizes)}")
    if any(getattr(c, "kind", "pinhole") != "pinhole" for c in cams):
        raise ConfigError("Gaussian splats are rendered with pinhole cameras only (got an orthographic one)")
    viewmats = torch.tensor(np.stack([c.viewmat for c in cams]), dtype=torch.float32, device=device)
    ks = torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32, device=device)
    width, height = sizes.pop()
    return viewmats, ks, int(width), int(height)
