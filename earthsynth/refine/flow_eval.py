"""Validation of the FlowEdit / SDEdit refiners on held-out render pairs (the numbers in weights/flowedit/RECIPE.md).

    python -m earthsynth.refine.flow_eval --run runs/flow_refiner            # shipped weights, held-out world
    python -m earthsynth.refine.flow_eval --run runs/flow_refiner --model runs/flow_refiner/model

For the degraded input, FlowEdit's output and SDEdit's output it reports, against the clean render of the same
view: PSNR and SSIM (earthsynth.metrics.image), PSNR of 4x down-sampled images (coarse structure), and
distribution statistics, since FlowEdit is generative and is not expected to reproduce the clean pixels: the
mean gradient magnitude (sharpness) as a ratio to the clean images', the 1-Wasserstein distance between the
gradient-magnitude distributions, and the KID proxy (earthsynth.metrics.distribution, random-convolution
features) to the clean set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from earthsynth.io.training import exit_on_user_error
from earthsynth.refine.flow_model import QualityFlowModel, load_default_flow_model
from earthsynth.refine.flowedit import FlowEditConfig, FlowEditRefiner, SDEditRefiner


def mean_gradient_magnitude(images_bhw3: torch.Tensor) -> torch.Tensor:
    """Per image: mean of sqrt(dx^2 + dy^2) of the luminance (forward differences), images in [0, 1]."""
    return gradient_magnitudes(images_bhw3).reshape(len(images_bhw3), -1).mean(dim=1)


def gradient_magnitudes(images_bhw3: torch.Tensor) -> torch.Tensor:
    """All per-pixel luminance gradient magnitudes of a set of images, flattened (float64)."""
    lum = images_bhw3.double() @ torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    dx, dy = lum[:, :-1, 1:] - lum[:, :-1, :-1], lum[:, 1:, :-1] - lum[:, :-1, :-1]
    return torch.sqrt(dx ** 2 + dy ** 2).reshape(-1)


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor, *, quantiles: int = 1000) -> float:
    """W1 distance between two 1-D samples: the mean |difference| of their quantile functions."""
    q = (torch.arange(quantiles, dtype=torch.float64) + 0.5) / quantiles
    return float((torch.quantile(a, q) - torch.quantile(b, q)).abs().mean())


def _area_down(images_bhw3: torch.Tensor, factor: int) -> torch.Tensor:
    x = images_bhw3.permute(0, 3, 1, 2)
    return torch.nn.functional.avg_pool2d(x, factor).permute(0, 2, 3, 1)


def image_statistics(images_bhw3: torch.Tensor, clean_bhw3: torch.Tensor, *, kid: bool = True) -> dict:
    """Against the clean renders of the same views: PSNR / SSIM, PSNR after 4x area down-sampling (is the
    coarse structure kept?), mean-gradient (sharpness) ratio, W1 distance between the gradient-magnitude
    distributions (x 1000; do the edges look like clean ones, or like noise?), and (kid=True) the KID proxy."""
    from earthsynth.metrics.image import psnr, ssim
    out = {"psnr": float(psnr(images_bhw3, clean_bhw3).mean()),
           "ssim": float(ssim(images_bhw3, clean_bhw3).mean()),
           "psnr_low": float(psnr(_area_down(images_bhw3, 4), _area_down(clean_bhw3, 4)).mean()),
           "sharpness_ratio": float(mean_gradient_magnitude(images_bhw3).mean()
                                    / mean_gradient_magnitude(clean_bhw3).mean()),
           "gradient_w1_x1000": 1000.0 * wasserstein_1d(gradient_magnitudes(images_bhw3),
                                                        gradient_magnitudes(clean_bhw3))}
    if kid and len(images_bhw3) >= 4:
        from earthsynth.metrics.distribution import ProxyFeatures, kernel_inception_distance
        features = ProxyFeatures(size=int(images_bhw3.shape[1]))   # full size: the edit is fine texture
        out["kid_proxy"] = kernel_inception_distance(features(clean_bhw3), features(images_bhw3),
                                                     subset_size=len(images_bhw3), num_subsets=20)
    return out


def evaluate(model: QualityFlowModel, degraded_bhw3: np.ndarray, clean_bhw3: np.ndarray, *,
             flowedit: FlowEditConfig = FlowEditConfig(), sdedit_strength: float = 0.35, sdedit_steps: int = 28,
             seed: int = 0, kid: bool = True) -> dict:
    """Statistics of the degraded input, FlowEdit and SDEdit outputs (uint8 pairs in, as rendered)."""
    degraded = torch.from_numpy(np.asarray(degraded_bhw3)).float() / 255.0
    clean = torch.from_numpy(np.asarray(clean_bhw3)).float() / 255.0
    results = {"n_images": len(degraded), "flowedit_config": {k: getattr(flowedit, k) for k in
                                                                ("num_steps", "n_min", "n_max", "n_avg", "guidance")},
               "sdedit_config": {"strength": sdedit_strength, "num_steps": sdedit_steps},
               "degraded": image_statistics(degraded, clean, kid=kid),
               "clean": {"sharpness_ratio": 1.0}}
    for name, refiner in (("flowedit", FlowEditRefiner(model, flowedit)),
                          ("sdedit", SDEditRefiner(model, sdedit_strength, sdedit_steps))):
        results[name] = image_statistics(refiner.refine(degraded, seed=seed), clean, kid=kid)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Validate FlowEdit / SDEdit on held-out render pairs.")
    parser.add_argument("--run", type=Path, required=True, help="training run folder (its held-out pairs cache)")
    parser.add_argument("--model", type=Path, help="model folder (default: the shipped weights)")
    parser.add_argument("--pairs", type=int, default=32, help="how many held-out pairs")
    parser.add_argument("--n-max", type=int, help="FlowEdit n_max (default FlowEditConfig)")
    parser.add_argument("--n-min", type=int, help="FlowEdit n_min")
    parser.add_argument("--n-avg", type=int, help="FlowEdit n_avg")
    parser.add_argument("--guidance", type=float, help="FlowEdit guidance")
    parser.add_argument("--strength", type=float, default=0.35, help="SDEdit strength")
    args = parser.parse_args(argv)
    from dataclasses import replace

    from earthsynth.refine.flow_train import FlowTrainConfig, load_validation_pairs
    with exit_on_user_error():
        model = QualityFlowModel.from_pretrained(args.model) if args.model else load_default_flow_model()
        config_path = args.run / "config.json"
        config = FlowTrainConfig.from_dict(json.loads(config_path.read_text())) if config_path.is_file() \
            else FlowTrainConfig()
        degraded, clean = load_validation_pairs(config, args.run)
        overrides = {k: v for k, v in (("n_max", args.n_max), ("n_min", args.n_min), ("n_avg", args.n_avg),
                                       ("guidance", args.guidance)) if v is not None}
        result = evaluate(model, degraded[: args.pairs], clean[: args.pairs],
                          flowedit=replace(FlowEditConfig(), **overrides), sdedit_strength=args.strength)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
