"""Per-biome appearance (albedo + height) of the procedural landscape, as prefiltered functions of (x, y).

Every function takes the sample grid `s` (1-D `xs`, `ys` and their spacing `fw`, which is also the box-filter
width) and returns (rgb (H, W, 3) float32 0..255, height (H, W) float metres above the base terrain).
Detail is kept consistent across scales by three rules: each noise octave is weighted by the pixel box
filter's response at its wavelength and dropped before it aliases; thin hard-edged features (roads, hedges,
building edges) are box-filtered analytically; features too small to resolve fade to their expected colour.
"""

from __future__ import annotations

import numpy as np

from earthsynth.world.noise import box_band, box_interval, box_step, fbm_grid, hash_cells, hash_uniform, smoothstep

_CROPS = np.array([[92, 128, 48], [148, 158, 70], [196, 178, 112], [128, 98, 68], [76, 108, 44],
                   [168, 150, 92], [110, 140, 60]], dtype=np.float32)
_ROOFS = np.array([[170, 168, 162], [122, 120, 116], [196, 194, 188], [150, 96, 78], [98, 98, 100],
                   [168, 154, 136], [140, 136, 128], [150, 146, 140], [118, 84, 70], [184, 180, 172]],
                  dtype=np.float32)
_ASPHALT = np.array([78, 78, 80], np.float32)
_SIDEWALK = np.array([170, 166, 156], np.float32)
_GRASS, _CANOPY, _PAVED = np.float32([96, 124, 60]), np.float32([52, 80, 40]), np.float32([146, 142, 134])


def fbm(s, wavelength_m, seed, octaves, persistence=0.5):
    """fBm on the sample grid, each sample standing for the average over its pixel (see `fbm_grid`)."""
    return fbm_grid(s.xs, s.ys, wavelength_m=wavelength_m, seed=seed, octaves=octaves,
                    persistence=persistence, box_filter_m=s.fw)


def detail_fade(s, feature_m: float, lo: float = 2.0, hi: float = 4.0) -> float:
    """1 while a feature of size `feature_m` is resolved (>= `hi` samples), fading to 0 at `lo` samples."""
    return float(smoothstep(lo * s.fw, hi * s.fw, feature_m))


def _shade(rgb, factor):
    return rgb * factor[..., None].astype(np.float32)


def water(seed, s, f):
    depth = np.clip((-0.25 - f["continent"]) * 8.0, 0.0, 1.0)
    shallow, deep = np.array([52, 104, 110], np.float32), np.array([18, 42, 68], np.float32)
    rgb = shallow + (deep - shallow) * depth[..., None].astype(np.float32)
    waves = fbm(s, 40.0, seed + 301, 6)                       # faint wave / wind texture, zero mean
    return _shade(rgb, 1.0 + 0.05 * waves), np.zeros_like(depth)


def snow(seed, s, f):
    # Rock outcrops: a threshold of noise, softened as the noise stops being resolved (coverage, not speckle).
    soft = 0.09 + 0.4 * (1.0 - detail_fade(s, 900.0, 1.0, 4.0))
    rock = smoothstep(0.21 - soft, 0.21 + soft, fbm(s, 900.0, seed + 311, 7) + 0.25 * f["mountain"])
    grain = fbm(s, 30.0, seed + 312, 6)
    cracks = fbm(s, 16.0, seed + 313, 5, persistence=0.65)
    white, stone = np.array([236, 240, 246], np.float32), np.array([104, 100, 96], np.float32)
    rgb = white + (stone - white) * rock[..., None].astype(np.float32)
    return _shade(rgb, 1.0 + 0.06 * grain + 0.3 * rock * cracks), np.zeros_like(rock)


def desert(seed, s, f):
    """Sand with transverse dunes (wavelength 60-140 m); the dunes fade to flat sand when unresolved."""
    wavelength = 100.0
    angle = 0.6 + 0.3 * fbm(s, 6000.0, seed + 321, 2)
    phase = 2 * np.pi * (s.X * np.cos(angle) + s.Y * np.sin(angle)) / wavelength + 6.0 * fbm(s, 700.0, seed + 322, 3)
    fade = detail_fade(s, wavelength / 2)
    crest = 0.5 + 0.5 * np.sin(phase)
    # Wind ripples (~3 m) on the dunes, linear in a sinusoid so they average out when unresolved.
    ripples = np.sin(2 * np.pi * (s.X * np.cos(angle + 0.2) + s.Y * np.sin(angle + 0.2)) / 3.0
                     + 2.0 * fbm(s, 40.0, seed + 325, 2)) * detail_fade(s, 3.0)
    height = 9.0 * (fade * crest**2 + (1.0 - fade) * 0.375)        # unresolved dunes keep their mean height
    tone = fbm(s, 2500.0, seed + 323, 5)
    red = np.clip(0.5 + 2.0 * fbm(s, 20_000.0, seed + 324, 3), 0.0, 1.0)[..., None].astype(np.float32)
    sand = np.float32([222, 192, 142]) * (1 - red) + np.float32([200, 150, 100]) * red
    rgb = _shade(sand, 1.0 + 0.12 * tone + 0.06 * fade * (crest - 0.375) + 0.03 * ripples)
    return rgb, height


def forest(seed, s, f):
    """Closed canopy: crowns (~6 m) as band-limited noise, species patches, a few clearings."""
    crowns = fbm(s, 7.0, seed + 331, 4, persistence=0.6)
    patches = fbm(s, 250.0, seed + 332, 5)
    clearing = smoothstep(0.22, 0.3, fbm(s, 600.0, seed + 333, 4))
    canopy = np.float32([48, 78, 38]) + np.float32([22, 24, 8]) * patches[..., None].astype(np.float32)
    canopy = _shade(canopy, 1.0 + 0.9 * crowns)
    meadow = np.array([104, 132, 64], np.float32)
    rgb = canopy + (meadow - canopy) * clearing[..., None].astype(np.float32)
    height = (18.0 + 6.0 * patches + 4.0 * crowns) * (1.0 - clearing)
    return rgb, height


def _jittered_cells(coord, period_m, seed, channel, jitter=0.3):
    """Cells of a jittered 1-D lattice: (index, start, end) of the cell holding `coord`."""
    k = np.floor(coord / period_m)
    def line(i):
        return (i + jitter * (hash_cells(i, np.zeros_like(i), seed, channel) - 0.5)) * period_m
    start = line(k)
    below = coord < start
    k = np.where(below, k - 1, k)
    start = np.where(below, line(k), start)
    end = line(k + 1)
    above = coord >= end
    k = np.where(above, k + 1, k)
    start, end = np.where(above, end, start), np.where(above, line(k + 1), end)
    return k, start, end


def farmland(seed, s, f):
    """Fields on a gently curved, rotated parcel grid; crop rows; tracks and hedges on parcel edges."""
    angle = 0.35
    wobble = 25.0 * fbm(s, 900.0, seed + 341, 3)
    u = s.X * np.cos(angle) + s.Y * np.sin(angle) + wobble
    v = -s.X * np.sin(angle) + s.Y * np.cos(angle) - wobble
    ku, u0, u1 = _jittered_cells(u, 160.0, seed, 1)
    kv, v0, v1 = _jittered_cells(v, 110.0, seed, 2)
    crop = (hash_cells(ku, kv, seed, 3) * len(_CROPS)).astype(int)
    t = detail_fade(s, 130.0, 1.0, 2.5)      # parcels (110-160 m) unresolved: the mean crop colour
    parcel_rgb = _CROPS[crop] * t + (1.0 - t) * _CROPS.mean(axis=0)
    rgb = parcel_rgb * (1.0 + 0.10 * fbm(s, 60.0, seed + 342, 5))[..., None].astype(np.float32)
    # Crop rows every 4 m along the parcel's long side: a sinusoid, faded out once unresolved (mean kept).
    rows = np.sin(2 * np.pi * v / 4.0) * detail_fade(s, 4.0)
    rgb = _shade(rgb, 1.0 + 0.07 * rows * (hash_cells(ku, kv, seed, 4) < 0.6))
    edge = np.minimum(np.minimum(u - u0, u1 - u), np.minimum(v - v0, v1 - v))
    hedge = box_band(edge, 2.0, s.fw) * (hash_cells(ku, kv, seed, 5) < 0.5)
    hedge_rgb = np.array([58, 82, 40], np.float32)
    rgb = rgb + (hedge_rgb - rgb) * hedge[..., None].astype(np.float32)
    return rgb, 0.4 + 5.0 * hedge


def _road_grid_1d(coord_1d, period_m, seed, channel, fw):
    """Axis-aligned jittered streets along one axis: coverage, block interval and per-line width (1-D)."""
    k, start, end = _jittered_cells(coord_1d, period_m, seed, channel, jitter=0.45)
    width_start = 8.0 + 8.0 * (hash_uniform(k, 0, seed, channel + 10) < 0.2)
    width_end = 8.0 + 8.0 * (hash_uniform(k + 1, 0, seed, channel + 10) < 0.2)
    road = np.maximum(box_band(coord_1d - start, width_start / 2, fw), box_band(coord_1d - end, width_end / 2, fw))
    return road, k, start + width_start / 2, end - width_end / 2


def urban(seed, s, f):
    """Street grid with sidewalks; lots with buildings (roof colours, heights), paved or green yards, trees."""
    road_x, bx, bx0, bx1 = _road_grid_1d(s.xs, 125.0, seed, 11, s.fw)
    road_y, by, by0, by1 = _road_grid_1d(s.ys, 105.0, seed, 12, s.fw)
    road = 1.0 - (1.0 - road_x[None, :]) * (1.0 - road_y[:, None])
    inner = (box_interval(s.xs, bx0 + 3.0, bx1 - 3.0, s.fw)[None, :]
             * box_interval(s.ys, by0 + 3.0, by1 - 3.0, s.fw)[:, None])         # blocks minus 3 m sidewalks
    density = np.clip(f["urban"] * 2.0, 0.4, 0.95)
    # Lot contents are resolved below ~10 m samples; beyond, they blend to their expected colours and cover.
    t = detail_fade(s, 20.0, 0.5, 1.5)
    # Expected values of what `_urban_lots` draws: P(building) x mean cover of a lot, mean roof height, yard mix.
    building = (0.25 + 0.6 * density) * 0.8 * inner
    roof, roof_height = _ROOFS.mean(0), 6.0 + 17.5 * density**2
    green = (0.7 - 0.35 * density)[..., None]
    yard = (green * (_GRASS + (_CANOPY - _GRASS) * 0.35) + (1 - green) * _PAVED).astype(np.float32)
    if t > 0:
        lots = _urban_lots(seed, s, (bx, bx0, bx1), (by, by0, by1), density)
        building = lots["building"] * t + (1 - t) * building
        roof = lots["roof"] * t + (1 - t) * roof
        yard = lots["yard"] * t + (1 - t) * yard
        roof_height = lots["height"] * t + (1 - t) * roof_height
    # Coverages of disjoint layers sum to one, so this is the exact box average of the pieces.
    sidewalk = np.clip(1.0 - road - inner, 0.0, 1.0)
    yard_cover = np.clip(inner - building, 0.0, 1.0)
    rgb = (road[..., None] * _ASPHALT + sidewalk[..., None] * _SIDEWALK + yard_cover[..., None] * yard
           + building[..., None] * roof).astype(np.float32)
    rgb = _shade(rgb, 1.0 + 0.06 * fbm(s, 12.0, seed + 351, 4))
    return rgb, building * roof_height


def _urban_lots(seed, s, x_blocks, y_blocks, density):
    """Per-lot buildings (box-filtered rectangles, gable shading on houses), yards with tree canopy."""
    bx, bx0, bx1 = x_blocks
    by, by0, by1 = y_blocks
    lot_x, lx0, lx1 = _lots_1d(s.xs, bx, bx0 + 3.0, bx1 - 3.0, seed, 13)
    lot_y, ly0, ly1 = _lots_1d(s.ys, by, by0 + 3.0, by1 - 3.0, seed, 14)
    lot_hash = _separable_hash(lot_x, lot_y, seed)
    setback = [0.5 + 3.5 * lot_hash(22 + i) ** 3 for i in range(4)]
    a0, a1 = lx0[None, :] + setback[0], lx1[None, :] - setback[1]
    b0, b1 = ly0[:, None] + setback[2], ly1[:, None] - setback[3]
    building = box_interval(s.xs[None, :], a0, a1, s.fw) * box_interval(s.ys[:, None], b0, b1, s.fw)
    building = building * (lot_hash(21) < 0.25 + 0.6 * density)
    roof = _ROOFS[(lot_hash(26) * len(_ROOFS)).astype(int)] * (0.9 + 0.2 * lot_hash(29))[..., None]
    # Houses (low density) get a gable: the two roof halves lit differently, zero-mean so averages hold.
    house = (lot_hash(30) > density)[..., None]
    half = 2.0 * box_step(s.ys[:, None] - (b0 + b1) / 2, s.fw) - 1.0
    clutter = fbm(s, 3.0, seed + 353, 2) * detail_fade(s, 3.0)     # rooftop units, vents, stains
    roof = roof * np.where(house, 1.0 + 0.1 * half[..., None], 1.0 + 0.12 * clutter[..., None])
    green = (lot_hash(27) < 0.7 - 0.35 * density)[..., None]
    trees_resolved = detail_fade(s, 8.0)
    canopy = np.clip(2.5 * fbm(s, 10.0, seed + 352, 3) + 0.2, 0.0, 1.0) * trees_resolved + 0.35 * (1 - trees_resolved)
    grass = _GRASS + (_CANOPY - _GRASS) * canopy[..., None]
    yard = np.where(green, grass, _PAVED)
    height = 6.0 + 70.0 * lot_hash(28) ** 3 * density**2
    return {"building": building, "roof": roof.astype(np.float32), "yard": yard.astype(np.float32),
            "height": height}


def _separable_hash(ids_x, ids_y, seed):
    """channel -> hash of the cell (ids_y[i], ids_x[j]) on the (H, W) grid, each distinct cell hashed once."""
    ux, inv_x = np.unique(ids_x, return_inverse=True)
    uy, inv_y = np.unique(ids_y, return_inverse=True)
    def lookup(channel):
        return hash_uniform(ux[None, :], uy[:, None], seed, channel)[inv_y[:, None], inv_x[None, :]]
    return lookup


def _lots_1d(coord_1d, block_index, start, end, seed, channel):
    """Split each block interval into lots of 16-40 m (per block): (global lot id, lot start, lot end), 1-D."""
    # Most blocks hold 16-40 m lots; one in five holds big ones (halls, malls, slabs) up to 70 m.
    u = hash_uniform(block_index, 0, seed, channel)
    lot_m = np.where(u < 0.8, 16.0 + 30.0 * u, 40.0 + 150.0 * (u - 0.8))
    n = np.maximum(np.round((end - start) / lot_m), 1.0)
    width = (end - start) / n
    i = np.clip(np.floor((coord_1d - start) / np.maximum(width, 1e-6)), 0, n - 1)
    return block_index * 64 + i, start + i * width, start + (i + 1) * width


BIOME_FUNCTIONS = {"water": water, "snow": snow, "desert": desert, "forest": forest, "farmland": farmland,
                   "urban": urban}
