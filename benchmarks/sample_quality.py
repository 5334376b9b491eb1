"""Benchmark: what a MetaEarth model's x4 samples look like against the truth, on held-out training-source crops.

For N held-out triples (64 px HR crops of `presets.shipped_sources()` drawn with seeds 20000.., their x4 degraded
conditions, their true m/px) and each model, DDIM at the given step counts (strength: the model's default, see
earthsynth.generate.sample) and one JSON line per (model, steps):

    {"model", "steps", "strength", "mae_vs_hr", "max_mean_shift_vs_bicubic", "hf_energy", "hf_energy_hr", "n"}

- mae_vs_hr: mean |sample - HR| in [0, 1] (the bicubic up-sampling's is printed as model "bicubic");
- max_mean_shift_vs_bicubic: the largest per-image, per-channel mean difference from the bicubic up-sampling (a
  colour cast shows here: the condition fixes each window's mean colour);
- hf_energy: mean |x - 3x3 box blur of x| (texture; the HR's is hf_energy_hr).

    python benchmarks/sample_quality.py [--models shipped runs/metaearth_residual/checkpoints/step_003000]
                                        [--steps 10 20] [--n 12] [--grid out.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def load(spec: str):
    from earthsynth.generate.weights import load_default_model
    if spec == "shipped":
        return load_default_model()
    from safetensors.torch import load_file

    from earthsynth.generate.config import DenoiserConfig
    from earthsynth.generate.model import MetaEarthDenoiser
    folder = Path(spec)
    if (folder / "ema.safetensors").is_file():                      # a training checkpoint
        state = json.loads((folder / "state.json").read_text())
        model = MetaEarthDenoiser(DenoiserConfig.from_dict(state["config"]["model"]))
        model.load_state_dict(load_file(str(folder / "ema.safetensors")), strict=False)
        return model.eval()
    return MetaEarthDenoiser.from_pretrained(folder).eval()         # an exported model folder


def high_frequency(x: torch.Tensor) -> float:
    return float((x - F.avg_pool2d(x, 3, 1, 1)).abs().mean())


def main() -> None:
    from earthsynth.generate.data import TripletDataset
    from earthsynth.generate.presets import shipped_sources
    from earthsynth.generate.sample import default_strength, sample

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["shipped"])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--grid", type=Path, help="PNG: bicubic | each model's last samples | HR, one row each")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = TripletDataset(shipped_sources(), crop_px=64)
    items = [dataset.item(20_000 + i) for i in range(args.n)]
    hr, lr = torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items])
    resolutions = [it[2] for it in items]
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    common = {"hf_energy_hr": round(high_frequency(hr), 4), "n": args.n}
    print(json.dumps({"model": "bicubic", "mae_vs_hr": round(float((bicubic - hr).abs().mean()), 4),
                      "max_mean_shift_vs_bicubic": 0.0, "hf_energy": round(high_frequency(bicubic), 4), **common}))
    columns = [bicubic]
    for spec in args.models:
        model = load(spec)
        for steps in args.steps:
            out = sample(model, lr, resolutions, steps=steps, generator=0)
            print(json.dumps({"model": spec, "steps": steps, "strength": default_strength(model),
                              "mae_vs_hr": round(float((out - hr).abs().mean()), 4),
                              "max_mean_shift_vs_bicubic": round(float((out - bicubic).mean((2, 3)).abs().max()), 4),
                              "hf_energy": round(high_frequency(out), 4), **common}), flush=True)
        columns.append(out)
    if args.grid:
        from PIL import Image
        columns.append(hr)
        grid = torch.cat([torch.cat([c[i] for c in columns], 2) for i in range(len(items))], 1)
        Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)).save(args.grid)


if __name__ == "__main__":
    main()
