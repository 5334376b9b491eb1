"""`earthsynth mesh SCENE`: Orbit to Ground end to end, one stage folder each, each reused when complete.

    out/
      config.json                 everything needed to reproduce the run
      dsm/                        height-sweep MVS: dsm.tif, confidence.tif, points.ply, mvs.json
      geometry/                   Z-monotonic SDF mesh: mesh.glb, dsm_from_mesh.tif, geometry.json
      texture/                    UV atlas + texture optimised against the satellite views: mesh.glb, texture.json
      refine/                     iterative refinement along UAV paths: mesh.glb, refine.json, iteration_k.png
      mesh.glb                    the final textured mesh (ENU metres, origin lon/lat/alt in the asset extras)
      dsm_from_mesh.tif           its DSM in the scene CRS
      metrics.json                per-stage seconds and, on scenes with truth, geometry and appearance scores
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from earthsynth.errors import ConfigError
from earthsynth.mesh.geometry import GeometryConfig
from earthsynth.mesh.mvs import MVSConfig
from earthsynth.mesh.refinement import RefinementConfig

REFINERS = ("restorer", "none")


@dataclass(frozen=True)
class MeshPipelineConfig:
    mvs: MVSConfig = field(default_factory=MVSConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    texture: object = None                  # mesh.texture.TextureConfig; None: its defaults
    texel_m: float | None = None            # texture atlas cell; None: half the scene GSD
    # Faces at most in the mesh the texture stage unwraps and textures (quadric decimation of the geometry
    # stage's mesh, mesh.decimate); None: no decimation. On the 300 m demo scene (411k faces, 0.32 m texels)
    # 100k removes 76 % of the faces at 5 cm max deviation (150k: 2 cm, 50k: 18 cm) and the xatlas unwrap
    # drops from ~620 s to ~65 s. A cap in faces, not per m^2: larger scenes lose more (texture.json
    # "decimation" reports the deviation).
    texture_max_faces: int | None = 100_000
    refinement: RefinementConfig = field(default_factory=RefinementConfig)
    refiner: str = "restorer"               # "restorer" (the shipped one-step restorer) or "none"
    seed: int = 0

    def __post_init__(self):
        if self.refiner not in REFINERS:
            raise ConfigError(f"refiner must be one of {REFINERS}, got {self.refiner!r}")
        if self.texel_m is not None and not self.texel_m > 0:
            raise ConfigError(f"texel_m must be positive, got {self.texel_m}")
        if self.texture_max_faces is not None and (isinstance(self.texture_max_faces, bool) or
                                                   int(self.texture_max_faces) != self.texture_max_faces or
                                                   self.texture_max_faces < 4):
            raise ConfigError(f"texture_max_faces must be an integer >= 4 or None, got {self.texture_max_faces!r}")
        if self.texture is None:
            from earthsynth.mesh.texture import TextureConfig
            object.__setattr__(self, "texture", TextureConfig())

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


@dataclass
class MeshRunResult:
    out_dir: Path
    mesh_path: Path
    dsm_path: Path
    metrics: dict


def _stage_done(meta_path: Path, inputs: dict) -> dict | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return meta if meta.get("inputs") == json.loads(json.dumps(inputs, default=str)) else None


def run_dsm_stage(scene_root: Path, out_dir: Path, config: MVSConfig, *, progress: bool) -> float:
    from earthsynth.mesh.mvs import run_mvs
    if (out_dir / "mvs.json").is_file() and (out_dir / "points.ply").is_file():
        return 0.0      # completed earlier (run_mvs writes mvs.json last); delete the folder to recompute
    return run_mvs(scene_root, out_dir, config, progress=progress).seconds


def run_texture_stage(scene, geometry_mesh_path: Path, out_dir: Path, config: MeshPipelineConfig, *,
                      device=None, progress: bool) -> tuple[object, dict]:
    """Decimation (to config.texture_max_faces) + UV atlas + texture against the satellite views ->
    out_dir/{mesh.glb, texture.json}. The textured mesh, and so the refined and final mesh.glb, is the
    decimated one; the geometry stage's mesh and its dsm_from_mesh.tif are left as they are."""
    from earthsynth.io.atomic import atomic_dir
    from earthsynth.io.mesh import read_glb, write_glb
    from earthsynth.mesh.decimate import decimate_mesh
    from earthsynth.mesh.texture import optimize_texture, unwrap_uv
    from earthsynth.io.scene_views import satellite_views

    texel_m = config.texel_m or scene.gsd / 2.0
    inputs = {"geometry": str(geometry_mesh_path), "mtime_ns": geometry_mesh_path.stat().st_mtime_ns,
              "texture": asdict(config.texture), "texel_m": texel_m, "texture_max_faces": config.texture_max_faces}
    if (meta := _stage_done(out_dir / "texture.json", inputs)) is not None:
        return read_glb(out_dir / "mesh.glb")[0], meta
    started = time.perf_counter()
    geometry, _ = read_glb(geometry_mesh_path)
    vertices, faces, decimation = geometry.vertices_n3, geometry.faces_f3, None
    if config.texture_max_faces is not None:
        vertices, faces, decimation = decimate_mesh(vertices, faces, target_faces=config.texture_max_faces,
                                                    seed=config.seed)
    mesh = unwrap_uv(vertices, faces, texel_m=texel_m)
    result = optimize_texture(mesh, [(c, i) for _, c, i in satellite_views(scene)], config.texture, device=device, progress=progress)
    meta = {"inputs": inputs, "seconds": time.perf_counter() - started,
            "decimation": _jsonable(decimation),
            "texture_hw": list(result.mesh.texture_hw3.shape[:2]), "atlas": _jsonable(mesh.metadata.get("uv_atlas")),
            "gains": result.gains_v3.tolist(), "biases": result.biases_v3.tolist(),
            "report": _jsonable(result.report), "loss_log": _jsonable(result.loss_log[::10] + result.loss_log[-1:])}
    with atomic_dir(out_dir) as tmp:
        write_glb(tmp / "mesh.glb", result.mesh, origin=scene.frame)
        (tmp / "texture.json").write_text(json.dumps(meta, indent=1, default=str))
    return result.mesh, meta


def run_refine_stage(scene, mesh, texture_meta: dict, out_dir: Path, config: MeshPipelineConfig, *, device=None,
                     progress: bool, refiner=None) -> tuple[object, dict]:
    """Iterative refinement with the configured refiner -> out_dir/{mesh.glb, refine.json, iteration_k.png}."""
    from earthsynth.io.atomic import atomic_dir
    from earthsynth.io.mesh import read_glb, write_glb
    from earthsynth.mesh.refinement import refine_texture
    from earthsynth.mesh.uav_path import flight_ground_z
    from earthsynth.refine.restorer import load_default_restorer

    started = time.perf_counter()
    refiner = refiner if refiner is not None else load_default_restorer(device=device)
    fingerprint = getattr(refiner, "fingerprint", None)     # new weights must not reuse the old refinement
    inputs = {"texture": texture_meta.get("inputs"), "refinement": asdict(config.refinement),
              "refiner": getattr(refiner, "name", type(refiner).__name__),
              "refiner_weights": fingerprint() if callable(fingerprint) else None}
    if (meta := _stage_done(out_dir / "refine.json", inputs)) is not None:
        return read_glb(out_dir / "mesh.glb")[0], meta
    with atomic_dir(out_dir) as tmp:
        result = refine_texture(mesh, refiner, ground_z=flight_ground_z(scene, mesh), bounds_xy=scene.bounds_enu,
                                texture_config=config.texture, config=config.refinement, device=device,
                                progress=progress, keep_dir=tmp)
        meta = {"inputs": inputs, "seconds": time.perf_counter() - started, "refiner": refiner.name,
                "iterations": result.iterations}
        write_glb(tmp / "mesh.glb", result.mesh, origin=scene.frame)
        (tmp / "refine.json").write_text(json.dumps(meta, indent=1, default=str))
    return result.mesh, meta


def _geometry_bar(geometry: GeometryConfig):
    from tqdm.auto import tqdm
    divisions = geometry.divisions[0] * geometry.divisions[1]
    return tqdm(total=divisions * geometry.steps, desc="geometry", leave=False)


def _jsonable(value):
    if value is None:
        return None
    try:
        return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    except (TypeError, ValueError):
        return str(value)


def run_mesh(scene_root, out_dir, config: MeshPipelineConfig = MeshPipelineConfig(), *, device=None,
             progress: bool = True, log=print, refiner=None) -> MeshRunResult:
    """Scene folder -> out_dir (see the module docstring). Completed stages are reused. `refiner`: any Refiner
    to use instead of the one `config.refiner` names (e.g. a FlowEdit refiner)."""
    from earthsynth.io.atomic import atomic_path, ensure_writable_parent
    from earthsynth.io.scene import load_scene
    from earthsynth.mesh.evaluate import appearance_scores, geometry_scores, truth_views
    from earthsynth.mesh.stage import run_geometry

    scene_root, out_dir = Path(scene_root), ensure_writable_parent(Path(out_dir))
    scene = load_scene(scene_root)
    for record in scene.views:          # fail before the slow stages, not after
        scene.camera(record.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps({"scene": str(scene_root.absolute()), **config.to_dict()},
                                                    indent=1))
    seconds: dict = {}
    t = time.perf_counter()
    run_dsm_stage(scene_root, out_dir / "dsm", config.mvs, progress=progress)
    seconds["dsm"] = time.perf_counter() - t
    log(f"dsm: {seconds['dsm']:.1f} s")
    t = time.perf_counter()
    bar = _geometry_bar(config.geometry) if progress else None
    geometry = run_geometry(scene_root, out_dir / "dsm", out_dir / "geometry", config.geometry, device=device,
                            seed=config.seed, progress=None if bar is None else lambda *_: bar.update(1))
    if bar is not None:
        bar.close()
    seconds["geometry"] = time.perf_counter() - t
    log(f"geometry: {geometry.num_faces} faces, {seconds['geometry']:.1f} s")
    t = time.perf_counter()
    textured, texture_meta = run_texture_stage(scene, geometry.mesh_path, out_dir / "texture", config,
                                               device=device, progress=progress)
    seconds["texture"] = time.perf_counter() - t
    log(f"texture: {textured.texture_hw3.shape[1]}x{textured.texture_hw3.shape[0]} atlas, {seconds['texture']:.1f} s")
    final = textured
    if config.refiner != "none" and config.refinement.iterations > 0:
        t = time.perf_counter()
        final, _ = run_refine_stage(scene, textured, texture_meta, out_dir / "refine", config, device=device,
                                    progress=progress, refiner=refiner)
        seconds["refine"] = time.perf_counter() - t
        log(f"refine: {config.refinement.iterations} iterations, {seconds['refine']:.1f} s")
    shutil.copyfile(out_dir / ("refine" if final is not textured else "texture") / "mesh.glb", out_dir / "mesh.glb")
    shutil.copyfile(geometry.dsm_path, out_dir / "dsm_from_mesh.tif")
    metrics = {"seconds": seconds, "geometry": geometry_scores(scene, final, out_dir / "dsm_from_mesh.tif",
                                                               seed=config.seed)}
    views = truth_views(scene)
    if views:
        metrics["appearance"] = {"basic_texture": appearance_scores(textured, views)}
        if final is not textured:
            metrics["appearance"]["refined"] = appearance_scores(final, views)
    with atomic_path(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    return MeshRunResult(out_dir, out_dir / "mesh.glb", out_dir / "dsm_from_mesh.tif", metrics)
