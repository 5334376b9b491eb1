"""Distribution metrics: FID and KID on features from a pluggable extractor.

    scores = distribution_scores(real_images, generated_images)                     # ProxyFeatures
    scores = distribution_scores(real, fake, InceptionFeatures.from_local_path(p))  # real FID / KID

- `frechet_distance`: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to two feature
  sets (Heusel et al. 2017; MetaEarth evaluates with it). The matrix square root is taken as
  Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), whose argument is symmetric PSD, by eigendecomposition (float64).
- `kernel_inception_distance`: unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
  averaged over random subsets (Binkowski et al. 2018: 100 subsets of 1000).
- `InceptionFeatures.from_local_path`: a user-supplied Inception network (TorchScript, or a torchvision
  inception_v3 state dict in safetensors). Nothing is downloaded: without a local file there is no Inception.
- `ProxyFeatures`: fixed random-convolution features shipped with the project. Scores computed on them are
  reported as `fid_proxy` / `kid_proxy` with the extractor's name: they rank models on the same data, but are
  NOT comparable to published FID / KID values, which use Inception-v3 pool features.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from earthsynth.errors import ConfigError, InputFileError


def _as_features(feats, name: str) -> np.ndarray:
    arr = np.asarray(feats, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ConfigError(f"{name} must be an (N, D) feature matrix with N >= 2, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConfigError(f"{name} has NaN or infinite features")
    return arr


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (mu_a.size, mu_a.size):
        raise ConfigError(f"mismatched statistics: means {mu_a.shape}, {mu_b.shape}; covariances {cov_a.shape}, "
                          f"{cov_b.shape}")
    vals, vecs = np.linalg.eigh((cov_a + cov_a.T) / 2)
    sqrt_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    middle = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt)


def frechet_distance(feats_a, feats_b) -> float:
    """FID between two (N, D) feature sets (Gaussians fitted with the unbiased covariance)."""
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    return frechet_distance_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray, *, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 of two samples with k(x, y) = (x.y / d + coef0)^degree."""
    d = x.shape[1]

    def kernel(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        base = p @ q.T
        base /= d
        base += coef0
        out = base.copy()
        for _ in range(degree - 1):       # repeated products: much faster than a float power
            out *= base
        return out
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    m, n = len(x), len(y)
    term_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(term_x + term_y - 2.0 * k_xy.mean())


def kernel_inception_distance(feats_a, feats_b, *, subset_size: int = 1000, num_subsets: int = 100,
                              seed: int = 0, return_std: bool = False):
    """KID: mean unbiased polynomial MMD^2 over `num_subsets` random subsets of `subset_size` (capped at the
    smaller set). With return_std, (mean, std over subsets)."""
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    if subset_size < 2 or num_subsets < 1:
        raise ConfigError(f"need subset_size >= 2 and num_subsets >= 1, got {subset_size}, {num_subsets}")
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2_unbiased(a[rng.choice(len(a), m, replace=False)],
                                       b[rng.choice(len(b), m, replace=False)]) for _ in range(num_subsets)]
    mean = float(np.mean(values))
    return (mean, float(np.std(values))) if return_std else mean


# --------------------------------------------------------------------------------------------------------------
# feature extractors
# --------------------------------------------------------------------------------------------------------------

def images_to_batch(images, size: int) -> torch.Tensor:
    """A list / stack of images ((H, W, 3) uint8 or float [0, 1], or (3, H, W) tensors) -> (N, 3, size, size)
    float32 in [0, 1], each resized (bilinear, antialiased)."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if not isinstance(images, Sequence) or len(images) == 0:
        raise ConfigError("images must be a non-empty list or a 4-D batch of images")
    out = []
    for i, img in enumerate(images):
        t = img if isinstance(img, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(img))
        if t.ndim != 3:
            raise ConfigError(f"image {i} must be (H, W, 3) or (3, H, W), got {tuple(t.shape)}")
        if t.shape[0] != 3 and t.shape[-1] == 3:
            t = t.permute(2, 0, 1)
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        out.append(F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False,
                                 antialias=True)[0])
    return torch.stack(out)


class ProxyFeatures:
    """Fixed random-convolution texture features + colour statistics (134-D). A PROXY for Inception features:
    scores on them are named `*_proxy` and are not comparable with published FID / KID."""

    name = "proxy-randconv-v1"
    is_proxy = True

    def __init__(self, *, size: int = 64, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.size = size
        self.conv1 = torch.randn(32, 3, 5, 5, generator=g) / (3 * 25) ** 0.5
        self.conv2 = torch.randn(64, 32, 3, 3, generator=g) / (32 * 9) ** 0.5

    @torch.no_grad()
    def __call__(self, images) -> np.ndarray:
        x = images_to_batch(images, self.size) * 2.0 - 1.0
        colour = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
        h1 = F.relu(F.conv2d(x, self.conv1, stride=2, padding=2))
        h2 = F.relu(F.conv2d(h1, self.conv2, stride=2, padding=1))
        texture = torch.cat([h2.mean(dim=(2, 3)), h2.std(dim=(2, 3))], dim=1)
        return torch.cat([colour, texture], dim=1).double().numpy()


class InceptionFeatures:
    """Pool features of a user-supplied Inception network (no download). Input: images resized to
    `input_size` and mapped to [-1, 1] (the FID Inception convention; `normalize=False` passes [0, 1])."""

    is_proxy = False

    def __init__(self, module: torch.nn.Module, *, name: str, input_size: int = 299, normalize: bool = True,
                 device=None, batch_size: int = 32):
        self.module, self.name, self.input_size = module.eval(), name, input_size
        self.normalize, self.device, self.batch_size = normalize, torch.device(device or "cpu"), batch_size
        self.module.to(self.device)

    @classmethod
    def from_local_path(cls, path: str | Path, *, device=None, input_size: int = 299,
                        normalize: bool = True) -> InceptionFeatures:
        """Load a TorchScript file (.pt / .pth / .ts: `torch.jit.save` of a module mapping (N, 3, H, W) to
        (N, D) or (N, D, 1, 1)) or a safetensors state dict of torchvision's inception_v3."""
        path = Path(path)
        if not path.is_file():
            raise InputFileError("no Inception weights at this path", path=path,
                                 hint="give a local TorchScript (.pt) or safetensors Inception file; nothing is "
                                      "downloaded. Without one, use ProxyFeatures (scores named *_proxy)")
        if path.suffix == ".safetensors":
            module = _torchvision_inception(path)
        else:
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except (RuntimeError, ValueError) as exc:
                raise InputFileError(f"not a TorchScript module ({exc})", path=path,
                                     hint="save the network with torch.jit.save(torch.jit.script(net), path)") from None
        return cls(module, name=f"inception:{path.name}", input_size=input_size, normalize=normalize, device=device)

    @torch.no_grad()
    def __call__(self, images) -> np.ndarray:
        x = images_to_batch(images, self.input_size)
        x = x * 2.0 - 1.0 if self.normalize else x
        feats = [self.module(x[i: i + self.batch_size].to(self.device)).float().cpu()
                 for i in range(0, len(x), self.batch_size)]
        out = torch.cat([f.reshape(f.shape[0], -1) for f in feats])
        return out.double().numpy()


def _torchvision_inception(path: Path) -> torch.nn.Module:
    try:
        from torchvision.models import inception_v3
    except ImportError:
        raise InputFileError("a safetensors Inception needs torchvision's inception_v3 architecture, which is "
                             "not installed", path=path,
                             hint="give a TorchScript file instead (torch.jit.save), or install torchvision") from None
    from safetensors.torch import load_file
    net = inception_v3(weights=None, aux_logits=False, init_weights=False)
    try:
        net.load_state_dict(load_file(str(path)), strict=False)
    except (RuntimeError, ValueError) as exc:
        raise InputFileError(f"not an inception_v3 state dict ({exc})", path=path) from None
    net.fc = torch.nn.Identity()
    return net


def distribution_scores(real_images, generated_images, extractor=None, *, kid_subset_size: int = 1000,
                        kid_subsets: int = 100, seed: int = 0) -> dict:
    """FID and KID between two image sets. With a proxy extractor (the default, `ProxyFeatures`) the keys are
    fid_proxy / kid_proxy; with an Inception extractor, fid / kid. Always names the extractor."""
    extractor = extractor or ProxyFeatures()
    real, fake = extractor(real_images), extractor(generated_images)
    suffix = "_proxy" if getattr(extractor, "is_proxy", True) else ""
    return {f"fid{suffix}": frechet_distance(real, fake),
            f"kid{suffix}": kernel_inception_distance(real, fake, subset_size=kid_subset_size,
                                                      num_subsets=kid_subsets, seed=seed),
            "extractor": extractor.name, "n_real": len(real), "n_generated": len(fake)}
