"""Benchmark: Orbit to Ground's appearance on low-altitude views, basic texture vs after the restoration
refinement (paper 003: iterative refinement along UAV paths with the one-step restorer; goal: refinement improves
both PSNR and SSIM), plus the time of every stage of the pipeline on the same scene.

Per seed: a synthetic scene (`SynthConfig(seed, size_m)`: 10 views of 512 px), `earthsynth cameras approx`, then
`run_mesh` with the CPU defaults and the shipped restorer. Scores are PSNR / SSIM of the unlit textured-mesh
render against the truth oblique views (45 degrees, 80 m and 160 m altitude), averaged over those views.
Prints one JSON line per (seed, texture) and one per (seed, stage timing):

    {"seed": s, "texture": "basic" | "refined", "psnr": x, "ssim": y}
    {"seed": s, "stage": "dsm" | "geometry" | "texture" | "refine", "seconds": t}

    python benchmarks/appearance.py [--seeds 0 1 2] [--size 300] [--out /tmp/appearance_bench]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run_seed(seed: int, size_m: float, root: Path) -> list[dict]:
    from earthsynth.io.scene_cameras import approximate_scene_cameras
    from earthsynth.mesh.pipeline import MeshPipelineConfig, run_mesh
    from earthsynth.world.synth import SynthConfig, synthesize_scene

    scene = root / f"scene_{seed}"
    if not (scene / "scene.json").is_file():
        synthesize_scene(SynthConfig(seed=seed, size_m=size_m), scene)
    for _ in approximate_scene_cameras(scene):
        pass
    result = run_mesh(scene, root / f"run_{seed}", MeshPipelineConfig(seed=seed), progress=False,
                      log=lambda _: None)
    rows = []
    for key, label in (("basic_texture", "basic"), ("refined", "refined")):
        scores = result.metrics.get("appearance", {}).get(key)
        if scores:
            rows.append({"seed": seed, "texture": label, "psnr": round(scores["psnr"], 3),
                         "ssim": round(scores["ssim"], 4)})
    for stage, seconds in result.metrics["seconds"].items():
        rows.append({"seed": seed, "stage": stage, "seconds": round(seconds, 1)})
    geometry = result.metrics.get("geometry", {}).get("points")
    if geometry:
        rows.append({"seed": seed, "geometry_f1": round(geometry["f1"], 4), "chamfer": round(geometry["chamfer"], 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/appearance_bench"))
    args = parser.parse_args()
    for seed in args.seeds:
        for row in run_seed(seed, args.size, args.out):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
