"""The restorer's training loss: Orbit to Ground's L = LPIPS + lambda_CHAR * Charbonnier, made offline.

LPIPS needs ImageNet-trained AlexNet/VGG weights, which do not exist here. Two honest, weight-free stand-ins
take its place, each under its own name:

- `RandomFeatureLoss`: L1 distance between the features of a fixed, seeded conv pyramid with *random* weights
  (He-normal, no training). Random conv features still respond to local edges and textures at several scales,
  so the term rewards matching high-frequency structure rather than only the per-pixel mean; it is a
  "random-feature perceptual loss", not LPIPS, and is not calibrated to human judgement.
- 1 - SSIM (earthsynth.metrics.image.ssim_loss): local mean, contrast and structure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean sqrt((pred - target)^2 + eps^2): a smooth L1 (Charbonnier 1994; Orbit to Ground's fidelity term)."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


class RandomFeatureLoss(nn.Module):
    """Mean over pyramid levels of the L1 distance between random conv features of pred and target.

    Level k: 3x3 conv (stride 1 at level 0, 2 after), ReLU. Weights are drawn from N(0, 2 / fan_in) by a
    generator seeded with `seed` and never trained (buffers, not parameters), so the loss is a fixed function
    of `seed`. Inputs are (B, 3, H, W) in [0, 1]."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        c_in = 3
        for k, c in enumerate(channels):
            fan_in = c_in * 9
            self.register_buffer(f"weight_{k}", torch.randn(c, c_in, 3, 3, generator=g) * (2.0 / fan_in) ** 0.5,
                                 persistent=False)
            c_in = c
        self.levels = len(channels)

    def features(self, x_b3hw: torch.Tensor) -> list[torch.Tensor]:
        h = (x_b3hw - 0.5) * 4.0   # roughly unit variance for natural images
        out = []
        for k in range(self.levels):
            h = F.relu(F.conv2d(h, getattr(self, f"weight_{k}"), stride=1 if k == 0 else 2, padding=1))
            out.append(h)
        return out

    def forward(self, pred_b3hw: torch.Tensor, target_b3hw: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = self.features(target_b3hw)
        pred_features = self.features(pred_b3hw)
        return sum((p - t).abs().mean() for p, t in zip(pred_features, target_features)) / self.levels


def restorer_loss(pred_b3hw: torch.Tensor, target_b3hw: torch.Tensor, *, random_features: RandomFeatureLoss,
                  charbonnier_weight: float, charbonnier_eps: float, random_feature_weight: float,
                  ssim_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """(total loss, its terms as floats) for (B, 3, H, W) prediction and target."""
    terms = {"charbonnier": charbonnier(pred_b3hw, target_b3hw, charbonnier_eps)}
    total = charbonnier_weight * terms["charbonnier"]
    if random_feature_weight > 0:
        terms["random_feature"] = random_features(pred_b3hw, target_b3hw)
        total = total + random_feature_weight * terms["random_feature"]
    if ssim_weight > 0:
        from earthsynth.metrics.image import ssim_loss
        terms["ssim"] = ssim_loss(pred_b3hw.permute(0, 2, 3, 1), target_b3hw.permute(0, 2, 3, 1)).mean()
        total = total + ssim_weight * terms["ssim"]
    return total, {k: float(v.detach()) for k, v in terms.items()}
