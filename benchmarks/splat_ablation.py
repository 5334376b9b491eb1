"""Benchmark: the Skyfall-GS ablations (paper 002, Tables 3-4, Fig. 9) on one multi-date synthetic scene, scored at
low altitude. Goal: IDU beats the reconstruction stage at low altitude, and each removed component is worse.

Scene. `synthesize_scene(SynthConfig(seed, size_m, view_size=256))`: 10 multi-date satellite views of 256 px
(GSD max(0.3, 1.1 size / 256) m), the truth surface and 8 low-altitude truth views (45 degrees down, 80 and 160 m
up, 4 headings, 256 px); `approximate_scene_cameras`; `run_mvs` (default MVSConfig) gives the points that seed
the splats. init_mesh seeds them from the Orbit-to-Ground geometry stage's mesh (`run_geometry`, default
GeometryConfig, on the same points) with vertex colours of the nearest MVS point (the texture stage would cost
about 7 minutes here).

Pipeline. `run_splat` with the library defaults except the budget: satellite stage of `--steps` steps at image
scale 0.5 (128 px) from at most 10,000 points; IDU of `--episodes` episodes of `--episode-steps` steps, each
rendering a 2 x 2 look-at grid x 3 orbit views of 96 px (elevations 85 -> 45 degrees), refined N_s = 2 times with
FlowEdit; `--opacity-weight` is lambda_op (default: LossWeights' 0.1). Variants change one thing each (their row's
"differs" lists it): recon_no_appearance / _no_opacity / _no_depth switch a reconstruction term off; idu_ns1 sets
N_s = 1; idu_random_views trains the same episodes in a random order instead of sky-to-ground (CurriculumConfig
has no switch for random views: see ShuffledCurriculum); idu_sdedit / idu_restorer swap the refiner; init_mesh
changes the initial Gaussians. Variants with the same reconstruction config share one satellite stage.

Scores, from the saved stage states, as run_splat computes them (splat/evaluate.py): psnr_low / ssim_low: mean
over the 8 truth oblique views of PSNR / SSIM of the splat render composited over the truth views' sky; dsm_mae:
MAE (m) of the DSM from rendered depth against the truth top surface (central 80 %). "worse" below: PSNR at
least 0.1 dB lower.

    {"variant": name, "psnr_low", "ssim_low", "dsm_mae", "num_gaussians", "seconds", "differs"}
    {"summary": ..., "idu_beats_recon": bool, "worse": {variant: bool}, "delta_psnr": {...}, ...}

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/splat_ablation.py [--out /tmp/splat_ablation] [--size 100]
        [--steps 260] [--episodes 3] [--episode-steps 100] [--variants recon idu ...]

`--out` is reused: finished variants (results.jsonl) are printed again, not re-run; half-done runs resume.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from earthsynth.errors import ConfigError, EarthsynthError
from earthsynth.splat.cameras import CurriculumConfig

WORSE_DB = 0.1
RECON_ABLATIONS = ("recon_no_appearance", "recon_no_opacity", "recon_no_depth")
IDU_ABLATIONS = ("idu_ns1", "idu_random_views", "idu_sdedit", "idu_restorer")
VARIANTS = ("recon", *RECON_ABLATIONS, "idu", *IDU_ABLATIONS, "init_mesh")
# the fixed part of the budget (module constants so that a smoke test can shrink them)
SCENE = {"view_size": 256}                                              # SynthConfig overrides
RECON = {"image_scale": 0.5, "max_init_points": 10_000}                # ReconstructConfig overrides
IDU_VIEWS = {"look_at_grid": (2, 2), "views_per_point": 3, "size_px": 96}   # CurriculumConfig overrides


@dataclass(frozen=True)
class ShuffledCurriculum(CurriculumConfig):
    """The curriculum's episodes (elevation, radius) trained in `order` instead of sky-to-ground: the same views
    in a random order, the "w/o curriculum" ablation (the library's episode_cameras reads only these methods)."""
    order: tuple = ()

    def elevation(self, episode: int) -> float:
        return super().elevation(self.order[episode])

    def radius(self, episode: int, scene_size_m: float) -> float:
        return super().radius(self.order[episode], scene_size_m)


def random_order(episodes: int, seed: int) -> tuple:
    """A seeded permutation of the episodes that is not sky-to-ground (for 2+ episodes)."""
    rng = np.random.default_rng([seed, 4242])
    order = tuple(range(episodes))
    while episodes > 1 and order == tuple(range(episodes)):
        order = tuple(int(i) for i in rng.permutation(episodes))
    return order


def base_config(args):
    from earthsynth.splat.idu import IDUConfig
    from earthsynth.splat.pipeline import SplatPipelineConfig
    from earthsynth.splat.reconstruct import ReconstructConfig
    from earthsynth.splat.trainer import LossWeights

    recon = ReconstructConfig(steps=args.steps, seed=args.seed, weights=LossWeights(opacity=args.opacity_weight),
                              **RECON)
    curriculum = CurriculumConfig(episodes=args.episodes, **IDU_VIEWS)
    idu = IDUConfig(curriculum=curriculum, steps_per_episode=args.episode_steps, seed=args.seed)
    return SplatPipelineConfig(reconstruct=recon, idu=idu, flythrough_frames=0, seed=args.seed)


def variant_config(name: str, base):
    """-> (config, refiner name or None for the satellite stage only)."""
    r, i = base.reconstruct, base.idu
    recon_changes = {"recon_no_appearance": {"use_appearance": False},
                     "recon_no_opacity": {"weights": replace(r.weights, opacity=0.0)},
                     "recon_no_depth": {"weights": replace(r.weights, depth=0.0)},
                     "init_mesh": {"init": "mesh"}}
    idu_changes = {"idu_ns1": {"samples_per_view": 1},
                   "idu_random_views": {"curriculum": ShuffledCurriculum(
                       **asdict(i.curriculum), order=random_order(i.curriculum.episodes, base.seed))}}
    config = replace(base, reconstruct=replace(r, **recon_changes.get(name, {})),
                     idu=replace(i, **idu_changes.get(name, {})))
    refiner = {"idu_sdedit": "sdedit", "idu_restorer": "restorer"}.get(name, "flowedit")
    return config, (None if name.startswith("recon") else refiner)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def differences(config, refiner, base) -> dict:
    new, old = _flat(config.to_dict()), _flat(base.to_dict())
    diff = {k: v for k, v in new.items() if old.get(k) != v}
    if refiner not in (None, "flowedit"):
        diff["refiner"] = refiner
    return diff


def prepare_scene(args, out: Path) -> tuple[Path, Path]:
    from earthsynth.io.scene_cameras import approximate_scene_cameras
    from earthsynth.mesh.mvs import run_mvs
    from earthsynth.world.synth import SynthConfig, synthesize_scene

    scene = out / "scene"
    if not (scene / "scene.json").is_file():
        synthesize_scene(SynthConfig(seed=args.seed, size_m=args.size, **SCENE), scene)
    for _ in approximate_scene_cameras(scene):      # a generator: writes cameras/<view>.json
        pass
    if not ((out / "dsm" / "mvs.json").is_file() and (out / "dsm" / "points.ply").is_file()):
        run_mvs(scene, out / "dsm")
    return scene, out / "dsm" / "points.ply"


def coloured_mesh(scene: Path, points_path: Path, out: Path) -> Path:
    """The geometry stage's mesh with each vertex coloured like its nearest MVS point."""
    from scipy.spatial import cKDTree

    from earthsynth.io.mesh import read_glb, write_glb
    from earthsynth.io.pointcloud import read_point_cloud_ply
    from earthsynth.mesh.stage import run_geometry

    path = out / "mesh" / "mesh_coloured.glb"
    if not path.is_file():
        geometry = run_geometry(scene, points_path, out / "mesh" / "geometry")
        mesh, frame = read_glb(geometry.mesh_path)
        points, colors, _ = read_point_cloud_ply(points_path)
        _, nearest = cKDTree(points).query(mesh.vertices_n3)
        colors = (np.full((len(points), 3), 0.5) if colors is None
                  else np.asarray(colors, np.float32) / (255.0 if colors.dtype == np.uint8 else 1.0))[nearest]
        write_glb(path, replace(mesh, vertex_colors_n3=colors.astype(np.float32)), origin=frame)
    return path


def score_state(scene_root: Path, config, state: Path, points_path: Path, mesh_path: Path | None) -> dict:
    """Rebuild the trainer run_splat had (same model layout, nadir display appearance), load `state`, score it."""
    from earthsynth.io.scene import load_scene
    from earthsynth.io.scene_views import satellite_views
    from earthsynth.splat.evaluate import splat_scores
    from earthsynth.splat.pipeline import initial_model
    from earthsynth.splat.reconstruct import nadir_index, satellite_training_views
    from earthsynth.splat.trainer import SplatTrainer, scaled_strategy

    scene = load_scene(scene_root)
    views = satellite_training_views(satellite_views(scene), config.reconstruct.image_scale)
    model, _ = initial_model(config.reconstruct, points_path=points_path, mesh_path=mesh_path)
    x0, y0, x1, y1 = scene.bounds_enu
    trainer = SplatTrainer.create(model, len(views), scaled_strategy(config.reconstruct.steps, seed=config.seed),
                                  max(x1 - x0, y1 - y0) / 2, use_appearance=config.reconstruct.use_appearance,
                                  seed=config.seed)
    trainer.display_image_id = nadir_index(views)
    trainer.load(state)
    scores = splat_scores(scene, trainer)
    return {"psnr_low": round(scores["views"]["psnr"], 3), "ssim_low": round(scores["views"]["ssim"], 4),
            "dsm_mae": round(scores["dsm"]["mae"], 3) if "mae" in scores["dsm"] else None,
            "num_gaussians": trainer.model.num}


def recon_key(config, init_path: Path) -> str:
    text = json.dumps({"reconstruct": asdict(config.reconstruct), "seed": config.seed, "init": str(init_path)},
                      sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def run_variant(name: str, args, out: Path, scene: Path, points: Path) -> list[dict]:
    from earthsynth.cli_splat import load_refiner
    from earthsynth.splat.pipeline import run_splat

    base = base_config(args)
    config, refiner = variant_config(name, base)
    mesh = coloured_mesh(scene, points, out) if config.reconstruct.init == "mesh" else None
    run, shared = out / "runs" / name, out / "shared_recon" / recon_key(config, mesh or points)
    if (shared / "reconstruct.json").is_file() and not (run / "reconstruct" / "reconstruct.json").is_file():
        shutil.rmtree(run / "reconstruct", ignore_errors=True)
        shutil.copytree(shared, run / "reconstruct")
    started = time.perf_counter()
    try:
        metrics = run_splat(scene, run, config, points_path=points, mesh_path=mesh,
                            refiner=None if refiner is None else load_refiner(refiner), progress=False,
                            log=lambda text: print(f"[{name}] {text}", file=sys.stderr, flush=True))
    except EarthsynthError as exc:      # e.g. a variant that empties the model: a row, not the end of the run
        return [{"variant": name, "error": str(exc).splitlines()[0], "differs": differences(config, refiner, base)}]
    if not (shared / "reconstruct.json").is_file():
        shutil.copytree(run / "reconstruct", shared, dirs_exist_ok=True)
    common = {"differs": differences(config, refiner, base), "seconds_total": round(time.perf_counter() - started, 1)}
    if refiner is None:
        scores = score_state(scene, config, run / "reconstruct" / "state.pt", points, mesh)
        return [{"variant": name, **scores, "seconds": round(metrics["seconds"]["reconstruct"], 1), **common}]
    last = config.idu.curriculum.episodes - 1
    rows = []
    for e in range(last + 1) if name == "idu" else [last]:      # per-episode rows for the full method only
        folder = run / "idu" / f"episode_{e}"
        elevation = json.loads((folder / "episode.json").read_text())["elevation_deg"]
        rows.append({"variant": f"idu_ep{e}", **score_state(scene, config, folder / "state.pt", points, mesh),
                     "elevation_deg": elevation})
    final = {**rows[-1], "variant": name, "seconds": round(metrics["seconds"].get("idu", 0.0), 1), **common}
    if name == "init_mesh":
        recon = score_state(scene, config, run / "reconstruct" / "state.pt", points, mesh)
        final.update({f"recon_{k}": v for k, v in recon.items() if k in ("psnr_low", "ssim_low", "dsm_mae")})
    return (rows if name == "idu" else []) + [final]


def summary(rows: dict) -> dict:
    """Goal checks on psnr_low / ssim_low."""
    scored = {name: row for name, row in rows.items() if "psnr_low" in row}

    def delta(a, b, key):
        return round(scored[a][key] - scored[b][key], 4)

    out = {"summary": f"low-altitude truth views; worse = psnr_low at least {WORSE_DB} dB below the full "
                      "method (recon for recon_*, idu for idu_* and init_mesh)",
           "failed": sorted(name for name in rows if name not in scored)}
    if "idu" in scored and "recon" in scored:
        out["idu_beats_recon"] = delta("idu", "recon", "psnr_low") > 0 and delta("idu", "recon", "ssim_low") > 0
    pairs = [(v, "recon") for v in RECON_ABLATIONS] + [(v, "idu") for v in (*IDU_ABLATIONS, "init_mesh")]
    pairs = [(v, ref) for v, ref in pairs if v in scored and ref in scored]
    out["delta_psnr"] = {v: delta(v, ref, "psnr_low") for v, ref in pairs}
    out["delta_ssim"] = {v: delta(v, ref, "ssim_low") for v, ref in pairs}
    out["worse"] = {v: d <= -WORSE_DB for v, d in out["delta_psnr"].items()}
    removed = [v for v in out["worse"] if v != "init_mesh"]
    out["each_removed_component_worse"] = bool(removed) and all(out["worse"][v] for v in removed)
    return out


def check_settings(out: Path, args) -> None:
    settings = {k: getattr(args, k) for k in ("seed", "size", "steps", "episodes", "episode_steps",
                                              "opacity_weight")}
    path = out / "bench.json"
    if path.is_file() and json.loads(path.read_text()) != settings:
        raise ConfigError(f"{out} holds a run with other settings ({path.read_text().strip()})",
                          hint="pass another --out, or delete that folder to start again")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/splat_ablation"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=float, default=100.0, help="scene side in metres")
    parser.add_argument("--steps", type=int, default=260, help="satellite-stage steps")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--episode-steps", type=int, default=100)
    parser.add_argument("--opacity-weight", type=float, default=None, help="lambda_op (default: the library's)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args(argv)
    if args.opacity_weight is None:
        from earthsynth.splat.trainer import LossWeights
        args.opacity_weight = LossWeights().opacity
    check_settings(args.out, args)
    results = args.out / "results.jsonl"
    done = {}
    for line in results.read_text().splitlines() if results.is_file() else []:
        row = json.loads(line)
        done.setdefault(row.pop("of"), []).append(row)
    scene, points = prepare_scene(args, args.out)
    rows = {}
    for name in [v for v in VARIANTS if v in args.variants]:
        if name not in done:
            done[name] = run_variant(name, args, args.out, scene, points)
            with results.open("a") as f:
                f.writelines(json.dumps({"of": name, **row}) + "\n" for row in done[name])
        for row in done[name]:
            rows[row["variant"]] = row
            print(json.dumps(row), flush=True)
    print(json.dumps(summary(rows)), flush=True)


if __name__ == "__main__":
    main()
