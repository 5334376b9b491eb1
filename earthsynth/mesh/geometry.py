"""The Orbit to Ground geometry stage (paper 003, Sec. 3.1 and App. B.2): MVS points -> a watertight 2.5D mesh.

Per scene division (paper: 4, a 2 x 2 split), a `ZMonotonicSDF` is initialised from the binned height map and
optimised with Adam; each step

    SDF grid -> iso-surface (marching tetrahedra, open) -> top-down height render on the division's R x R bin
    grid (Eq. A3) -> L_H = masked L1 to the binned MVS heights (Eq. A4)
    + lambda_Lap L_Lap (Eq. A5, on the normalised vertices)
    + lambda_Nrm L_Nrm (Eq. A6, TV of the rendered face-normal map, normals in metres)
    + lambda_reg L_reg (FlexiCubes' SDF sign regulariser on the sampled grid, annealed as FlexiCubes does).

Two choices of ours, both measured on MVS points of the synthetic world (benchmarks/geometry.py): the initial
surface fills MVS holes from their low side (`heightmap.fill_holes`: occlusion holes are ground), and L_Nrm is
taken over the observed pixels only (`normal_tv_observed_only`): over every pixel it erodes the buildings that
stand in holes, where nothing holds them (recall at the paper's threshold 0.98 -> 0.94 on seed 0).

All of it happens in the division's normalised cube (x, y over the division box, z over the scene's z_range,
`earthsynth.mesh.heightmap.GridBox`), so the losses are in the paper's units. The step itself (values and
gradients of the straightforward `extract_isosurface(field.sample_grid(...))`, at a fraction of the cost) lives in
`earthsynth.mesh.geometry_step`. Iso-surface samples sit at cell centres of the box (`cell_centre_bounds`).

Divisions and the merge (no cracks, exactly). All divisions share ONE global layout: the scene's ZSDF node grid
(divisions x zsdf_resolution nodes per side) and the global z normalisation. A division optimises its own nodes
plus `halo_cells` nodes of each neighbour (so its border nodes see data on both sides), then hands back only its
own nodes. The merge assembles them into one global offset grid, i.e. one global Z-monotonic SDF, and extracts
the final mesh ONCE over the whole scene box (`closed=True`: capped sides and a floor at z_range[0]). One field and
one extraction: the seams cannot crack, and the field is continuous across them (the ZSDF's windowed
interpolation blends the two sides over 1.5 nodes), so there is no height jump either. The paper instead extracts
each division and merges four meshes; it does not say how its seams are joined. The caps lie exactly on the scene
box; within the outer half grid cell the top surface bevels down to them (the iso-surface's rim).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from earthsynth.errors import ConfigError
from earthsynth.io.mesh import TexturedMesh
from earthsynth.mesh.geometry_step import GridSampler, cell_centre_bounds, division_losses
from earthsynth.mesh.heightmap import GridBox, HeightMap, bin_points, fill_holes, scene_box
from earthsynth.mesh.isosurface import extract_isosurface
from earthsynth.mesh.regularizers import RegularizerWeights, annealed_sdf_sign_weight
from earthsynth.mesh.zsdf import ZMonotonicSDF, ZSDFConfig


PAPER_SHARPNESS = 80.0        # k of Eq. 5 (B.2), at the paper's 128-sample iso-surface grid
PAPER_GRID_RESOLUTION = 128   # FlexiCubes 128^3 (B.2)


@dataclass(frozen=True)
class GeometryConfig:
    """Defaults are a CPU budget (a 300 m scene in a few minutes on 2 cores); `paper()` is the paper's scale."""

    divisions: tuple[int, int] = (2, 2)       # (along y, along x); Orbit to Ground: 4 spatial divisions (B.2)
    heightmap_resolution: int = 256           # R bins per division side; paper R = 1024 (Eq. A1)
    zsdf_resolution: int = 64                 # learnable nodes per division side; paper 256 x 256 (B.2)
    grid_resolution: int = 64                 # iso-surface samples per division side and along z; paper 128^3
    steps: int = 150                          # Adam steps per division; paper 2000
    lr: float = 0.01                          # Adam learning rate; paper 0.01
    sharpness: float | None = None            # k; None: 80 * grid_resolution / 128 (the paper's k per grid step)
    temperature: float = 1.0                  # ZSDF softmax temperature, nodes (ours, see zsdf.py)
    weights: RegularizerWeights = field(default_factory=RegularizerWeights)  # lambda_Lap .5, Nrm .01, reg .1
    anneal_sdf_sign: bool = True              # FlexiCubes' schedule for lambda_reg
    normal_tv_observed_only: bool = True      # L_Nrm only where MVS saw something (ours; the paper: everywhere)
    halo_cells: int = 4                       # ZSDF nodes borrowed from each neighbouring division (ours)
    final_grid_resolution: int | None = None  # samples per division side for the merged mesh; None: grid_resolution

    def __post_init__(self):
        if isinstance(self.weights, dict):
            object.__setattr__(self, "weights", RegularizerWeights(**self.weights))
        object.__setattr__(self, "divisions", tuple(int(d) for d in self.divisions))
        if len(self.divisions) != 2 or min(self.divisions) < 1:
            raise ConfigError(f"divisions must be two counts >= 1 (along y, along x), got {self.divisions}")
        sizes = (self.heightmap_resolution, self.zsdf_resolution, self.grid_resolution, self.final_grid)
        if min(sizes) < 2:
            raise ConfigError(f"resolutions must be >= 2, got {sizes}")
        if self.heightmap_resolution % self.zsdf_resolution:
            raise ConfigError(f"heightmap_resolution ({self.heightmap_resolution}) must be a multiple of "
                              f"zsdf_resolution ({self.zsdf_resolution}) so divisions align with the bins")
        if self.steps < 0 or not self.lr > 0 or self.halo_cells < 0 or not self.temperature > 0:
            raise ConfigError("steps and halo_cells must be >= 0, lr and temperature > 0")
        if self.sharpness is not None and not self.sharpness > 0:
            raise ConfigError(f"sharpness must be positive, got {self.sharpness}")

    @property
    def final_grid(self) -> int:
        return self.final_grid_resolution or self.grid_resolution

    @property
    def curve_sharpness(self) -> float:
        return self.sharpness or PAPER_SHARPNESS * self.grid_resolution / PAPER_GRID_RESOLUTION

    @classmethod
    def paper(cls) -> "GeometryConfig":
        """Orbit to Ground B.2: 4 divisions, R = 1024, 256^2 nodes, 128^3 grid, k = 80, 2000 steps (GPU scale)."""
        return cls(heightmap_resolution=1024, zsdf_resolution=256, grid_resolution=128, steps=2000,
                   sharpness=PAPER_SHARPNESS)

    @classmethod
    def tiny(cls) -> "GeometryConfig":
        """For tests: seconds on one core."""
        return cls(heightmap_resolution=32, zsdf_resolution=16, grid_resolution=16, steps=30, halo_cells=2)

    def without_regularizers(self) -> "GeometryConfig":
        """The paper's "w/o L_Lap, L_Nrm" ablation (and without L_reg)."""
        from dataclasses import replace
        return replace(self, weights=RegularizerWeights(laplacian=0.0, normal_tv=0.0, sdf_sign=0.0))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Division:
    """One division: its global ZSDF node window (with halo), which of those nodes it owns, its bin grid."""

    index: tuple[int, int]
    node_rows: slice          # global node rows of its grid (halo included)
    node_cols: slice
    own_rows: slice           # rows / cols of its own nodes inside its grid
    own_cols: slice
    box: GridBox              # the division box (halo included) with its bin grid, rows following +y
    samples_3: tuple[int, int, int]   # iso-surface samples (x, y, z) over the box


def plan_divisions(scene: GridBox, config: GeometryConfig) -> list[Division]:
    """The divisions of a scene whose `scene.shape_hw` is the global bin grid (divisions x R per side)."""
    ny, nx = config.divisions
    nodes_y, nodes_x = ny * config.zsdf_resolution, nx * config.zsdf_resolution
    bins = config.heightmap_resolution // config.zsdf_resolution
    halo, g, m = config.halo_cells, config.zsdf_resolution, config.grid_resolution
    out = []
    for a in range(ny):
        for b in range(nx):
            r0, r1 = max(0, a * g - halo), min(nodes_y, (a + 1) * g + halo)
            c0, c1 = max(0, b * g - halo), min(nodes_x, (b + 1) * g + halo)
            box = scene.sub_box(slice(r0 * bins, r1 * bins), slice(c0 * bins, c1 * bins))
            samples = (max(2, round(m * (c1 - c0) / g)), max(2, round(m * (r1 - r0) / g)), m)
            out.append(Division((a, b), slice(r0, r1), slice(c0, c1), slice(a * g - r0, (a + 1) * g - r0),
                                slice(b * g - c0, (b + 1) * g - c0), box, samples))
    return out


# ---------------------------------------------------------------------------------------------- optimisation


def optimise_division(division: Division, target: HeightMap, initial_hw: np.ndarray, config: GeometryConfig, *,
                      device=None, progress=None) -> tuple[np.ndarray, list[dict]]:
    """Adam on one division's ZSDF offsets. target: binned heights over `division.box`; initial_hw: hole-filled
    heights there (metres). -> (the division's own node offsets (G, G) normalised, loss log)."""
    grid_hw = (division.node_rows.stop - division.node_rows.start, division.node_cols.stop - division.node_cols.start)
    zconfig = ZSDFConfig(grid_hw=grid_hw, sharpness=config.curve_sharpness, temperature=config.temperature)
    box = division.box
    field = ZMonotonicSDF.from_heightmap(torch.as_tensor(box.heights_to_normalised(initial_hw), dtype=torch.float32),
                                         zconfig, device=device)
    target_hw = torch.as_tensor(np.nan_to_num(target.normalised()), dtype=torch.float32, device=device)
    mask_hw = torch.as_tensor(target.mask_hw, device=device)
    optimiser = torch.optim.Adam([field.offsets_hw], lr=config.lr)
    sampler = GridSampler(field, division.samples_3)
    log, metres = [], 0.5 * (box.z_range[1] - box.z_range[0])
    for step in range(config.steps + 1):        # the last pass only measures the final state
        sign_weight = config.weights.sdf_sign
        if config.anneal_sdf_sign and sign_weight:
            sign_weight = annealed_sdf_sign_weight(step, max(config.steps, 1), sign_weight)
        terms = division_losses(sampler, division.box, target_hw, mask_hw, config.weights, sign_weight,
                                normal_tv_observed_only=config.normal_tv_observed_only)
        record = {k: float(v.detach()) for k, v in terms.items()}
        record.update(step=step, height_m=record["height"] * metres)
        log.append(record)
        if progress is not None:
            progress(division.index, step, record)
        if step == config.steps:
            break
        optimiser.zero_grad(set_to_none=True)
        if terms["total"].requires_grad:
            terms["total"].backward()
            grad = field.offsets_hw.grad
            if grad is not None and not bool(torch.isfinite(grad).all()):   # never seen since _safe_barycentrics
                torch.nan_to_num_(grad, nan=0.0, posinf=0.0, neginf=0.0)
                record["nonfinite_grad"] = True
            optimiser.step()
    own = field.offsets_hw.detach()[division.own_rows, division.own_cols]
    return own.cpu().numpy(), log


def merged_field(offsets_hw: np.ndarray, config: GeometryConfig, *, device=None) -> ZMonotonicSDF:
    """The global Z-monotonic SDF of the assembled division offsets (normalised over the scene box)."""
    zconfig = ZSDFConfig(grid_hw=tuple(offsets_hw.shape), sharpness=config.curve_sharpness,
                         temperature=config.temperature)
    field = ZMonotonicSDF(zconfig, device=device)
    with torch.no_grad():
        field.offsets_hw.copy_(torch.as_tensor(offsets_hw, dtype=field.offsets_hw.dtype))
    return field


@torch.no_grad()
def extract_scene_mesh(field: ZMonotonicSDF, scene: GridBox, samples_3, *, slab_columns: int = 1 << 20):
    """The closed mesh of the global field over the scene box, ENU metres: (vertices_v3 float64, faces_f3 int64).
    The SDF grid is sampled in slabs along x (bounded memory), then extracted once."""
    lo, hi = cell_centre_bounds(samples_3)
    nx, ny, nz = samples_3
    step_x = (hi[0] - lo[0]) / (nx - 1)
    per_slab = max(2, slab_columns // max(1, ny * nz))
    slabs = []
    for i0 in range(0, nx, per_slab):
        i1 = min(nx, i0 + per_slab)
        x_lo, x_hi = lo[0] + i0 * step_x, lo[0] + (i1 - 1) * step_x
        if i1 - i0 == 1:   # sample_grid needs 2 points per axis: take one more and drop it
            slabs.append(field.sample_grid((2, ny, nz), (x_lo, lo[1], lo[2]), (x_lo + step_x, hi[1], hi[2]))[:1])
        else:
            slabs.append(field.sample_grid((i1 - i0, ny, nz), (x_lo, lo[1], lo[2]), (x_hi, hi[1], hi[2])))
    vertices, faces = extract_isosurface(torch.cat(slabs, dim=0), lo, hi, closed=True)
    vertices_m = scene.from_normalised(vertices.double().cpu().numpy())
    return vertices_m, faces.cpu().numpy().astype(np.int64)


def _default_z_range(points_n3: np.ndarray, bounds_xy) -> tuple[float, float]:
    box = GridBox(bounds_xy, (-1.0, 1.0), (1, 1))
    _, _, inside = box.cell_index(points_n3)
    z = points_n3[inside & np.isfinite(points_n3).all(axis=1), 2]
    if z.size == 0:
        raise ConfigError(f"no finite point lies inside bounds_xy {tuple(bounds_xy)}")
    margin = max(2.0, 0.05 * float(z.max() - z.min()))
    return float(z.min()) - margin, float(z.max()) + margin


def optimise_divisions(binned: HeightMap, config: GeometryConfig, *, device=None, progress=None):
    """Optimise every division of the binned scene -> (global node offsets (ny G, nx G) normalised, reports)."""
    scene = binned.box
    filled = fill_holes(binned.heights_hw)
    ny, nx = config.divisions
    g, bins = config.zsdf_resolution, config.heightmap_resolution // config.zsdf_resolution
    offsets = np.zeros((ny * g, nx * g), np.float32)
    reports = []
    for division in plan_divisions(scene, config):
        t0 = time.perf_counter()
        rows = slice(division.node_rows.start * bins, division.node_rows.stop * bins)
        cols = slice(division.node_cols.start * bins, division.node_cols.stop * bins)
        own, log = optimise_division(division, binned.crop(rows, cols), filled[rows, cols], config,
                                     device=device, progress=progress)
        a, b = division.index
        offsets[a * g:(a + 1) * g, b * g:(b + 1) * g] = own
        reports.append({"index": list(division.index), "seconds": time.perf_counter() - t0,
                        "box": division.box.to_dict(), "first": log[0], "last": log[-1], "log": log})
    return offsets, reports


def optimise_geometry(points_n3, bounds_xy, z_range, config: GeometryConfig = GeometryConfig(), *, device=None,
                      seed: int = 0, progress=None) -> TexturedMesh:
    """MVS points (N, 3) in ENU metres -> the merged, closed, untextured 2.5D mesh in ENU metres.

    bounds_xy: (x_min, y_min, x_max, y_max) of the scene box; z_range: (low, high) metres of the iso-surface grid
    (low = the mesh floor, keep it below the lowest ground; None: from the points, with a margin). progress: None or
    a callable (division_index, step, losses_dict). The optimisation draws no random numbers: the result is a
    function of the inputs (`seed` is recorded for the stage's bookkeeping). `mesh.metadata["geometry"]` holds the
    per-division loss logs, timings and the bin statistics; `mesh.metadata["offsets_hw"]` the merged node grid."""
    started = time.perf_counter()
    points = np.asarray(points_n3, np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ConfigError(f"points_n3 must have shape (N, 3), got {points.shape}")
    z_range = _default_z_range(points, bounds_xy) if z_range is None else tuple(float(z) for z in z_range)
    ny, nx = config.divisions
    r = config.heightmap_resolution
    binned = bin_points(points, scene_box(points, bounds_xy, z_range, (ny * r, nx * r)))
    offsets, divisions = optimise_divisions(binned, config, device=device, progress=progress)
    t0 = time.perf_counter()
    final = config.final_grid
    vertices, faces = extract_scene_mesh(merged_field(offsets, config, device=device), binned.box,
                                         (nx * final, ny * final, final))
    report = {"config": config.to_dict(), "seed": int(seed), "z_range": list(z_range), "scene": binned.box.to_dict(),
              "num_points": int(len(points)), "num_points_binned": int(binned.counts_hw.sum()),
              "valid_fraction": binned.valid_fraction, "divisions": divisions,
              "merge": "one global ZSDF from the divisions' own nodes, extracted once (closed)",
              "extract_seconds": time.perf_counter() - t0, "seconds": time.perf_counter() - started,
              "num_vertices": int(len(vertices)), "num_faces": int(len(faces))}
    return TexturedMesh(vertices, faces, metadata={"geometry": report, "offsets_hw": offsets})
