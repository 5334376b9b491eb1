"""Render a world's satellite views into a scene folder: GeoTIFF + fitted RPC per view, exact cameras in truth/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from earthsynth.io.mesh import TexturedMesh
from earthsynth.io.scene import ViewRecord
from earthsynth.render.shading import random_appearance, shade_view, sun_direction
from earthsynth.world.satellite import ViewSpec, fit_view_rpc, plan_views, satellite_camera

# the synthetic acquisitions are dated one pass every few days from this day (informative metadata only)
FIRST_DATE = np.datetime64("2025-04-02T10:30:00")
RPC_FIT_TOLERANCE_PX = 0.01


def with_transients(mesh: TexturedMesh, cars: TexturedMesh) -> TexturedMesh:
    """The world mesh plus per-date cars; both index the same texture atlas."""
    if cars.num_faces == 0:
        return mesh
    return TexturedMesh(
        vertices_n3=np.concatenate([mesh.vertices_n3, cars.vertices_n3]),
        faces_f3=np.concatenate([mesh.faces_f3, cars.faces_f3 + len(mesh.vertices_n3)]),
        uvs_n2=np.concatenate([mesh.uvs_n2, cars.uvs_n2]),
        texture_hw3=mesh.texture_hw3)


def render_view(world, spec: ViewSpec, config) -> tuple[np.ndarray, object]:
    """uint8 (3, H, W) image and the exact camera of one acquisition."""
    from earthsynth.world.cars import sample_cars

    rng = np.random.default_rng(spec.seed)
    ground_z = float(np.ravel(world.terrain.height(np.array([0.0]), np.array([0.0])))[0])
    camera = satellite_camera(np.array([0.0, 0.0, ground_z]), spec.off_nadir_deg, spec.azimuth_deg,
                              config.view_gsd(), config.view_size)
    mesh = with_transients(world.mesh_full, sample_cars(world, rng, config.cars_per_view))
    shaded = shade_view(mesh, camera, sun_direction(spec.sun_elevation_deg, spec.sun_azimuth_deg),
                        appearance=random_appearance(rng), supersample=config.supersample,
                        background=(0.35, 0.36, 0.33))
    rgb = np.round(shaded.rgb_hw3.numpy() * 255.0).clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(rgb, -1, 0)), camera


def _render_job(world, job):
    spec, config = job
    return render_view(world, spec, config)


def render_satellite_views(world, config, scene_dir: Path, on_view=lambda: None) -> list[ViewRecord]:
    """Render, fit RPCs, write images/<view>.tif and truth/cameras/<view>.json; return the view records."""
    from earthsynth.io.raster import write_raster
    from earthsynth.world.parallel import map_views

    (scene_dir / "images").mkdir(parents=True, exist_ok=True)
    (scene_dir / "truth" / "cameras").mkdir(parents=True, exist_ok=True)
    specs = plan_views(config.num_views, np.random.default_rng([config.seed, 1]))
    rendered = map_views(_render_job, world, [(spec, config) for spec in specs], on_done=on_view)
    records = []
    for i, (spec, (image_chw, camera)) in enumerate(zip(specs, rendered)):
        rpc, fit_px = fit_view_rpc(camera, world.frame, world.bounds_xy, world.height_range)
        if fit_px > RPC_FIT_TOLERANCE_PX:  # a bug, not a user error: the fit is exact to ~1e-6 px normally
            raise RuntimeError(f"RPC fit of {spec.name} is off by {fit_px:.4f} px")
        write_raster(scene_dir / "images" / f"{spec.name}.tif", image_chw, rpc=rpc)
        cam = {**camera.to_dict(), "rpc_fit_max_px": fit_px, "off_nadir_deg": spec.off_nadir_deg,
               "azimuth_deg": spec.azimuth_deg}
        (scene_dir / "truth" / "cameras" / f"{spec.name}.json").write_text(json.dumps(cam, indent=2))
        date = FIRST_DATE + np.timedelta64(3 * i, "D")
        records.append(ViewRecord(
            name=spec.name, image=f"images/{spec.name}.tif", width=config.view_size, height=config.view_size,
            bands=3, dtype="uint8", gsd=config.view_gsd(), date=f"{date}Z",
            sun_elevation=round(spec.sun_elevation_deg, 3), sun_azimuth=round(spec.sun_azimuth_deg, 3),
            source="synthetic"))
    return records
