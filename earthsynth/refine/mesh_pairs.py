"""Fine-tuning pairs of the restorer from the pipeline's own reconstructions: a low-altitude oblique view of a
reconstructed textured mesh (the basic texture of `earthsynth mesh`, rendered unlit over the sky exactly as the
iterative refinement renders it) and the same view of the scene's truth mesh under the truth views' sun.

Why: the world pairs (refine/pairs.py, LoD -> full detail) teach sharpening, but a reconstruction's close-range
render is wrong in other ways: satellite-date lighting and shadows baked into the texture, geometry a metre off at
roof edges, smeared facades. A restorer trained on LoD pairs sharpens those errors, and the refinement then
fits the texture to sharpened errors (on three held-out scenes it raised PSNR but lowered SSIM). Fine-tuned on
these pairs it learns what the truth looks like given the pipeline's actual errors. The runs used for training
must be of other worlds than the scenes it is scored on.

    data = MeshPairDataConfig(train_runs=("runs/mesh_10", "runs/mesh_11"), val_runs=("runs/mesh_12",))
    train, val = build_mesh_pair_cache(data, "runs/restorer_mesh")      # -> mesh_pairs_{train,val}.npz

A run folder is an `earthsynth mesh` output on a synthetic scene (its config.json names the scene, which must
have truth/mesh.glb); its texture/mesh.glb is the degraded side.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from earthsynth.errors import ConfigError, InputFileError, SceneError


@dataclass(frozen=True)
class MeshPairConfig:
    views_per_run: int = 50
    val_views_per_run: int = 40
    size_px: int = 256                               # the UAV views' size (mesh/uav_path.py)
    # eye heights above the ground: around the refinement's UAV flight (100 m) and the test views (80, 160 m)
    altitude_m: tuple[float, float] = (70.0, 170.0)
    pitch_deg: tuple[float, float] = (40.0, 60.0)    # the refinement and the test views fly at 45 degrees
    fov_x_deg: float = 60.0
    margin_frac: float = 0.2                         # eyes stay this share of the box away from its edges (as UAV)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.views_per_run < 1 or self.val_views_per_run < 1 or self.size_px < 16:
            raise ConfigError("views_per_run and val_views_per_run must be >= 1, size_px >= 16")
        if not 0 < self.altitude_m[0] <= self.altitude_m[1]:
            raise ConfigError(f"altitude_m must be (low, high) with 0 < low <= high, got {self.altitude_m}")
        if not 0 < self.pitch_deg[0] <= self.pitch_deg[1] <= 90:
            raise ConfigError(f"pitch_deg must be (low, high) within (0, 90], got {self.pitch_deg}")
        if not 0 <= self.margin_frac < 0.5:
            raise ConfigError(f"margin_frac must be in [0, 0.5), got {self.margin_frac}")


@dataclass(frozen=True)
class MeshPairDataConfig:
    """The data of a fine-tuning run: mesh run folders for training and held-out ones for validation."""
    train_runs: tuple[str, ...] = ()
    val_runs: tuple[str, ...] = ()
    pairs: MeshPairConfig = field(default_factory=MeshPairConfig)

    def __post_init__(self) -> None:
        if isinstance(self.pairs, dict):
            object.__setattr__(self, "pairs", MeshPairConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                                 for k, v in self.pairs.items()}))
        if not self.train_runs or not self.val_runs:
            raise ConfigError("mesh pair data needs at least one training run and one validation run",
                              hint="pass earthsynth mesh output folders of synthetic scenes")
        shared = {Path(r).resolve() for r in self.train_runs} & {Path(r).resolve() for r in self.val_runs}
        if shared:
            raise ConfigError(f"runs used for training and validation: {sorted(map(str, shared))}",
                              hint="validate on a run of another world")

    @property
    def size_px(self) -> int:
        return self.pairs.size_px

    def to_dict(self) -> dict:
        return {"train_runs": [str(r) for r in self.train_runs], "val_runs": [str(r) for r in self.val_runs],
                "pairs": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.pairs).items()}}

    @classmethod
    def from_dict(cls, data: dict) -> MeshPairDataConfig:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - names:
            raise ConfigError(f"mesh pair data config: expected an object with keys {sorted(names)}")
        try:
            return cls(train_runs=tuple(data.get("train_runs", ())), val_runs=tuple(data.get("val_runs", ())),
                       pairs=data.get("pairs", {}))
        except TypeError as exc:
            raise ConfigError(f"mesh pair data config: {exc}") from None


def pair_cameras(bounds_xy, ground_z: float, config: MeshPairConfig, *, count: int, seed: int) -> list:
    """`count` random UAV-like cameras over `bounds_xy`; same seed -> same cameras."""
    from earthsynth.mesh.uav_path import uav_camera
    rng = np.random.default_rng([int(seed), 5113])
    x0, y0, x1, y1 = (float(b) for b in bounds_xy)
    mx, my = (x1 - x0) * config.margin_frac, (y1 - y0) * config.margin_frac
    cameras = []
    for _ in range(int(count)):
        eye_xy = (rng.uniform(x0 + mx, x1 - mx), rng.uniform(y0 + my, y1 - my))
        cameras.append(uav_camera(eye_xy, ground_z, altitude_m=rng.uniform(*config.altitude_m),
                                  pitch_deg=rng.uniform(*config.pitch_deg), heading_deg=rng.uniform(0.0, 360.0),
                                  size_px=config.size_px, fov_x_deg=config.fov_x_deg))
    return cameras


def _run_inputs(run_dir: Path):
    """(scene, basic textured mesh, truth mesh) of an `earthsynth mesh` run folder, or one clear error."""
    from earthsynth.io.mesh import read_glb
    from earthsynth.io.scene import load_scene
    config_path, mesh_path = run_dir / "config.json", run_dir / "texture" / "mesh.glb"
    for path in (config_path, mesh_path):
        if not path.is_file():
            raise InputFileError("not a finished earthsynth mesh run (file missing)", path=path,
                                 hint="run `earthsynth mesh SCENE --out RUN` on a synthetic scene first")
    try:
        scene_root = json.loads(config_path.read_text())["scene"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputFileError(f"unreadable run config ({exc})", path=config_path) from None
    scene = load_scene(scene_root)
    truth = scene.truth_path("mesh")
    if truth is None or not truth.is_file():
        raise SceneError("the run's scene has no truth mesh: pairs need a synthetic scene", path=scene.root,
                         hint="use runs of `earthsynth scene synth` scenes")
    return scene, read_glb(mesh_path)[0], read_glb(truth)[0]


def render_run_pairs(run_dir: str | Path, config: MeshPairConfig = MeshPairConfig(), *, count: int, seed: int = 0,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, clean) uint8 (count, H, W, 3): the run's basic textured mesh rendered unlit over the sky (as the
    refinement renders it, one sample per pixel) and the scene's truth mesh under the truth sun (as the test views)."""
    from tqdm.auto import tqdm

    from earthsynth.mesh.refinement import render_views
    from earthsynth.mesh.uav_path import flight_ground_z
    from earthsynth.world.uav import render_test_view
    scene, mesh, truth = _run_inputs(Path(run_dir))
    cameras = pair_cameras(scene.bounds_enu, flight_ground_z(scene, mesh), config, count=count, seed=seed)
    degraded, clean = [], []
    for camera in tqdm(cameras, desc=f"pairs {Path(run_dir).name}", disable=not progress, leave=False):
        rgb, _ = render_views(mesh, {"view": camera}, supersample=1)
        degraded.append(np.round(rgb[0].numpy() * 255.0).clip(0, 255).astype(np.uint8))
        clean.append(render_test_view(truth, camera))
    return np.stack(degraded), np.stack(clean)


def build_mesh_pair_cache(data: MeshPairDataConfig, run_dir: str | Path, *, progress: bool = True):
    """(train, val) PairSets of `data`, rendered once into run_dir/mesh_pairs_{train,val}.npz (one shard per mesh
    run under mesh_pairs_parts/ first, so a killed build resumes) and read back after."""
    from tqdm.auto import tqdm

    from earthsynth.refine.restorer_data import PairSet, load_pair_npz, save_pair_npz
    run_dir = Path(run_dir)
    paths = {"train": run_dir / "mesh_pairs_train.npz", "val": run_dir / "mesh_pairs_val.npz"}
    if all(p.is_file() for p in paths.values()):
        return load_pair_npz(paths["train"], data), load_pair_npz(paths["val"], data)
    parts = run_dir / "mesh_pairs_parts"
    jobs = [("train", k, r) for k, r in enumerate(data.train_runs)] + \
           [("val", k, r) for k, r in enumerate(data.val_runs)]
    shards = {}
    for split, k, run in tqdm(jobs, desc="render mesh pairs (runs)", disable=not progress):
        shard = parts / f"{split}_{k}.npz"
        if shard.is_file():
            try:
                shards[(split, k)] = load_pair_npz(shard, data)
                continue
            except (InputFileError, ConfigError):
                shard.unlink()
        # each run its own camera stream, validation runs apart from training runs
        seed = int(np.random.SeedSequence([data.pairs.seed, k, split == "val"]).generate_state(1)[0])
        count = data.pairs.val_views_per_run if split == "val" else data.pairs.views_per_run
        degraded, clean = render_run_pairs(run, data.pairs, count=count, seed=seed, progress=progress)
        save_pair_npz(shard, degraded, clean, data)
        shards[(split, k)] = PairSet(degraded, clean)
    for split, path in paths.items():
        sets = [shards[(s, k)] for s, k, _ in jobs if s == split]
        save_pair_npz(path, np.concatenate([s.degraded.permute(0, 2, 3, 1).numpy() for s in sets]),
                      np.concatenate([s.clean.permute(0, 2, 3, 1).numpy() for s in sets]), data)
    shutil.rmtree(parts, ignore_errors=True)
    return load_pair_npz(paths["train"], data), load_pair_npz(paths["val"], data)


def main(argv: list[str] | None = None) -> None:
    """`python -m earthsynth.refine.mesh_pairs RUN --count N --out pairs.npz`: the pairs of one run, on their own
    (e.g. a held-out set to score a restorer on: tests/data/heldout_mesh_pairs.npz was made so)."""
    import argparse

    from earthsynth.io.atomic import atomic_path
    from earthsynth.io.training import exit_on_user_error
    parser = argparse.ArgumentParser(description="Render (reconstruction, truth) view pairs of an earthsynth mesh run.")
    parser.add_argument("run", type=Path, help="earthsynth mesh run folder of a synthetic scene")
    parser.add_argument("--out", type=Path, required=True, help=".npz with uint8 degraded / clean (N, H, W, 3)")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with exit_on_user_error():
        config = MeshPairConfig()
        degraded, clean = render_run_pairs(args.run, config, count=args.count, seed=args.seed, progress=True)
        with atomic_path(args.out) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, degraded=degraded, clean=clean, config=json.dumps(
                    {"run": str(args.run), "count": args.count, "seed": args.seed, "pairs": asdict(config)}))
    print(json.dumps({"pairs": int(len(degraded)), "out": str(args.out)}))


if __name__ == "__main__":
    main()
