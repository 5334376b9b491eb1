"""The built-in synthetic world: `WorldConfig` -> `build_world` -> `World` (deterministic from the seed).

It plays the role MatrixCity-Satellite plays in Orbit-to-Ground (appendix C.1): a city with exact geometry and
appearance, the ground truth for every metric. `mesh_lod` is the same scene at a reduced level of detail, the
degraded side of the restoration training pairs of Orbit-to-Ground appendix B.3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from earthsynth.errors import ConfigError
from earthsynth.geo.frames import ENUFrame
from earthsynth.io.mesh import TexturedMesh
from earthsynth.world import cars, city, city_mesh, facades, landcover, trees as tree_mod
from earthsynth.world.atlas import Palette, compose_atlas, plan_atlas
from earthsynth.world.primitives import MeshAccumulator
from earthsynth.world.terrain import Terrain, make_pond, terrain_solid

ATLAS_PAD = 2


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    size_m: float = 300.0               # square scene side (MatrixCity-Satellite evaluates 800 m; CPU-sized here)
    origin_lon: float = 11.5755         # a mid-latitude site (Munich); only the ENU frame depends on it
    origin_lat: float = 48.1374
    origin_alt: float = 520.0           # metres above the WGS84 ellipsoid
    ground_texel_m: float = 0.25        # finer than WorldView-3's 0.31 m GSD (Orbit-to-Ground C.1)
    facade_texel_m: float = 0.15        # windows ~8 texels wide; coarsened automatically if the atlas is full
    terrain_spacing_m: float = 2.0      # terrain mesh grid step
    relief_m: float = 4.0               # relief amplitude: a few metres over the scene
    block_spacing_m: tuple[float, float] = (58.0, 92.0)   # road-to-road distance range
    max_street_angle_deg: float = 12.0  # street grid rotation from east-north, drawn in +-this
    tower_fraction: float = 0.06        # share of building lots holding a 50-120 m tower
    min_towers: int = 2
    midrise_fraction: float = 0.35      # share of the rest that is 15-40 m mid-rise (more near the centre)
    tree_density: float = 1.0           # 0..1 share of tree candidates kept
    lod_downsample: int = 4             # reduced LoD: top-down texture down-sampled x4 ...
    lod_blur_texels: float = 1.0        # ... and blurred (sigma in down-sampled texels)
    atlas_preferred_px: int = 2048
    atlas_max_px: int = 4096

    def __post_init__(self):
        if not 60.0 <= self.size_m <= 1000.0:
            raise ConfigError(f"world size_m must be in [60, 1000] metres, got {self.size_m}")
        if not 0.05 <= self.ground_texel_m <= 2.0 or not 0.05 <= self.facade_texel_m <= 2.0:
            raise ConfigError("ground_texel_m and facade_texel_m must be in [0.05, 2.0] metres")
        if self.size_m / self.ground_texel_m > self.atlas_max_px:
            raise ConfigError(f"the ground texture ({self.size_m / self.ground_texel_m:.0f} texels wide) does not "
                              f"fit an atlas of {self.atlas_max_px}", hint="raise ground_texel_m or shrink size_m")
        if not 0.0 <= self.tower_fraction <= 1.0 or not 0.0 <= self.midrise_fraction <= 1.0:
            raise ConfigError("tower_fraction and midrise_fraction must be in [0, 1]")
        if not 30.0 <= self.block_spacing_m[0] <= self.block_spacing_m[1]:
            raise ConfigError(f"block_spacing_m must be (low, high) with 30 <= low <= high, got {self.block_spacing_m}")
        if not 0.5 <= self.terrain_spacing_m <= 20.0 or not 0.0 <= self.relief_m <= 50.0:
            raise ConfigError("terrain_spacing_m must be in [0.5, 20] m and relief_m in [0, 50] m")
        if not 0.0 <= self.tree_density <= 1.0:
            raise ConfigError(f"tree_density must be in [0, 1], got {self.tree_density}")
        if self.lod_downsample < 1 or (self.size_m / self.ground_texel_m) % self.lod_downsample:
            raise ConfigError("lod_downsample must be >= 1 and divide the ground texture size")


@dataclass(frozen=True, eq=False)
class World:
    """The synthetic scene in ENU metres around `frame`; both meshes share one UV layout."""

    config: WorldConfig
    frame: ENUFrame
    bounds_xy: tuple[float, float, float, float]
    mesh_full: TexturedMesh
    mesh_lod: TexturedMesh
    buildings: list                  # [city.BuildingRecord]
    trees: list                      # [trees.Tree]
    height_range: tuple[float, float]  # lowest ground point .. highest point of the full mesh (ENU z)
    terrain: Terrain
    layout: landcover.StreetLayout
    grid: landcover.GroundGrid       # the ground texel grid (top-down texture = landcover rasters)
    landcover_hw: np.ndarray         # uint8 classes, landcover.LANDCOVER_NAMES
    ground_albedo_hw3: np.ndarray    # uint8 ground colours without roofs
    face_parts_full: np.ndarray      # int8 per face of mesh_full, primitives.PART_NAMES
    face_parts_lod: np.ndarray
    face_buildings_full: np.ndarray  # int32 building index per face, -1 elsewhere
    face_buildings_lod: np.ndarray
    palette: Palette
    region_origins: dict             # atlas region name -> (row, col) of its top-left texel

    def ground_height(self, x, y) -> np.ndarray:
        """Terrain height (ENU z) at (x, y), without buildings or trees."""
        return self.terrain.height(x, y)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


def _place_pond(layout, terrain: Terrain, seed: int):
    parks = [b for b in layout.blocks if b.use == "park"]
    # The largest park that lies inside the world (any park in a world too small to hold one whole).
    park = max(parks, key=lambda b: (b.inside_world, (b.rect_uv[2] - b.rect_uv[0]) * (b.rect_uv[3] - b.rect_uv[1])))
    u0, v0, u1, v1 = park.rect_uv
    center = layout.to_enu((u0 + u1) / 2, (v0 + v1) / 2)
    radii = (0.3 * (u1 - u0), 0.26 * (v1 - v0))
    return make_pond(terrain, center, radii, layout.angle_rad, seed + 17)


def _plan_scene(config: WorldConfig, bounds):
    """Streets, pond, terrain, lots, buildings, land cover and trees (no textures, no meshes)."""
    layout = landcover.make_street_layout(
        _rng(config.seed, 1), bounds, max_angle_deg=config.max_street_angle_deg,
        block_spacing_m=config.block_spacing_m)
    bare = Terrain(config.seed, config.relief_m)
    terrain = Terrain(config.seed, config.relief_m, (_place_pond(layout, bare, config.seed),))
    lots = city.plan_lots(layout, bounds, _rng(config.seed, 2))
    buildings = city.plan_buildings(
        lots, layout, terrain, _rng(config.seed, 3), tower_fraction=config.tower_fraction,
        min_towers=config.min_towers, midrise_fraction=config.midrise_fraction)
    grid = landcover.GroundGrid(bounds, config.ground_texel_m)
    classes = landcover.paint_landcover(
        layout, grid, ponds=terrain.ponds, lots=[(lot.rect_uv, lot.ground_class) for lot in lots],
        footprints=[b.footprint_n2 for b in buildings])
    trees = tree_mod.plan_trees(layout, classes, grid, terrain, _rng(config.seed, 4), seed=config.seed + 7,
                                density=config.tree_density)
    tree_mod.mark_tree_ground(classes, grid, trees)
    return layout, terrain, buildings, grid, classes, trees


def _make_palette() -> Palette:
    palette = Palette()
    palette.add("trunk", (82, 62, 44))
    palette.add("roof_unit", (196, 198, 200))
    palette.add("machine_room", (150, 150, 146))
    cars.register_car_colours(palette)
    return palette


def _region_images(config, buildings, grid, ground, palette, facade_texel_m):
    """Atlas region images for the full and the reduced level of detail (same names, same sizes)."""
    top_full, top_lod = ground.copy(), ground.copy()
    facades.paint_roofs([(top_full, True), (top_lod, False)], grid, buildings, seed=config.seed + 11)
    full = {"topdown": top_full, "palette": palette.image()}
    lod = {"topdown": degrade_texture(top_lod, config.lod_downsample, config.lod_blur_texels),
           "palette": palette.image()}
    for b in buildings:
        width, _ = city_mesh.facade_sheet_size_m(b)
        sheet = facades.facade_sheet(b.style, width_m=width, top_z=b.top_z, base_z=b.base_z, ground_z=b.ground_z,
                                     eave_z=b.eave_z, texel_m=facade_texel_m, seed=config.seed * 1000 + b.index)
        full[city_mesh.facade_region(b)] = sheet
        lod[city_mesh.facade_region(b)] = _flat_like(sheet)
    for k, rgb in enumerate(tree_mod.foliage_colours()):
        patch = facades.foliage_patch(rgb, tree_mod.FOLIAGE_PATCH_PX, seed=config.seed + 100 + k)
        full[tree_mod.foliage_region(k)] = patch
        lod[tree_mod.foliage_region(k)] = _flat_like(patch)
    return full, lod


def _flat_like(img: np.ndarray) -> np.ndarray:
    return np.broadcast_to(img.reshape(-1, 3).mean(0).round().astype(np.uint8), img.shape).copy()


def degrade_texture(rgb_hw3: np.ndarray, factor: int, blur_sigma: float) -> np.ndarray:
    """Box down-sample by `factor`, Gaussian blur, bilinear up-sample back to the same size."""
    h, w = rgb_hw3.shape[:2]
    small = rgb_hw3.astype(np.float32).reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, sigma=(blur_sigma, blur_sigma, 0), mode="nearest")
    big = _upsample_linear(_upsample_linear(small, factor, axis=0), factor, axis=1)
    return np.clip(big.round(), 0, 255).astype(np.uint8)


def _upsample_linear(img: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Linear interpolation between texel centres (edges clamped): the up-sample stays aligned."""
    n = img.shape[axis]
    centres = (np.arange(n * factor) + 0.5) / factor - 0.5        # fine texel centres in coarse texel units
    lo = np.clip(np.floor(centres).astype(int), 0, n - 1)
    hi = np.clip(lo + 1, 0, n - 1)
    t = np.clip(centres - lo, 0.0, 1.0).astype(np.float32)
    shape = [1] * img.ndim
    shape[axis] = -1
    a, b = np.take(img, lo, axis=axis), np.take(img, hi, axis=axis)
    return a + (b - a) * t.reshape(shape)


def _fit_atlas(config, buildings, grid, palette):
    """Pick the facade texel size: the configured one if the atlas fits, else up to 4x coarser."""
    for scale in (1.0, 4 / 3, 5 / 3, 2.0, 3.0, 4.0):
        texel = config.facade_texel_m * scale
        sizes = {"topdown": grid.size_px, "palette": palette.image().shape[:2]}
        for b in buildings:
            width, height = city_mesh.facade_sheet_size_m(b)
            sizes[city_mesh.facade_region(b)] = (max(int(np.ceil(height / texel)), 1),
                                                 max(int(np.ceil(width / texel)), 1))
        for k in range(tree_mod.FOLIAGE_VARIANTS):
            sizes[tree_mod.foliage_region(k)] = (tree_mod.FOLIAGE_PATCH_PX, tree_mod.FOLIAGE_PATCH_PX)
        plan = plan_atlas(sizes, pad=ATLAS_PAD, max_size=config.atlas_max_px, preferred_size=config.atlas_preferred_px)
        if plan is not None:
            return texel, plan
    raise ConfigError("the world's textures do not fit the atlas even with 4x coarser facades",
                      hint="raise ground_texel_m, facade_texel_m or atlas_max_px, or shrink size_m")


def _assemble(config, terrain, buildings, trees, grid, palette, facade_texel_m, detail: bool):
    acc = MeshAccumulator()
    vertices, faces, n_top, loop = terrain_solid(terrain, grid.bounds_xy, config.terrain_spacing_m)
    uv = grid.texel_of(vertices[:, 0], vertices[:, 1])
    uv[n_top:n_top + len(loop)] = uv[loop]                # skirts take the colour of the edge above them
    uv[-1] = uv[loop[0]]
    acc.add(vertices, faces, uv, "topdown", "terrain")
    for b in buildings:
        city_mesh.add_building(acc, b, grid, facade_texel_m=facade_texel_m, detail=detail, palette=palette)
    tree_mod.add_trees(acc, trees, palette, detail=detail)
    return acc, n_top


def build_world(config: WorldConfig = WorldConfig()) -> World:
    """Build the synthetic world; same config -> identical arrays."""
    half = config.size_m / 2
    bounds = (-half, -half, half, half)
    layout, terrain, buildings, grid, classes, trees = _plan_scene(config, bounds)
    palette = _make_palette()
    facade_texel_m, (origins, atlas_hw) = _fit_atlas(config, buildings, grid, palette)   # fail early if too big
    ground = landcover.ground_albedo(classes, layout, grid, ponds=terrain.ponds, seed=config.seed + 5)
    images_full, images_lod = _region_images(config, buildings, grid, ground, palette, facade_texel_m)
    atlas_full = compose_atlas(images_full, origins, atlas_hw, pad=ATLAS_PAD)
    atlas_lod = compose_atlas(images_lod, origins, atlas_hw, pad=ATLAS_PAD)
    meta = {"source": "earthsynth.world", "seed": config.seed, "facade_texel_m": facade_texel_m,
            "ground_texel_m": config.ground_texel_m}
    acc_full, n_top = _assemble(config, terrain, buildings, trees, grid, palette, facade_texel_m, detail=True)
    acc_lod, _ = _assemble(config, terrain, buildings, trees, grid, palette, facade_texel_m, detail=False)
    mesh_full, parts_full, bld_full = acc_full.to_mesh(origins, atlas_full, {**meta, "level_of_detail": "full"})
    mesh_lod, parts_lod, bld_lod = acc_lod.to_mesh(origins, atlas_lod, {**meta, "level_of_detail": "reduced"})
    ground_min = float(mesh_full.vertices_n3[:n_top, 2].min())
    return World(
        config=config, frame=ENUFrame(config.origin_lon, config.origin_lat, config.origin_alt), bounds_xy=bounds,
        mesh_full=mesh_full, mesh_lod=mesh_lod, buildings=buildings, trees=trees,
        height_range=(ground_min, float(mesh_full.vertices_n3[:, 2].max())), terrain=terrain, layout=layout,
        grid=grid, landcover_hw=classes, ground_albedo_hw3=ground, face_parts_full=parts_full,
        face_parts_lod=parts_lod, face_buildings_full=bld_full, face_buildings_lod=bld_lod, palette=palette,
        region_origins=origins,
    )
