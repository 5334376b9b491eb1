"""Pinhole approximations for every view of a scene folder (`earthsynth cameras approx`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from earthsynth.geo.approx import ApproxConfig, PinholeApproximation, approximate_rpc
from earthsynth.io.scene import load_scene


def approximate_scene_cameras(scene_root: str | Path, config: ApproxConfig = ApproxConfig()
                              ) -> Iterator[tuple[str, PinholeApproximation]]:
    """Yield (view name, approximation) and write cameras/<view>.json for each view."""
    scene = load_scene(scene_root)
    (scene.root / "cameras").mkdir(exist_ok=True)
    for view in scene.views:
        approx = approximate_rpc(scene.rpc(view.name), scene.frame, view.width, view.height,
                                 scene.height_range, config)
        path = scene.camera_path(view.name)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(approx.to_dict(), indent=2))
        tmp.replace(path)
        yield view.name, approx
