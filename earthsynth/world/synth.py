"""`earthsynth scene synth`: the procedural world -> a scene folder with its ground truth.

    images/<view>.tif      satellite views (uint8 RGB) with RPCs fitted to the exact cameras
    truth/cameras/*.json   the exact cameras
    truth/dsm.tif          DSM in the scene CRS, ellipsoidal heights
    truth/points.ply       dense points sampled on the truth mesh (ENU metres)
    truth/mesh.glb         the truth mesh
    truth/views/           low-altitude test views + views.json
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


from earthsynth.io.scene import Scene, ViewRecord, save_scene_json, utm_crs_for


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    size_m: float = 300.0
    num_views: int = 10              # Skyfall-GS / Orbit-to-Ground style multi-date acquisitions
    view_size: int = 512
    gsd_m: float | None = None       # None: just enough to cover the scene (0.3 m at least)
    supersample: int = 2             # anti-aliasing of the satellite renders
    cars_per_view: int = 25          # transient objects that differ between dates
    truth_dsm_gsd_m: float = 0.5
    truth_points: int = 400_000
    test_view_size: int = 256

    def view_gsd(self) -> float:
        if self.gsd_m is not None:
            return self.gsd_m
        return max(0.3, round(self.size_m * 1.1 / self.view_size, 3))


def synthesize_scene(config: SynthConfig, out: str | Path, *, progress: bool = False) -> Scene:
    """Build the world, render its satellite views and truth, write the scene folder atomically."""
    from rich.progress import Progress

    from earthsynth.io.atomic import atomic_dir
    from earthsynth.world.build import WorldConfig, build_world
    from earthsynth.world.satellite_render import render_satellite_views
    from earthsynth.world.truth import write_truth

    out = Path(out)
    with atomic_dir(out) as tmp, Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("building the world", total=None)
        world = build_world(WorldConfig(seed=config.seed, size_m=config.size_m))
        bar.update(task, description=f"rendering {config.num_views} satellite views", total=config.num_views,
                   completed=0)
        records = render_satellite_views(world, config, tmp, on_view=lambda: bar.advance(task))
        bar.update(task, description="writing the truth (DSM, points, mesh, test views)", total=None)
        truth = write_truth(world, config, tmp)
        frame = world.frame
        scene = Scene(
            root=out, name=out.name, origin=frame.to_dict(), crs=utm_crs_for(frame.lon0, frame.lat0),
            gsd=config.view_gsd(), height_range=(frame.alt0 + world.height_range[0] - 5.0,
                                                 frame.alt0 + world.height_range[1] + 5.0),
            bounds_enu=tuple(float(b) for b in world.bounds_xy), views=tuple(records), truth=truth,
            source=f"earthsynth synthetic world {json.dumps(asdict(config))}")
        save_scene_json(scene, tmp)
    return scene


__all__ = ["SynthConfig", "synthesize_scene", "ViewRecord"]
