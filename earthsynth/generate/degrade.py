"""High-order degradation (Real-ESRGAN, used by MetaEarth to make LR/HR training pairs).

    lr_chw = degrade(hr_chw, scale=4, generator=seed)

Two rounds of the classical model D(x) = JPEG(noise(resize(blur(x)))), then the final resize to H/scale x W/scale
with an optional sinc (ringing) filter, JPEG and final filter in random order, exactly as Real-ESRGAN's
`RealESRGANModel.feed_data` (defaults of its `train_realesrnet_x4plus.yml`, which MetaEarth says it follows).
Kernels (isotropic / anisotropic Gaussian, generalized Gaussian, plateau, 2D sinc) are computed here in torch;
JPEG goes through PIL. Every random draw comes from one torch.Generator, so the same seed gives the same bytes.
Differences to Real-ESRGAN: JPEG qualities are integers (PIL) rather than DiffJPEG's real values, and blur padding
falls back from reflect to replicate when the image is smaller than the kernel (tiny crops in tests).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from earthsynth.errors import ConfigError

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")


@dataclass(frozen=True)
class DegradationStage:
    """One round of blur -> resize -> noise -> JPEG (Real-ESRGAN names in comments)."""

    blur_prob: float = 1.0                                   # first round always blurs; second_blur_prob 0.8
    kernel_probabilities: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # kernel_prob, over KERNEL_TYPES
    sinc_prob: float = 0.1                                   # sinc_prob: a sinc kernel instead of the above
    blur_sigma: tuple[float, float] = (0.2, 3.0)             # blur_sigma
    betag_range: tuple[float, float] = (0.5, 4.0)            # generalized Gaussian shape
    betap_range: tuple[float, float] = (1.0, 2.0)            # plateau shape
    resize_probabilities: tuple[float, float, float] = (0.2, 0.7, 0.1)  # resize_prob: up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)          # resize_range
    gaussian_noise_prob: float = 0.5                         # else Poisson noise
    noise_range: tuple[float, float] = (1.0, 30.0)           # Gaussian sigma, in 1/255 units
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        for name in ("blur_prob", "sinc_prob", "gaussian_noise_prob", "gray_noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"DegradationStage.{name} must be a probability, got {getattr(self, name)}")
        for name, count in (("kernel_probabilities", len(KERNEL_TYPES)), ("resize_probabilities", 3)):
            probs = getattr(self, name)
            if len(probs) != count or min(probs) < 0 or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
                raise ConfigError(f"DegradationStage.{name} must be {count} probabilities summing to 1, got {probs}")
        for name in ("blur_sigma", "betag_range", "betap_range", "resize_range", "noise_range",
                     "poisson_scale_range", "jpeg_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError(f"DegradationStage.{name} must be a range 0 < lo <= hi, got {(lo, hi)}")
        if self.jpeg_range[1] > 100:
            raise ConfigError(f"JPEG quality goes up to 100, got {self.jpeg_range}")


@dataclass(frozen=True)
class DegradationConfig:
    first: DegradationStage = DegradationStage()
    second: DegradationStage = DegradationStage(
        blur_prob=0.8, blur_sigma=(0.2, 1.5), resize_probabilities=(0.3, 0.4, 0.3), resize_range=(0.3, 1.2),
        noise_range=(1.0, 25.0), poisson_scale_range=(0.05, 2.5))   # Real-ESRGAN's "2" settings
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)  # kernel_range
    final_sinc_prob: float = 0.8

    def __post_init__(self) -> None:
        if not self.kernel_sizes or any(k < 3 or k % 2 == 0 for k in self.kernel_sizes):
            raise ConfigError(f"kernel_sizes must be odd sizes >= 3, got {self.kernel_sizes}")
        if not 0.0 <= self.final_sinc_prob <= 1.0:
            raise ConfigError(f"final_sinc_prob must be a probability, got {self.final_sinc_prob}")


def as_generator(generator: torch.Generator | int) -> torch.Generator:
    """A CPU torch.Generator from a seed, or the generator itself."""
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    raise ConfigError(f"expected a seed (int) or a torch.Generator, got {type(generator).__name__}")


# -------------------------------------------------------------------------------------------------------------
# random draws
# -------------------------------------------------------------------------------------------------------------

def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _choice(g: torch.Generator, probs) -> int:
    return int(torch.multinomial(torch.tensor(probs, dtype=torch.float64), 1, generator=g))


def _shape_beta(g: torch.Generator, beta_range: tuple[float, float]) -> float:
    """Real-ESRGAN: half the time below 1, half the time above 1."""
    if _uniform(g, 0.0, 1.0) < 0.5 and beta_range[0] < 1.0:
        return _uniform(g, beta_range[0], 1.0)
    return _uniform(g, max(1.0, beta_range[0]), beta_range[1])


# -------------------------------------------------------------------------------------------------------------
# kernels (float64, normalised to sum 1)
# -------------------------------------------------------------------------------------------------------------

def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    return torch.meshgrid(ax, ax, indexing="xy")


def anisotropic_kernel(size: int, sigma_x: float, sigma_y: float, rotation: float, *, beta: float = 1.0,
                       shape: str = "gaussian") -> torch.Tensor:
    """Gaussian-family kernel on a size x size grid; covariance R diag(sx^2, sy^2) R^T.

    shape "gaussian": exp(-q / 2); "generalized": exp(-q ** beta / 2); "plateau": 1 / (1 + q ** beta), where q is
    the squared Mahalanobis distance (Real-ESRGAN's bivariate kernels)."""
    xx, yy = _grid(size)
    c, s = math.cos(rotation), math.sin(rotation)
    u, v = c * xx + s * yy, -s * xx + c * yy
    q = (u / sigma_x) ** 2 + (v / sigma_y) ** 2
    if shape == "gaussian":
        k = torch.exp(-0.5 * q)
    elif shape == "generalized":
        k = torch.exp(-0.5 * q**beta)
    elif shape == "plateau":
        k = 1.0 / (1.0 + q**beta)
    else:
        raise ConfigError(f"unknown kernel shape {shape!r}")
    return k / k.sum()


def sinc_kernel(size: int, cutoff: float) -> torch.Tensor:
    """2D circular low-pass (sinc) kernel with cutoff frequency `cutoff` (rad/px): ringing artefacts."""
    xx, yy = _grid(size)
    r = torch.sqrt(xx**2 + yy**2)
    safe = torch.where(r == 0, torch.ones_like(r), r)
    k = cutoff * torch.special.bessel_j1(cutoff * safe) / (2 * math.pi * safe)
    k = torch.where(r == 0, torch.full_like(r, cutoff**2 / (4 * math.pi)), k)
    return k / k.sum()


def _random_blur_kernel(g: torch.Generator, stage: DegradationStage, sizes: tuple[int, ...]) -> torch.Tensor:
    size = sizes[_choice(g, [1.0] * len(sizes))]
    if _uniform(g, 0.0, 1.0) < stage.sinc_prob:
        cutoff = _uniform(g, math.pi / 3, math.pi) if size < 13 else _uniform(g, math.pi / 5, math.pi)
        return sinc_kernel(size, cutoff)
    kind = KERNEL_TYPES[_choice(g, stage.kernel_probabilities)]
    sigma_x = _uniform(g, *stage.blur_sigma)
    sigma_y, rotation = sigma_x, 0.0
    if kind.endswith("aniso"):
        sigma_y = _uniform(g, *stage.blur_sigma)
        rotation = _uniform(g, -math.pi, math.pi)
    shape, beta = "gaussian", 1.0
    if kind.startswith("generalized"):
        shape, beta = "generalized", _shape_beta(g, stage.betag_range)
    elif kind.startswith("plateau"):
        shape, beta = "plateau", _shape_beta(g, stage.betap_range)
    return anisotropic_kernel(size, sigma_x, sigma_y, rotation, beta=beta, shape=shape)


def filter2d(img_chw: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel with `kernel` (reflect padding, replicate when the image is too small)."""
    c, h, w = img_chw.shape
    pad = kernel.shape[-1] // 2
    mode = "reflect" if pad < min(h, w) else "replicate"
    x = F.pad(img_chw[None], (pad, pad, pad, pad), mode=mode)
    weight = kernel.to(img_chw.dtype).to(img_chw.device)[None, None].expand(c, 1, -1, -1)
    return F.conv2d(x, weight, groups=c)[0]


# -------------------------------------------------------------------------------------------------------------
# the operations
# -------------------------------------------------------------------------------------------------------------

def _resize(img_chw: torch.Tensor, size_hw: tuple[int, int], mode: str) -> torch.Tensor:
    size_hw = (max(1, size_hw[0]), max(1, size_hw[1]))
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(img_chw[None], size=size_hw, mode=mode, **kwargs)[0]


def _random_mode(g: torch.Generator) -> str:
    return RESIZE_MODES[_choice(g, [1.0] * len(RESIZE_MODES))]


def _random_resize(g: torch.Generator, img: torch.Tensor, stage: DegradationStage,
                   reference_hw: tuple[int, int]) -> torch.Tensor:
    kind = _choice(g, stage.resize_probabilities)
    factor = (_uniform(g, 1.0, stage.resize_range[1]) if kind == 0
              else _uniform(g, stage.resize_range[0], 1.0) if kind == 1 else 1.0)
    mode = _random_mode(g)
    size = (int(reference_hw[0] * factor), int(reference_hw[1] * factor))
    return _resize(img, size, mode).clamp(0.0, 1.0)


def _gray(img_chw: torch.Tensor) -> torch.Tensor:
    if img_chw.shape[0] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=img_chw.dtype, device=img_chw.device)
        return (img_chw * weights[:, None, None]).sum(0, keepdim=True)
    return img_chw.mean(0, keepdim=True)


def _random_noise(g: torch.Generator, img: torch.Tensor, stage: DegradationStage) -> torch.Tensor:
    gaussian = _uniform(g, 0.0, 1.0) < stage.gaussian_noise_prob
    gray = _uniform(g, 0.0, 1.0) < stage.gray_noise_prob
    if gaussian:
        sigma = _uniform(g, *stage.noise_range) / 255.0
        shape = (1, *img.shape[1:]) if gray else tuple(img.shape)
        noise = torch.randn(shape, generator=g, dtype=torch.float32).to(img.device, img.dtype) * sigma
    else:
        scale = _uniform(g, *stage.poisson_scale_range)
        base = _gray(img) if gray else img
        levels = torch.unique(torch.round(base * 255.0)).numel()
        vals = 2.0 ** math.ceil(math.log2(max(levels, 1)))
        counts = torch.poisson((base.clamp(0.0, 1.0) * vals).to("cpu", torch.float32), generator=g)
        noise = (counts.to(img.device, img.dtype) / vals - base) * scale
    return (img + noise).clamp(0.0, 1.0)


def jpeg(img_chw: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip through PIL (RGB for 3 channels, each channel as grayscale otherwise)."""
    arr = (img_chw.detach().to("cpu", torch.float32).clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    planes = [arr.transpose(1, 2, 0)] if arr.shape[0] == 3 else list(arr)
    decoded = []
    for plane in planes:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(plane)).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        decoded.append(np.asarray(Image.open(buf)))
    out = decoded[0].transpose(2, 0, 1) if arr.shape[0] == 3 else np.stack(decoded)
    return torch.from_numpy(out.astype(np.float32) / 255.0).to(img_chw.device, img_chw.dtype)


def _random_jpeg(g: torch.Generator, img: torch.Tensor, stage: DegradationStage) -> torch.Tensor:
    lo, hi = stage.jpeg_range
    return jpeg(img, int(lo + int(torch.randint(0, hi - lo + 1, (), generator=g))))


def _stage(g, img, stage: DegradationStage, sizes, reference_hw) -> torch.Tensor:
    if _uniform(g, 0.0, 1.0) < stage.blur_prob:
        img = filter2d(img, _random_blur_kernel(g, stage, sizes))
    img = _random_resize(g, img, stage, reference_hw)
    return _random_noise(g, img, stage)


def _final(g, img, config: DegradationConfig, lr_hw: tuple[int, int]) -> torch.Tensor:
    if _uniform(g, 0.0, 1.0) < config.final_sinc_prob:
        size = config.kernel_sizes[_choice(g, [1.0] * len(config.kernel_sizes))]
        sinc = sinc_kernel(size, _uniform(g, math.pi / 3, math.pi))
    else:
        sinc = None
    jpeg_first = _uniform(g, 0.0, 1.0) < 0.5
    if jpeg_first:
        img = _random_jpeg(g, img, config.second)
    img = _resize(img, lr_hw, _random_mode(g))
    if sinc is not None:
        img = filter2d(img, sinc)
    if not jpeg_first:
        img = _random_jpeg(g, img.clamp(0.0, 1.0), config.second)
    return img


def degrade(hr_chw: torch.Tensor, *, scale: int = 4, generator: torch.Generator | int,
            config: DegradationConfig = DegradationConfig()) -> torch.Tensor:
    """High-order degradation of one image (C, H, W) in [0, 1] -> (C, H/scale, W/scale) in [0, 1].

    Quantised to 1/255 steps like any 8-bit image; same generator state -> same bytes."""
    if not isinstance(hr_chw, torch.Tensor) or hr_chw.ndim != 3 or not hr_chw.is_floating_point():
        raise ConfigError("degrade expects a float tensor (C, H, W) in [0, 1]")
    c, h, w = hr_chw.shape
    if not isinstance(scale, int) or scale < 1 or h % scale or w % scale:
        raise ConfigError(f"image {h}x{w} px is not divisible by scale={scale}",
                          hint="crop the HR image to a multiple of the scale first")
    if not bool(torch.isfinite(hr_chw).all()):
        raise ConfigError("degrade input has NaN or infinite pixels")
    g = as_generator(generator)
    lr_hw = (h // scale, w // scale)
    img = _stage(g, hr_chw.clamp(0.0, 1.0), config.first, config.kernel_sizes, (h, w))
    img = _random_jpeg(g, img, config.first)
    img = _stage(g, img, config.second, config.kernel_sizes, lr_hw)
    img = _final(g, img, config, lr_hw)
    return (img.clamp(0.0, 1.0) * 255.0).round() / 255.0
