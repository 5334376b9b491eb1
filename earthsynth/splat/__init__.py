"""Skyfall-GS: 3D Gaussian splats from satellite images (paper 002).

model.py (parameters, PLY io, optimizers, render), strategy.py (densify / prune, gsplat style),
appearance.py (per-image / per-Gaussian embeddings -> affine colour, fused export), init.py (initial Gaussians).
"""

from earthsynth.splat.appearance import GAUSSIAN_EMBEDDINGS, AppearanceConfig, AppearanceModel, modulated_sh
from earthsynth.splat.init import init_from_point_cloud_ply, init_from_points, knn_log_scales, points_from_mesh
from earthsynth.splat.model import (
    GAUSSIAN_KEYS,
    GaussianModel,
    SplatLRConfig,
    cameras_to_tensors,
    make_adam,
    means_lr_at,
    update_means_lr,
)
from earthsynth.splat.strategy import (
    DensifyPruneStrategy,
    Strategy,
    duplicate,
    remove,
    reset_opacities,
    split,
)

__all__ = [
    "GAUSSIAN_EMBEDDINGS", "GAUSSIAN_KEYS", "AppearanceConfig", "AppearanceModel", "DensifyPruneStrategy",
    "GaussianModel", "SplatLRConfig", "Strategy", "cameras_to_tensors", "duplicate", "init_from_point_cloud_ply",
    "init_from_points", "knn_log_scales", "make_adam", "means_lr_at", "modulated_sh", "points_from_mesh", "remove",
    "reset_opacities", "split", "update_means_lr",
]
