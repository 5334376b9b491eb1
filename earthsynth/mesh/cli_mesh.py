"""`earthsynth mesh SCENE --out DIR`: the Orbit to Ground pipeline as a command (declared in earthsynth.cli)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path


def mesh_command(scene: Path, out: Path, *, refiner: str = "restorer", iterations: int = 2,
                 geometry_steps: int | None = None, texture_steps: int | None = None, seed: int = 0,
                 json_output: bool = False, progress: bool = True, console=None):
    from rich.console import Console

    from earthsynth.mesh.pipeline import MeshPipelineConfig, run_mesh

    console = console or Console(stderr=True)
    config = MeshPipelineConfig(refiner=refiner, seed=seed)
    config = replace(config, refinement=replace(config.refinement, iterations=iterations, seed=seed))
    if geometry_steps is not None:
        config = replace(config, geometry=replace(config.geometry, steps=geometry_steps))
    if texture_steps is not None:
        config = replace(config, texture=replace(config.texture, steps=texture_steps))
    result = run_mesh(Path(scene), Path(out), config, progress=progress,
                      log=lambda text: console.print(text, highlight=False))
    console.print(f"textured mesh -> {result.mesh_path}; DSM -> {result.dsm_path}", highlight=False)
    if json_output:
        print(json.dumps(result.metrics))
    return result
