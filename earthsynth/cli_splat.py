"""`earthsynth splat SCENE --out DIR`: runs the height sweep when its points are missing (the splats are seeded
from them), picks the refiner, then the Skyfall-GS stages. Lives above both pipelines: splat/ never imports mesh/."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from earthsynth.errors import ConfigError

REFINER_NAMES = ("flowedit", "sdedit", "restorer", "none")


def load_refiner(name: str, device=None):
    if name not in REFINER_NAMES:
        raise ConfigError(f"--refiner must be one of {REFINER_NAMES}, got {name!r}")
    if name == "none":
        return None
    if name == "restorer":
        from earthsynth.refine.restorer import load_default_restorer
        return load_default_restorer(device=device)
    from earthsynth.refine.flow_model import load_default_flow_model
    from earthsynth.refine.flowedit import FlowEditRefiner, SDEditRefiner
    model = load_default_flow_model(device=device)
    return FlowEditRefiner(model) if name == "flowedit" else SDEditRefiner(model)


def splat_command(scene: Path, out: Path, *, init: str = "points", mesh_path: Path | None = None,
                  refiner: str = "flowedit", steps: int | None = None, episodes: int | None = None,
                  episode_steps: int | None = None, seed: int = 0, json_output: bool = False, progress: bool = True,
                  console=None):
    from rich.console import Console

    from earthsynth.mesh.mvs import run_mvs
    from earthsynth.splat.pipeline import SplatPipelineConfig, run_splat

    console = console or Console(stderr=True)
    config = SplatPipelineConfig(seed=seed)
    recon = replace(config.reconstruct, init=init, seed=seed, **({"steps": steps} if steps is not None else {}))
    idu = replace(config.idu, seed=seed, **({"steps_per_episode": episode_steps} if episode_steps is not None else {}))
    if episodes is not None:
        idu = replace(idu, curriculum=replace(idu.curriculum, episodes=episodes))
    config = replace(config, reconstruct=recon, idu=idu)
    chosen = load_refiner(refiner)          # fail on a bad name / missing weights before the slow part
    points = Path(out) / "dsm" / "points.ply"
    if init == "points" and not points.is_file():
        console.print("height sweep for the initial points ...")
        run_mvs(Path(scene), Path(out) / "dsm", progress=progress)
    metrics = run_splat(Path(scene), Path(out), config, points_path=points, mesh_path=mesh_path, refiner=chosen,
                        progress=progress, log=lambda text: console.print(text, highlight=False))
    console.print(f"splats -> {Path(out) / 'splats.ply'} ({metrics['num_gaussians']} Gaussians)", highlight=False)
    if json_output:
        print(json.dumps(metrics))
    return metrics
