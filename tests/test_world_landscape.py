"""The procedural landscape: determinism, seamless tiling, cross-scale consistency, biomes, DSM."""

import time
from functools import lru_cache

import numpy as np
import pytest

from earthsynth.errors import ConfigError
from earthsynth.world.landscape import BIOMES, landscape_biomes, landscape_tile

def _down(a, k):
    h, w = a.shape[0] // k, a.shape[1] // k
    return a.reshape(h, k, w, k, *a.shape[2:]).mean(axis=(1, 3))


@lru_cache(maxsize=1)
def _biome_centres(seed=0):
    """One location deep inside each biome (over a 300 km square)."""
    from scipy import ndimage

    gsd, n = 1500.0, 200
    biomes = landscape_biomes(seed, x0=-150_000, y0=150_000, width_px=n, height_px=n, gsd=gsd)
    centres = {}
    for k, name in enumerate(BIOMES):
        rows, cols = np.nonzero(ndimage.binary_erosion(biomes == k, iterations=2))
        if len(rows):
            i, j = rows[len(rows) // 2], cols[len(cols) // 2]
            centres[name] = (-150_000 + (j + 0.5) * gsd, 150_000 - (i + 0.5) * gsd)
    return biomes, centres


def test_all_biomes_appear_over_a_large_area():
    biomes, centres = _biome_centres()
    share = np.bincount(biomes.ravel(), minlength=len(BIOMES)) / biomes.size
    print("\nbiome shares over 300 km:", dict(zip(BIOMES, np.round(share, 3))))
    assert set(centres) == set(BIOMES)
    assert np.all(share > 0.02)


def test_same_seed_same_bytes_different_seed_differs():
    kwargs = dict(x0=-122_400.0, y0=12_400.0, width_px=48, height_px=40, gsd=4.0)
    a_rgb, a_h = landscape_tile(0, **kwargs)
    b_rgb, b_h = landscape_tile(0, **kwargs)
    c_rgb, _ = landscape_tile(1, **kwargs)
    assert a_rgb.dtype == np.uint8 and a_rgb.shape == (40, 48, 3)
    assert a_h.dtype == np.float32 and a_h.shape == (40, 48)
    assert a_rgb.tobytes() == b_rgb.tobytes() and a_h.tobytes() == b_h.tobytes()
    assert not np.array_equal(a_rgb, c_rgb)


def test_tiles_are_seamless():
    """Two half tiles side by side are exactly the whole tile (no edge effects, rows go south)."""
    x0, y0, gsd = -122_500.0, 12_500.0, 2.0
    whole, whole_h = landscape_tile(0, x0=x0, y0=y0, width_px=64, height_px=48, gsd=gsd)
    left, left_h = landscape_tile(0, x0=x0, y0=y0, width_px=32, height_px=48, gsd=gsd)
    right, _ = landscape_tile(0, x0=x0 + 32 * gsd, y0=y0, width_px=32, height_px=48, gsd=gsd)
    bottom, _ = landscape_tile(0, x0=x0, y0=y0 - 24 * gsd, width_px=64, height_px=24, gsd=gsd)
    np.testing.assert_array_equal(whole, np.concatenate([left, right], axis=1))
    np.testing.assert_array_equal(whole[24:], bottom)
    np.testing.assert_array_equal(whole_h[:, :32], left_h)


@pytest.mark.parametrize("biome", ["urban", "farmland", "forest", "desert", "snow"])
def test_fine_tile_averaged_down_matches_the_coarse_tile(biome):
    _, centres = _biome_centres()
    cx, cy = centres[biome]
    report = []
    for fine, limit in ((1.0, 8.0), (16.0, 12.0)):
        n = 48                                                     # coarse pixels across
        x0, y0 = cx - n * fine * 2, cy + n * fine * 2
        fine_rgb, fine_h = landscape_tile(0, x0=x0, y0=y0, width_px=4 * n, height_px=4 * n, gsd=fine)
        coarse_rgb, coarse_h = landscape_tile(0, x0=x0, y0=y0, width_px=n, height_px=n, gsd=4 * fine)
        rgb_error = np.abs(_down(fine_rgb.astype(float), 4) - coarse_rgb).mean()
        dsm_down = _down(fine_h.astype(float), 4)
        dsm_error, dsm_bias = np.abs(dsm_down - coarse_h).mean(), (dsm_down - coarse_h).mean()
        # The fine tile is not flat: the agreement is not that of two blank images.
        assert fine_rgb.astype(float).std() > 3.0
        report.append(f"{fine:g}->{4 * fine:g} m: rgb {rgb_error:.2f}/255, dsm {dsm_error:.2f} m "
                      f"(bias {dsm_bias:+.2f}, spread {dsm_down.std():.1f})")
        assert rgb_error < limit
        assert abs(dsm_bias) < 1.0
        # At 1 m, heights agree to under a metre; at 64 m, unresolved lots are replaced by their expectation.
        assert dsm_error < (1.0 if fine == 1.0 else max(1.0, 0.75 * dsm_down.std()))
    print(f"\n{biome}: " + "; ".join(report))


def test_dsm_is_aligned_with_the_image():
    """Buildings stand out of the DSM where the image shows roofs; water is flat at sea level."""
    _, centres = _biome_centres()
    cx, cy = centres["urban"]
    rgb, height = landscape_tile(0, x0=cx - 128, y0=cy + 128, width_px=256, height_px=256, gsd=1.0)
    relief = height - np.percentile(height, 5)
    assert relief.max() > 5.0                                       # buildings
    wx, wy = centres["water"]
    _, water_h = landscape_tile(0, x0=wx - 64, y0=wy + 64, width_px=32, height_px=32, gsd=4.0)
    assert np.abs(water_h).max() < 0.5


def test_speed_of_a_512_tile_at_several_scales():
    for gsd in (64.0, 4.0, 1.0):
        start = time.perf_counter()
        landscape_tile(0, x0=-122_250.0 - 256 * gsd, y0=12_250.0 + 256 * gsd, width_px=512, height_px=512, gsd=gsd)
        print(f"\nlandscape_tile 512x512 at {gsd:g} m/px: {time.perf_counter() - start:.2f} s")


@pytest.mark.parametrize("bad", [dict(width_px=0), dict(gsd=-1.0), dict(gsd=float("nan")), dict(height_px=5000),
                                 dict(supersample=7)])
def test_bad_arguments_are_refused(bad):
    kwargs = dict(x0=0.0, y0=0.0, width_px=8, height_px=8, gsd=1.0) | bad
    with pytest.raises(ConfigError):
        landscape_tile(0, **kwargs)
