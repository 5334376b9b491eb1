"""`earthsynth splat SCENE`: Skyfall-GS end to end, one stage folder each, each reused when complete.

    out/
      config.json
      reconstruct/   splats.ply (appearance fused with the most nadir view's embedding), reconstruct.json, state.pt
      idu/episode_k/ refined.png (renders over their refinements), splats.ply, episode.json, state.pt
      splats.ply     the final standard 3DGS (Inria PLY: SuperSplat and web viewers open it)
      flythrough.mp4 a low-altitude orbit rendered from the final splats
      coverage.json  Gaussians seen by the cameras of episodes 1..k (supplementary 0.D.0.6)
      metrics.json   seconds per stage; on scenes with truth: PSNR / SSIM on the low-altitude truth views and the
                     DSM from rendered depth against the truth surface, after each stage
The points (the `earthsynth dsm` cloud) or the mesh (`earthsynth mesh`) that seed the splats are inputs: this
package never imports the mesh pipeline (the CLI runs it first).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from earthsynth.errors import InputFileError
from earthsynth.splat.idu import IDUConfig, run_episode, visible_fraction
from earthsynth.splat.reconstruct import ReconstructConfig, nadir_index, reconstruct, satellite_training_views
from earthsynth.splat.trainer import SplatTrainer, scaled_strategy


@dataclass(frozen=True)
class SplatPipelineConfig:
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)
    idu: IDUConfig = field(default_factory=IDUConfig)
    flythrough_frames: int = 48
    flythrough_px: int = 192
    seed: int = 0

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


def initial_model(config: ReconstructConfig, *, points_path: Path | None, mesh_path: Path | None):
    """The initial Gaussians and the surface (vertices, faces) their depth prior is rendered from."""
    from earthsynth.io.pointcloud import read_point_cloud_ply
    from earthsynth.splat.init import init_from_points, points_from_mesh

    if config.init == "mesh":
        if mesh_path is None or not Path(mesh_path).is_file():
            raise InputFileError("init='mesh' needs the Z-monotonic mesh", path=mesh_path or "mesh.glb",
                                 hint="run `earthsynth mesh SCENE --out RUN` first and pass RUN/mesh.glb")
        from earthsynth.io.mesh import read_glb
        mesh, _ = read_glb(mesh_path)
        points, colors = points_from_mesh(mesh, config.max_init_points, seed=config.seed)
        return init_from_points(points, colors, sh_degree=config.sh_degree, seed=config.seed), \
            (mesh.vertices_n3, mesh.faces_f3)
    if points_path is None or not Path(points_path).is_file():
        raise InputFileError("the splats are seeded from the MVS points", path=points_path or "points.ply",
                             hint="run `earthsynth dsm SCENE --out DSM` first and pass DSM/points.ply")
    points, colors, _ = read_point_cloud_ply(Path(points_path))
    model = init_from_points(points, colors, sh_degree=config.sh_degree, seed=config.seed,
                             max_points=config.max_init_points)
    return model, points


def surface_for_depth(source, bounds_xy, cell_m: float):
    from earthsynth.render.heightfield import heightfield_from_points, heightfield_mesh
    from earthsynth.splat.depth_prior import SurfaceDepth
    if isinstance(source, tuple):
        return SurfaceDepth(*source)
    return SurfaceDepth(*heightfield_mesh(heightfield_from_points(source, bounds_xy, cell_m), bounds_xy))


def _save_splats(trainer: SplatTrainer, path: Path, embedding_id: int | None) -> Path:
    from earthsynth.io.splats import write_splats_ply
    model = trainer.model
    if trainer.appearance is not None:
        embedding = (trainer.appearance.fixed_embedding if trainer.appearance.is_fixed
                     else trainer.appearance.embeddings.weight[embedding_id].detach())
        model = trainer.appearance.fuse(trainer.model, embedding)
    return write_splats_ply(path, model.to_splats())


def _ground_z(scene, surface) -> float:
    z = surface.vertices_n3[:, 2]
    return float(np.percentile(z, 5))


def run_splat(scene_root, out_dir, config: SplatPipelineConfig = SplatPipelineConfig(), *, points_path=None,
              mesh_path=None, refiner=None, device=None, progress: bool = True, log=print) -> dict:
    """Scene folder (+ MVS points or mesh) -> out_dir (see the module docstring). Returns metrics."""
    from earthsynth.io.scene import load_scene
    from earthsynth.io.scene_views import satellite_views
    from earthsynth.splat.evaluate import splat_scores
    from earthsynth.splat.outputs import write_coverage, write_flythrough

    scene = load_scene(scene_root)
    out_dir = Path(out_dir)
    views = satellite_training_views(satellite_views(scene), config.reconstruct.image_scale)
    model, source = initial_model(config.reconstruct, points_path=points_path, mesh_path=mesh_path)
    model = model.to(device) if device is not None else model
    x0, y0, x1, y1 = scene.bounds_enu
    size_m = float(max(x1 - x0, y1 - y0))
    surface = surface_for_depth(source, scene.bounds_enu, config.reconstruct.depth_cell_m)
    ground_z = _ground_z(scene, surface)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps({"scene": str(Path(scene_root).absolute()),
                                                    **config.to_dict()}, indent=1))
    trainer = SplatTrainer.create(model, len(views), scaled_strategy(config.reconstruct.steps, seed=config.seed),
                                  size_m / 2, use_appearance=config.reconstruct.use_appearance, seed=config.seed)
    trainer.display_image_id = nadir_index(views)
    metrics: dict = {"seconds": {}, "num_views": len(views)}
    t = time.perf_counter()
    recon_dir = out_dir / "reconstruct"
    _run_reconstruct(trainer, views, config, surface, size_m, ground_z, recon_dir, progress)
    metrics["seconds"]["reconstruct"] = time.perf_counter() - t
    metrics["reconstruct"] = splat_scores(scene, trainer)
    log(f"satellite stage: {trainer.model.num} Gaussians, {metrics['seconds']['reconstruct']:.1f} s")
    episodes = []
    if config.idu.curriculum.episodes and config.idu.steps_per_episode and refiner is not None:
        t = time.perf_counter()
        episodes = _run_idu(trainer, refiner, views, config, size_m, ground_z, out_dir / "idu", progress, log)
        metrics["seconds"]["idu"] = time.perf_counter() - t
        metrics["idu"] = splat_scores(scene, trainer)
    _save_splats(trainer, out_dir / "splats.ply", nadir_index(views))
    metrics["num_gaussians"] = trainer.model.num
    if episodes:
        metrics["coverage"] = write_coverage(out_dir / "coverage.json", trainer, episodes, visible_fraction)
    write_flythrough(out_dir / "flythrough.mp4", trainer, size_m, ground_z, frames=config.flythrough_frames,
                     size_px=config.flythrough_px)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def _run_reconstruct(trainer, views, config, surface, size_m, ground_z, recon_dir: Path, progress):
    state_path = recon_dir / "state.pt"
    if state_path.is_file():
        trainer.load(state_path)
    if trainer.step < config.reconstruct.steps:
        recon_dir.mkdir(parents=True, exist_ok=True)
        log = reconstruct(trainer, views, config.reconstruct, surface=surface, scene_size_m=size_m,
                          ground_z=ground_z, progress=progress, checkpoint=lambda tr: tr.save(state_path))
        trainer.save(state_path)
        _save_splats(trainer, recon_dir / "splats.ply", nadir_index(views))
        (recon_dir / "reconstruct.json").write_text(json.dumps({"log": log, "num": trainer.model.num}, indent=1))


def _run_idu(trainer, refiner, views, config, size_m, ground_z, idu_dir: Path, progress, log) -> list:
    from earthsynth.splat.outputs import save_episode

    episodes = []
    for e in range(config.idu.curriculum.episodes):
        folder = idu_dir / f"episode_{e}"
        if (folder / "state.pt").is_file() and (folder / "episode.json").is_file():
            trainer.load(folder / "state.pt")
            if trainer.appearance is not None and not trainer.appearance.is_fixed:
                trainer.appearance.fix_embedding(seed=config.idu.seed)
            meta = json.loads((folder / "episode.json").read_text())
            from earthsynth.splat.cameras import episode_cameras
            episodes.append(episode_cameras(e, size_m, ground_z, config.idu.curriculum, seed=config.idu.seed))
            log(f"episode {e}: reused ({meta['elevation_deg']:.0f} deg)")
            continue
        result = run_episode(trainer, refiner, views, config.idu, e, scene_size_m=size_m, ground_z=ground_z,
                             progress=progress)
        save_episode(folder, trainer, result, _save_splats)
        episodes.append(result.cameras)
        log(f"episode {e}: elevation {result.elevation_deg:.0f} deg, {trainer.model.num} Gaussians")
    return episodes
