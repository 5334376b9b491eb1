"""Orthoimagery + DSM of an unbounded procedural landscape at any ground sampling distance.

This is the multi-resolution training data of the MetaEarth generator (its Google Earth pyramid was 64, 16 and
4 m/px): forests, farmland, deserts with dunes, snowy mountains, lakes and coasts, and cities, laid out by
low-frequency climate fields. The landscape is one continuous function of (x, y) metres; a tile evaluates it
on `supersample`^2 samples per pixel, each prefiltered to the sample spacing (see `landscape_biomes`), and box-
averages them, so a fine tile box-down-sampled matches the coarse tile of the same area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earthsynth.errors import ConfigError
from earthsynth.world.landscape_biomes import BIOME_FUNCTIONS, fbm

BIOMES = ("water", "snow", "desert", "forest", "farmland", "urban")
# Climate prototypes (temperature, moisture) of the land biomes that compete by climate.
_CLIMATE_PROTOTYPES = {"snow": (-0.42, 0.0), "desert": (0.3, -0.32), "forest": (-0.02, 0.25),
                       "farmland": (0.12, -0.02)}
_CLIMATE_SOFTNESS = 2e-3      # softmax temperature over squared climate distance: ~100 m wide ecotones
_COAST_SOFTNESS = 4e-4        # logistic width of the coast in continent-field units: ~10 m
_URBAN_SOFTNESS = 4e-3
MAX_TILE_PX = 4096


@dataclass(frozen=True, eq=False)
class SampleGrid:
    """Sample points of a tile: 1-D coordinates, their spacing `fw` (= box-filter width) and 2-D meshgrids."""

    xs: np.ndarray
    ys: np.ndarray
    fw: float

    @property
    def X(self) -> np.ndarray:
        return np.broadcast_to(self.xs[None, :], (len(self.ys), len(self.xs)))

    @property
    def Y(self) -> np.ndarray:
        return np.broadcast_to(self.ys[:, None], (len(self.ys), len(self.xs)))


def _sample_grid(x0, y0, width_px, height_px, gsd, supersample, margin=0) -> SampleGrid:
    """Sample centres of the tile (rows go south), plus `margin` extra samples on every side."""
    spacing = gsd / supersample
    xs = x0 + (np.arange(-margin, width_px * supersample + margin) + 0.5) * spacing
    ys = y0 - (np.arange(-margin, height_px * supersample + margin) + 0.5) * spacing
    return SampleGrid(xs, ys, float(spacing))


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.clip(z, -60, 60)))


def climate_fields(seed: int, s: SampleGrid) -> dict:
    """Low-frequency fields: continent (land/water), temperature, moisture, urbanness, mountains, elevation."""
    f = {
        "continent": fbm(s, 60_000.0, seed + 1, 5) + 0.03 * fbm(s, 2_000.0, seed + 2, 6),
        "temperature": fbm(s, 45_000.0, seed + 3, 4) + 0.012 * fbm(s, 400.0, seed + 4, 5),
        "moisture": fbm(s, 35_000.0, seed + 5, 4) + 0.012 * fbm(s, 400.0, seed + 6, 5),
        "urban": fbm(s, 15_000.0, seed + 7, 4) + 0.02 * fbm(s, 600.0, seed + 8, 5),
        "mountain": 1.0 - 2.0 * np.abs(fbm(s, 12_000.0, seed + 9, 6)),
    }
    cold = np.clip(-f["temperature"] * 3.0, 0.0, 1.0)
    f["elevation"] = (300.0 * np.clip(f["continent"] + 0.25, 0.0, None)
                      + 1500.0 * cold * np.clip(f["mountain"], 0, None) + 30.0 * fbm(s, 3_000.0, seed + 10, 7))
    return f


def biome_weights(f: dict) -> dict:
    """Weights (summing to one) of every biome at every sample."""
    land = _sigmoid((f["continent"] + 0.25) / _COAST_SOFTNESS)
    scores = np.stack([-((f["temperature"] - t) ** 2 + (f["moisture"] - m) ** 2) / _CLIMATE_SOFTNESS
                       for t, m in _CLIMATE_PROTOTYPES.values()])
    scores -= scores.max(axis=0, keepdims=True)
    climate = np.exp(scores)
    climate /= climate.sum(axis=0, keepdims=True)
    snow_share = climate[list(_CLIMATE_PROTOTYPES).index("snow")]
    urban = _sigmoid((f["urban"] - 0.3) / _URBAN_SOFTNESS) * (1.0 - snow_share)
    weights = {"water": 1.0 - land, "urban": land * urban}
    for k, name in enumerate(_CLIMATE_PROTOTYPES):
        weights[name] = land * (1.0 - urban) * climate[k]
    return weights


def _hillshade(elevation_hw, fw) -> np.ndarray:
    """Linear hillshade (light from the north-west): linear in the slope, so it averages consistently."""
    d_row, d_col = np.gradient(elevation_hw, fw)
    de_dx, de_dy = d_col, -d_row                      # rows go south
    return np.clip(1.0 + 1.2 * (0.7 * de_dx - 0.7 * de_dy), 0.5, 1.5)


def _check(width_px, height_px, gsd, supersample):
    for name, value in (("width_px", width_px), ("height_px", height_px)):
        if not (isinstance(value, (int, np.integer)) and 1 <= value <= MAX_TILE_PX):
            raise ConfigError(f"landscape tile {name} must be an integer in [1, {MAX_TILE_PX}], got {value!r}")
    if not (np.isfinite(gsd) and gsd > 0):
        raise ConfigError(f"landscape tile gsd must be a positive number of metres per pixel, got {gsd!r}")
    if supersample not in (1, 2, 3, 4):
        raise ConfigError(f"supersample must be 1, 2, 3 or 4, got {supersample!r}")


def landscape_tile(seed: int, *, x0: float, y0: float, width_px: int, height_px: int, gsd: float,
                   supersample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Orthoimage and DSM of the landscape over [x0, x0 + W gsd] x [y0 - H gsd, y0] (metres).

    -> (rgb (H, W, 3) uint8, height (H, W) float32 metres); (x0, y0) is the top-left corner, rows go south.
    """
    _check(width_px, height_px, gsd, supersample)
    # One extra sample around the tile so the hillshade's central differences are the same in every tiling.
    s = _sample_grid(float(x0), float(y0), width_px, height_px, float(gsd), supersample, margin=1)
    f = climate_fields(seed, s)
    weights = biome_weights(f)
    rgb = np.zeros((len(s.ys), len(s.xs), 3), dtype=np.float32)
    height = (1.0 - weights["water"]) * f["elevation"]
    for name in BIOMES:
        w = weights[name]
        if w.max() < 1e-4:
            continue                                  # the biome is absent from this tile
        colour, h = BIOME_FUNCTIONS[name](seed * 7919 + BIOMES.index(name), s, f)
        rgb += w[..., None].astype(np.float32) * colour
        height = height + w * h
    rgb *= _hillshade(f["elevation"], s.fw)[..., None].astype(np.float32)
    rgb, height = rgb[1:-1, 1:-1], height[1:-1, 1:-1]
    return (_box_down(rgb, supersample).round().clip(0, 255).astype(np.uint8),
            _box_down(height, supersample).astype(np.float32))


def landscape_biomes(seed: int, *, x0: float, y0: float, width_px: int, height_px: int, gsd: float) -> np.ndarray:
    """Dominant biome index (H, W) uint8 into BIOMES at pixel centres (cheap: climate fields only)."""
    _check(width_px, height_px, gsd, 1)
    s = _sample_grid(float(x0), float(y0), width_px, height_px, float(gsd), 1)
    weights = biome_weights(climate_fields(seed, s))
    return np.argmax(np.stack([weights[name] for name in BIOMES]), axis=0).astype(np.uint8)


def _box_down(a: np.ndarray, k: int) -> np.ndarray:
    if k == 1:
        return a
    h, w = a.shape[0] // k, a.shape[1] // k
    return a.reshape(h, k, w, k, *a.shape[2:]).mean(axis=(1, 3))
