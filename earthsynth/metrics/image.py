"""Image quality: PSNR and SSIM (Wang et al. 2004), differentiable, per image.

Images are (H, W, 3) or (B, H, W, 3): float tensors / arrays in [0, data_range], or uint8 arrays / tensors
(divided by 255, so data_range stays 1.0). One image gives a scalar, a batch gives (B,).

SSIM: Gaussian window (11 taps, sigma 1.5), K1 = 0.01, K2 = 0.03, population (co)variances, the map averaged
over the *valid* interior only (the `window_size // 2` px strip along every border is dropped, where the window
would leave the image). That is what Wang et al.'s MATLAB code and scikit-image's `structural_similarity`
(gaussian_weights=True, use_sample_covariance=False) report, so the numbers agree with scikit-image to float
rounding with no boundary-handling difference: every interior value only reads real pixels.
The map comes from kornia.metrics.ssim (its window sigma is fixed at 1.5); another sigma, or a map that needs
gradients (a loss), uses the same formula with kornia's Gaussian window in one fused grouped convolution.

A `mask` (H, W) or (B, H, W) restricts the mean to the masked pixels (e.g. the pixels a mesh covers); SSIM's
mask is cropped like its map. A masked-out image (no pixel left) raises ConfigError rather than returning NaN.

LPIPS is not here: it needs pretrained AlexNet/VGG weights that do not exist offline, and a metric without its
weights would be a fake (DESIGN.md: skipped, never faked).
"""

from __future__ import annotations

import math

import kornia
import numpy as np
import torch
import torch.nn.functional as F

from earthsynth.errors import ConfigError

K1, K2 = 0.01, 0.03  # Wang et al. 2004


def _to_bhw3(image, name: str, device=None) -> torch.Tensor:
    """(B, H, W, 3) float tensor; uint8 (numpy or torch) is divided by 255."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise ConfigError(f"{name}: expected a torch tensor or numpy array, got {type(image).__name__}")
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    elif not image.is_floating_point():
        raise ConfigError(f"{name}: expected float (in [0, data_range]) or uint8 pixels, got {image.dtype}")
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[-1] != 3:
        raise ConfigError(f"{name}: expected an (H, W, 3) or (B, H, W, 3) image, got shape {tuple(image.shape)}")
    return image if device is None else image.to(device)


def _pair(pred, target) -> tuple[torch.Tensor, torch.Tensor, bool]:
    single = getattr(pred, "ndim", 0) == 3
    p = _to_bhw3(pred, "pred")
    t = _to_bhw3(target, "target", device=p.device)
    if p.shape != t.shape:
        raise ConfigError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    dtype = torch.promote_types(p.dtype, t.dtype)
    return p.to(dtype), t.to(dtype), single


def _mask_bhw(mask, shape_bhw: tuple[int, int, int], device, dtype) -> torch.Tensor | None:
    if mask is None:
        return None
    m = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask, device=device)
    if m.ndim == 2:
        m = m[None].expand(shape_bhw[0], -1, -1)
    if tuple(m.shape) != tuple(shape_bhw):
        raise ConfigError(f"mask shape {tuple(m.shape)} does not match the images' (B, H, W) = {shape_bhw}",
                          hint="give an (H, W) or (B, H, W) mask")
    return m.to(dtype)


def _masked_mean(values_bhw: torch.Tensor, mask_bhw: torch.Tensor | None, what: str) -> torch.Tensor:
    if mask_bhw is None:
        return values_bhw.flatten(1).mean(dim=1)
    weight = mask_bhw.flatten(1).sum(dim=1)
    if bool((weight <= 0).any()):
        raise ConfigError(f"{what}: the mask leaves no pixel in at least one image",
                          hint="check the mask (and, for SSIM, that it reaches past the window_size // 2 border)")
    return (values_bhw * mask_bhw).flatten(1).sum(dim=1) / weight


def psnr(pred, target, *, data_range: float = 1.0, mask=None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE), per image (inf when identical).

    Written out rather than kornia.metrics.psnr, which reduces a batch to one number and has no mask."""
    p, t, single = _pair(pred, target)
    m = _mask_bhw(mask, p.shape[:3], p.device, p.dtype)
    mse = _masked_mean(((p - t) ** 2).mean(dim=-1), m, "psnr")
    out = 10.0 * torch.log10(data_range**2 / mse)
    return out[0] if single else out


def ssim_map(pred, target, *, data_range: float = 1.0, window_size: int = 11,
             sigma: float = 1.5) -> torch.Tensor:
    """(B, H - 2r, W - 2r, 3) SSIM map on the valid interior, r = window_size // 2."""
    p, t, _ = _pair(pred, target)
    if window_size < 3 or window_size % 2 == 0:
        raise ConfigError(f"ssim: window_size must be odd and >= 3, got {window_size}")
    if min(p.shape[1:3]) < window_size:
        raise ConfigError(f"ssim: images of {p.shape[2]}x{p.shape[1]} px are smaller than the "
                          f"{window_size} px window", hint="use larger images or a smaller window_size")
    x, y = p.permute(0, 3, 1, 2).contiguous(), t.permute(0, 3, 1, 2).contiguous()
    if sigma == 1.5 and not (x.requires_grad or y.requires_grad):
        # eps=0: the C1, C2 terms already keep the denominator positive; kornia's eps would bias flat images.
        smap = kornia.metrics.ssim(x, y, window_size, max_val=float(data_range), eps=0.0, padding="valid")
    else:
        smap = _ssim_map_fused(x, y, window_size, float(sigma), float(data_range))
    return smap.permute(0, 2, 3, 1)


def _ssim_map_fused(x, y, window_size: int, sigma: float, data_range: float) -> torch.Tensor:
    """kornia's SSIM map (valid interior, NCHW) for any window sigma, with the five local moments blurred in one
    grouped convolution per axis: under autograd on a CPU this is ~2x faster than kornia's five separate
    filters, which matters when SSIM is a loss (texture optimisation)."""
    channels = x.shape[1]
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    n = stacked.shape[1]
    kernel = kornia.filters.get_gaussian_kernel1d(window_size, sigma, device=x.device, dtype=x.dtype)[0]
    moments = F.conv2d(stacked, kernel.view(1, 1, 1, -1).expand(n, 1, 1, -1).contiguous(), groups=n)
    moments = F.conv2d(moments, kernel.view(1, 1, -1, 1).expand(n, 1, -1, 1).contiguous(), groups=n)
    mx, my, mxx, myy, mxy = moments.split(channels, dim=1)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    vx, vy, vxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    return ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim(pred, target, *, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5,
         mask=None) -> torch.Tensor:
    """Mean SSIM per image over the valid interior (and over `mask`, cropped alike, when given)."""
    smap = ssim_map(pred, target, data_range=data_range, window_size=window_size, sigma=sigma)
    r = window_size // 2
    b, h, w = smap.shape[0], smap.shape[1] + 2 * r, smap.shape[2] + 2 * r
    m = _mask_bhw(mask, (b, h, w), smap.device, smap.dtype)
    if m is not None:
        m = m[:, r:h - r, r:w - r]
    out = _masked_mean(smap.mean(dim=-1), m, "ssim")
    return out[0] if getattr(pred, "ndim", 0) == 3 else out


def ssim_loss(pred, target, **kwargs) -> torch.Tensor:
    """1 - SSIM (a loss to minimise); same arguments as `ssim`."""
    return 1.0 - ssim(pred, target, **kwargs)


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """PSNR in dB of a known mean squared error (inf for 0)."""
    return math.inf if mse <= 0 else 10.0 * math.log10(data_range**2 / mse)
