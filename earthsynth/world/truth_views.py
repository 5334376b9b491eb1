"""`earthsynth render truth SCENE`: render the truth mesh (read back from its GLB) from the test cameras."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from earthsynth.errors import SceneError
from earthsynth.geo.pinhole import camera_from_dict
from earthsynth.io.scene import load_scene
from earthsynth.world.uav import render_test_view


def render_truth_views(scene_root: str | Path, out: str | Path) -> list[Path]:
    from earthsynth.io.atomic import atomic_path
    from earthsynth.io.mesh import read_glb

    scene = load_scene(scene_root)
    mesh_path, views_path = scene.truth_path("mesh"), scene.truth_path("views")
    if mesh_path is None or views_path is None:
        raise SceneError("this scene has no truth mesh / test views", path=scene.root / "scene.json",
                         hint="synthesize one with `earthsynth scene synth`")
    mesh, _ = read_glb(mesh_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, cam in json.loads(views_path.read_text()).items():
        path = out / f"{name}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(render_test_view(mesh, camera_from_dict(cam))).save(tmp)
        paths.append(path)
    return paths
