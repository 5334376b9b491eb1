"""Benchmark: the Z-monotonic SDF geometry stage against the naive DSM -> marching-cubes baseline (Orbit to
Ground, paper 003, Table 2 "Naive Marching Cubes 128 / 256" vs "Ours", and "w/o L_Lap, L_Nrm").

Prints one JSON line per (seed, method): {"seed", "method", "f1", "chamfer", "seconds", ...} with
method in mc128 | mc256 | zsdf_noreg | zsdf, then one summary line per method (means over the seeds) and a
goal line.

Scenes. Small synthetic worlds (`build_world(WorldConfig(seed, size_m=120))`, CPU-sized; the paper's
MatrixCity scene is 1 km) on >= 3 seeds.

Input points (stated in every line as "points"):
- `--points mvs` (default): the real thing. The world is rendered as a satellite scene (`synthesize_scene` with
  `SynthConfig(seed, size_m)` defaults: 10 views of 512 px, 0.3 m GSD) and `run_mvs` (default `MVSConfig`)
  turns it into ENU points. About a minute per seed.
- `--points synthetic`: satellite-MVS-like points without rendering: the truth mesh seen from straight above (a
  top-down height render at 0.3 m: roofs, ground, tree crowns; no facades), one point per pixel centre, heights
  with Gaussian noise (sigma 0.3 m, xy jitter 0.1 m), points dropped within 2 px of height jumps over 2 m,
  smooth random holes (about 15 % of the area) and 0.5 % outliers (+-10 m).

Truth: 300k points sampled area-uniformly on the truth mesh (facades included), its underside (the terrain
slab's bottom) and the surfaces hidden inside buildings (terrain under them, walls between touching buildings)
left out. Scored on the central 80 % of the scene per side (the paper scores the central 800 m of
1 km), estimate points below the lowest ground dropped (the closed meshes' floors). F1 at the paper's
GSD-scaled threshold (App. C.3: 11.6 px, 3.48 m at 0.3 m; `gsd_threshold_m`) and, reported too, at 1 m.

Methods. All four use the same binned DSM (max height per cell, NaN where empty): mc128 / mc256 mesh it with
`naive_mesh_from_dsm` at 128 / 256 voxels per side; zsdf is `optimise_geometry` with `BENCH_CONFIG`, zsdf_noreg
the same without L_Lap, L_Nrm (and L_reg).

Scale (`--scale`, stated in every line as "scale", with the "resolution" used and its cells in metres,
"voxel_m"). `scene` (default): the counts above per side of OUR scene, so at 120 m naive MC has voxels of
120/128 = 0.94 m and 0.47 m. The paper runs the same counts on a 1 km scene: MC128 voxels of 1000/128 = 7.8 m and
MC256 of 3.9 m, coarser than / about its F1 threshold (3.48 m here): the obvious suspect for its MC F1 of
0.28 / 0.41. At 0.94 m (8x finer per metre) the stair steps sit well inside the threshold, MC scores ~0.95, and the
paper's +0.25 cannot appear. `paper`: every grid keeps the paper's cell size in METRES (1 km scene, 2 x 2
divisions of 500 m, B.2), counts rounded, never below 2:
- mcNNN: R = round(size / (1000 / NNN)) voxels per side: at 120 m, mc128 R = 15 (8.0 m), mc256 R = 31 (3.87 m).
- zsdf, zsdf_noreg: 2 x 2 divisions of size/2; per division zsdf_resolution = round(256 * division / 500) nodes,
  grid_resolution = round(128 * division / 500) iso-surface samples (also the final merge's), and the paper's
  4 height-map bins per node (its R = 1024 per division over 256 nodes, as `GeometryConfig.paper()` reads Eq. A1),
  so heightmap_resolution stays a multiple of zsdf_resolution. At 120 m: 31 nodes (1.94 m), grid 15 (4.0 m),
  124 bins (0.48 m; scene mode: 128, 0.47 m), sharpness k = 80 * 15 / 128 (the paper's k per grid step). Steps
  stay `--steps` (not a scale).
- z layers: every grid keeps its own count along z over the scene's z_range (the points' span +-3 m), as today:
  `naive_mesh_from_dsm` has one R for x, y and z (the paper's normalised cube) and GeometryConfig samples
  grid_resolution layers along z; neither takes a separate z count, and an anisotropic MC written here would no
  longer be the module under test. In metres this is the paper's setup on our world scaled up uniformly (x, y
  and z) to 1 km. The MVS z spans of seeds 0 / 1 / 2 are 70 / 24 / 18 m (seed 0 has a 62 m tower): layers of
  4.7 / 1.6 / 1.2 m (mc128 and the zsdf grid, 15) and 2.3 / 0.8 / 0.6 m (mc256, 31), against 0.8-1.6 m for 128
  layers over a 1 km city's plausible 100-200 m relief. Both methods get it (the paper's ratio too: MC256 has
  twice the zsdf grid's layers); it costs MC more (binary occupancy puts a roof on a layer boundary) than the
  zsdf (a continuous tanh field, interpolated within a layer), so finer MC layers would only narrow the gap.

Measured (MVS points, seeds 0-2, 100 steps, 2 shared cores): `--scale paper` F1 / Chamfer mc128 0.881 / 1.40 m,
mc256 0.956 / 0.89 m, zsdf_noreg 0.945 / 0.82 m, zsdf 0.950 / 0.77 m (5 min in all): the zsdf's 4 m iso-surface
grid costs it what the MC's voxels cost MC (seed 0: F1 0.929, 0.957 extracted at 31 per division), and the
paper's +0.25 does not appear at its cell sizes either: on these worlds (few MVS holes) cell size alone does not
explain its MC F1 of 0.28 / 0.41.

The goal line (both scales) checks the project's target on the summary means: zsdf F1 >= 0.80, zsdf F1 - the
better MC F1 >= +0.25, and zsdf Chamfer <= 0.5 x the lower MC Chamfer.

    python benchmarks/geometry.py [--seeds 0 1 2] [--size 120] [--steps 100] [--points mvs|synthetic]
                                  [--scale scene|paper]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from affine import Affine
from scipy import ndimage

from earthsynth.geo.pinhole import OrthoCamera
from earthsynth.mesh.geometry import GeometryConfig, optimise_geometry
from earthsynth.mesh.heightmap import bin_points, scene_box
from earthsynth.mesh.naive import naive_mesh_from_dsm
from earthsynth.metrics.geometry_points import gsd_threshold_m, mesh_point_metrics
from earthsynth.render.mesh import render_height
from earthsynth.world.build import WorldConfig, build_world
from earthsynth.world.primitives import PART_ID

GSD_M = 0.3
POINTS_KIND = {"mvs": "run_mvs on synthesize_scene (10 views, 512 px, 0.3 m GSD), default MVSConfig",
               "synthetic": "truth top surface (top-down render at 0.3 m) + noise 0.3 m + edge dropout + 15% holes "
                            "+ 0.5% outliers (no MVS)"}
BENCH_CONFIG = GeometryConfig(heightmap_resolution=128, zsdf_resolution=64, grid_resolution=64, steps=100)
MC_VOXELS = {"mc128": 128, "mc256": 256}       # the paper's counts per side of its scene
PAPER_SCENE_M, PAPER_DIVISION_M = 1000.0, 500.0  # MatrixCity, 2 x 2 divisions (B.2)
PAPER_NODES, PAPER_GRID, PAPER_BINS_PER_NODE = 256, 128, 1024 // 256   # per division (B.2, Eq. A1)
GOAL = {"f1": 0.80, "f1_gain": 0.25, "chamfer_ratio": 0.5}


def mc_resolution(name: str, size_m: float, scale: str) -> int:
    """Voxels per side (and z layers) of naive MC `name`: the paper's count, or its cell size in metres."""
    count = MC_VOXELS[name]
    return count if scale == "scene" else max(2, round(size_m / (PAPER_SCENE_M / count)))


def scaled_config(config: GeometryConfig, size_m: float, scale: str) -> GeometryConfig:
    """`config`, or at `paper` scale its grids at the paper's cell sizes in metres (see the module doc)."""
    if scale == "scene":
        return config
    division_m = size_m / config.divisions[1]    # square scenes: x = y
    nodes = max(2, round(PAPER_NODES * division_m / PAPER_DIVISION_M))
    grid = max(2, round(PAPER_GRID * division_m / PAPER_DIVISION_M))
    return replace(config, zsdf_resolution=nodes, heightmap_resolution=PAPER_BINS_PER_NODE * nodes,
                   grid_resolution=grid, final_grid_resolution=None, sharpness=None)


def zsdf_setup(config: GeometryConfig, size_m: float, z_range) -> tuple[dict, dict]:
    """("resolution", "voxel_m") of a zsdf run: per-division counts and their cells in metres."""
    division_m, z_m = size_m / config.divisions[1], z_range[1] - z_range[0]
    resolution = {"divisions": list(config.divisions), "heightmap": config.heightmap_resolution,
                  "zsdf": config.zsdf_resolution, "grid": config.grid_resolution, "final_grid": config.final_grid}
    voxel_m = {"xy": division_m / config.final_grid, "z": z_m / config.final_grid,
               "zsdf_node": division_m / config.zsdf_resolution,
               "heightmap_bin": division_m / config.heightmap_resolution}
    return resolution, voxel_m


def mvs_like_points(world, seed: int, *, gsd: float = GSD_M) -> np.ndarray:
    """Satellite-MVS-like ENU points (N, 3) of a world: see the module doc."""
    rng = np.random.default_rng(1000 + seed)
    x0, y0, x1, y1 = world.bounds_xy
    width, height = int(round((x1 - x0) / gsd)), int(round((y1 - y0) / gsd))
    top_hw = render_height(world.mesh_full.vertices_n3, world.mesh_full.faces_f3,
                           OrthoCamera.top_down(x0, y1, gsd, width, height)).astype(np.float64)
    finite = np.isfinite(top_hw)
    filled = np.where(finite, top_hw, np.nanmin(top_hw))
    jump = ndimage.maximum_filter(filled, size=5) - ndimage.minimum_filter(filled, size=5)
    noise_field = ndimage.gaussian_filter(rng.standard_normal((height, width)), sigma=12.0)
    holes = noise_field > np.quantile(noise_field, 0.85)
    keep = finite & (jump <= 2.0) & ~holes
    rows, cols = np.nonzero(keep)
    points = np.stack([x0 + (cols + 0.5) * gsd, y1 - (rows + 0.5) * gsd, top_hw[rows, cols]], axis=1)
    points[:, :2] += rng.normal(0.0, 0.1, (len(points), 2))
    points[:, 2] += rng.normal(0.0, 0.3, len(points))
    outliers = rng.random(len(points)) < 0.005
    points[outliers, 2] += rng.uniform(-10.0, 10.0, int(outliers.sum()))
    return points


def mvs_points(seed: int, size_m: float, workdir: Path) -> np.ndarray:
    """ENU points of `run_mvs` on the rendered satellite scene of the world (see the module doc)."""
    from earthsynth.io.pointcloud import read_point_cloud_ply
    from earthsynth.mesh.mvs import run_mvs
    from earthsynth.world.synth import SynthConfig, synthesize_scene

    scene_dir = workdir / f"scene_{seed}"
    synthesize_scene(SynthConfig(seed=seed, size_m=size_m, truth_points=10_000), scene_dir)
    result = run_mvs(scene_dir, workdir / f"mvs_{seed}")
    points, _, _ = read_point_cloud_ply(result.points_path)
    return points


def truth_points(world, seed: int, count: int = 300_000) -> np.ndarray:
    """Area-uniform points on the truth mesh's outer surface: without the terrain slab's underside, and without
    the parts hidden inside buildings (the terrain grid runs on under them, and walls of touching buildings face
    each other): terrain and wall points with building all around them (within 0.5 m) above them are dropped."""
    mesh = world.mesh_full
    rng = np.random.default_rng(2000 + seed)
    tri = mesh.vertices_n3[mesh.faces_f3]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face = rng.choice(len(area), size=count, p=area / area.sum())
    s, r2 = np.sqrt(rng.random(count)), rng.random(count)
    points = np.einsum("nk,nkd->nd", np.stack([1 - s, s * (1 - r2), s * r2], axis=1), tri[face])
    part = world.face_parts_full[face]
    building = np.isin(world.face_parts_full, [PART_ID["wall"], PART_ID["roof"], PART_ID["roof_detail"]])
    x0, y0, x1, y1 = world.bounds_xy
    step = 0.25
    width, height = int(round((x1 - x0) / step)), int(round((y1 - y0) / step))
    top = render_height(mesh.vertices_n3, mesh.faces_f3[building], OrthoCamera.top_down(x0, y1, step, width, height))
    enclosing = ndimage.minimum_filter(np.nan_to_num(top, nan=-np.inf), size=5)          # +-0.5 m
    cols = np.clip(((points[:, 0] - x0) / step).astype(int), 0, width - 1)
    rows = np.clip(((y1 - points[:, 1]) / step).astype(int), 0, height - 1)
    hidden = np.isin(part, [PART_ID["terrain"], PART_ID["wall"]]) & (enclosing[rows, cols] > points[:, 2] + 0.5)
    return points[~hidden & (points[:, 2] >= world.height_range[0] - 0.5)]


def naive_mesh(points, bounds_xy, z_range, cells: int, resolution: int):
    binned = bin_points(points, scene_box(points, bounds_xy, z_range, (cells, cells)))
    cx, cy = binned.box.cell_size_xy
    transform = Affine(cx, 0.0, bounds_xy[0], 0.0, -cy, bounds_xy[3])
    return naive_mesh_from_dsm(binned.north_up(), transform, z_range, resolution)


def evaluate(vertices, faces, truth, world, seed: int) -> dict:
    x0, y0, x1, y1 = world.bounds_xy
    inset_x, inset_y = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
    crop = (x0 + inset_x, y0 + inset_y, x1 - inset_x, y1 - inset_y)
    common = dict(samples=300_000, seed=seed, bounds_xy=crop, z_min=world.height_range[0] - 0.5)
    paper = mesh_point_metrics(vertices, faces, truth, threshold_m=gsd_threshold_m(GSD_M), **common)
    tight = mesh_point_metrics(vertices, faces, truth, threshold_m=1.0, **common)
    return {"f1": paper["f1"], "chamfer": paper["chamfer"], "precision": paper["precision"],
            "recall": paper["recall"], "threshold_m": paper["threshold_m"], "f1_1m": tight["f1"],
            "precision_1m": tight["precision"], "recall_1m": tight["recall"]}


def run_seed(seed: int, size_m: float, config: GeometryConfig, points_kind: str, workdir: Path,
             scale: str = "scene") -> list[dict]:
    world = build_world(WorldConfig(seed=seed, size_m=size_m))
    start = time.perf_counter()
    points = mvs_points(seed, size_m, workdir) if points_kind == "mvs" else mvs_like_points(world, seed)
    points_seconds = time.perf_counter() - start
    truth = truth_points(world, seed)
    bounds = tuple(float(b) for b in world.bounds_xy)
    z_range = (float(points[:, 2].min()) - 3.0, float(points[:, 2].max()) + 3.0)   # from the input alone
    cells = config.divisions[1] * config.heightmap_resolution
    z_m = z_range[1] - z_range[0]
    mc = {name: mc_resolution(name, size_m, scale) for name in MC_VOXELS}
    setups = {name: ({"voxels_per_side": r, "z_layers": r}, {"xy": size_m / r, "z": z_m / r}) for name, r in mc.items()}
    setups["zsdf_noreg"] = setups["zsdf"] = zsdf_setup(config, size_m, z_range)
    methods = {
        "mc128": lambda: naive_mesh(points, bounds, z_range, cells, mc["mc128"]),
        "mc256": lambda: naive_mesh(points, bounds, z_range, cells, mc["mc256"]),
        "zsdf_noreg": lambda: _zsdf(points, bounds, z_range, config.without_regularizers(), seed),
        "zsdf": lambda: _zsdf(points, bounds, z_range, config, seed),
    }
    lines = []
    for name, make in methods.items():
        start = time.perf_counter()
        vertices, faces = make()
        seconds = time.perf_counter() - start
        resolution, voxel_m = setups[name]
        line = {"seed": seed, "method": name, **evaluate(vertices, faces, truth, world, seed), "seconds": seconds,
                "scale": scale, "resolution": resolution, "voxel_m": voxel_m, "size_m": size_m,
                "points": POINTS_KIND[points_kind], "points_seconds": points_seconds,
                "num_points": int(len(points)), "faces": int(len(faces))}
        print(json.dumps(line), flush=True)
        lines.append(line)
    return lines


def _zsdf(points, bounds, z_range, config, seed):
    mesh = optimise_geometry(points, bounds, z_range, config, seed=seed)
    return mesh.vertices_n3, mesh.faces_f3


def summaries(lines: list[dict], seeds, steps: int, points_kind: str, scale: str) -> list[dict]:
    """One line per method (means over the seeds), then the goal line (see the module doc)."""
    out = {}
    for method in ("mc128", "mc256", "zsdf_noreg", "zsdf"):
        rows = [line for line in lines if line["method"] == method]
        out[method] = {"summary": method, "seeds": list(seeds), "steps": steps, "points": points_kind,
                       "scale": scale, "resolution": rows[0]["resolution"],
                       **{k: float(np.mean([r[k] for r in rows]))
                          for k in ("f1", "chamfer", "f1_1m", "precision", "recall", "seconds")}}
    best_mc_f1 = max(out[m]["f1"] for m in MC_VOXELS)
    best_mc_chamfer = min(out[m]["chamfer"] for m in MC_VOXELS)
    f1, gain, ratio = out["zsdf"]["f1"], out["zsdf"]["f1"] - best_mc_f1, out["zsdf"]["chamfer"] / best_mc_chamfer
    goal = {"goal": f"zsdf F1 >= {GOAL['f1']}, F1 - better MC F1 >= +{GOAL['f1_gain']}, "
                    f"Chamfer <= {GOAL['chamfer_ratio']} x lower MC Chamfer",
            "scale": scale, "seeds": list(seeds), "f1_zsdf": f1, "best_mc_f1": best_mc_f1, "f1_gain": gain,
            "chamfer_zsdf": out["zsdf"]["chamfer"], "best_mc_chamfer": best_mc_chamfer, "chamfer_ratio": ratio,
            "met": {"f1": f1 >= GOAL["f1"], "f1_gain": gain >= GOAL["f1_gain"],
                    "chamfer_ratio": ratio <= GOAL["chamfer_ratio"]}}
    goal["met"]["all"] = all(goal["met"].values())
    return [*out.values(), goal]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=float, default=120.0)
    parser.add_argument("--steps", type=int, default=BENCH_CONFIG.steps)
    parser.add_argument("--points", choices=sorted(POINTS_KIND), default="mvs")
    parser.add_argument("--scale", choices=["scene", "paper"], default="scene",
                        help="scene: the paper's voxel counts per side of our scene; paper: its cell sizes in metres")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = scaled_config(replace(BENCH_CONFIG, steps=args.steps), args.size, args.scale)
    with tempfile.TemporaryDirectory(prefix="earthsynth-bench-geometry-") as workdir:
        lines = [line for seed in args.seeds
                 for line in run_seed(seed, args.size, config, args.points, Path(workdir), args.scale)]
    for line in summaries(lines, args.seeds, args.steps, args.points, args.scale):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
