"""Deterministic procedural noise and box-prefiltered shapes, all continuous in (x, y) metres.

Value noise lives on a hashed integer lattice (no permutation tables, no global state): the lattice value at
(i, j) is a pure function of (i, j, seed), so any two samplings of the same area agree wherever they overlap.
Two entry points compute the same numbers:

- `*_points(x, y, ...)`: arbitrary points (any equal shapes);
- `*_grid(xs, ys, ...)`: a regular grid given by its column coordinates `xs_w` and row coordinates `ys_h`
  (output (H, W)); it interpolates the lattice separably, several times faster than the point form.

fBm octaves below a `min_wavelength_m` are dropped (and faded in over one octave) so a caller sampling at
spacing s can band-limit the field to its Nyquist (`min_wavelength_m = 2 s`); with `box_filter_m = b` each
octave is instead scaled by a box filter's response at its wavelength, sinc(b / lambda), and dropped before it
aliases, so one point sample stands for the average over a pixel of width b. The normalisation always counts
every octave, so cutting fine octaves removes their (zero-mean) detail without rescaling the rest.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_MASK32 = np.uint64(0xFFFFFFFF)


def _mix32(h: np.ndarray) -> np.ndarray:
    """Chris Wellons' lowbias32 integer finaliser on uint64 arrays holding 32-bit values."""
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(0x7FEB352D)) & _MASK32
    h = h ^ (h >> np.uint64(15))
    h = (h * np.uint64(0x846CA68B)) & _MASK32
    return h ^ (h >> np.uint64(16))


def hash_uniform(ix, iy, seed: int, channel: int = 0) -> np.ndarray:
    """Uniform [0, 1) value for integer lattice cells (ix, iy) (broadcast), a pure function of its inputs."""
    ix = np.asarray(ix, dtype=np.int64).astype(np.uint64) & _MASK32
    iy = np.asarray(iy, dtype=np.int64).astype(np.uint64) & _MASK32
    key = np.uint64((int(seed) * 0x9E3779B1 + int(channel) * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF)
    h = _mix32(ix ^ key)
    h = _mix32((h + iy * np.uint64(0xC2B2AE3D)) & _MASK32)
    h = _mix32(h ^ key)
    return h.astype(np.float64) * (1.0 / 4294967296.0)


def hash_cells(ix, iy, seed: int, channel: int = 0, max_table: int = 1 << 20) -> np.ndarray:
    """`hash_uniform` for many samples that share few cells: hash each distinct cell once, then gather.

    Same numbers as `hash_uniform(ix, iy, seed, channel)`; falls back to it when the cells are too many.
    """
    ix, iy = np.asarray(ix, dtype=np.int64), np.asarray(iy, dtype=np.int64)
    x0, x1, y0, y1 = int(ix.min()), int(ix.max()), int(iy.min()), int(iy.max())
    if (x1 - x0 + 1) * (y1 - y0 + 1) > max_table:
        return hash_uniform(ix, iy, seed, channel)
    table = hash_uniform(np.arange(x0, x1 + 1)[None, :], np.arange(y0, y1 + 1)[:, None], seed, channel)
    return table[iy - y0, ix - x0]


def _fade(t: np.ndarray) -> np.ndarray:
    """Quintic smoothstep (C2-continuous noise)."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


@lru_cache(maxsize=4096)
def _octave_offset(seed: int) -> tuple[float, float]:
    """A per-octave lattice offset so octaves do not share lattice points (no artefact at the origin)."""
    u = hash_uniform(np.array([7, 11]), np.array([13, 17]), seed, channel=99)
    return float(u[0]) * 1000.0, float(u[1]) * 1000.0


def _lattice(ix, iy, seed: int, amplitude: float) -> np.ndarray:
    """Lattice values in [-amplitude, amplitude)."""
    return (hash_uniform(ix, iy, seed) * 2.0 - 1.0) * amplitude


def value_noise_points(x, y, wavelength_m: float, seed: int, amplitude: float = 1.0) -> np.ndarray:
    """Value noise in [-amplitude, amplitude] at points (x, y) metres, lattice spacing `wavelength_m`."""
    ox, oy = _octave_offset(seed)
    gx = np.asarray(x, dtype=np.float64) / wavelength_m + ox
    gy = np.asarray(y, dtype=np.float64) / wavelength_m + oy
    ix, iy = np.floor(gx), np.floor(gy)
    sx, sy = _fade(gx - ix), _fade(gy - iy)
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)
    v00, v10 = _lattice(ix, iy, seed, amplitude), _lattice(ix + 1, iy, seed, amplitude)
    v01, v11 = _lattice(ix, iy + 1, seed, amplitude), _lattice(ix + 1, iy + 1, seed, amplitude)
    row0 = v00 + (v10 - v00) * sx
    row1 = v01 + (v11 - v01) * sx
    return row0 + (row1 - row0) * sy


def value_noise_grid(xs_w, ys_h, wavelength_m: float, seed: int, amplitude: float = 1.0) -> np.ndarray:
    """Value noise on the grid xs_w x ys_h -> (H, W); same numbers as `value_noise_points` on that grid."""
    ox, oy = _octave_offset(seed)
    gx = np.asarray(xs_w, dtype=np.float64) / wavelength_m + ox
    gy = np.asarray(ys_h, dtype=np.float64) / wavelength_m + oy
    ix, iy = np.floor(gx), np.floor(gy)
    sx, sy = _fade(gx - ix), _fade(gy - iy)
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)
    ix0, iy0 = int(ix.min()), int(iy.min())
    lat_x = np.arange(ix0, int(ix.max()) + 2)
    lat_y = np.arange(iy0, int(iy.max()) + 2)
    lattice = _lattice(lat_x[None, :], lat_y[:, None], seed, amplitude)   # (Ly, Lx)
    cx, cy = ix - ix0, iy - iy0
    rows = lattice[:, cx] + (lattice[:, cx + 1] - lattice[:, cx]) * sx[None, :]   # (Ly, W)
    # Same arithmetic as the point form (row0 + (row1 - row0) * sy), done in place: this is the hot loop.
    out = np.take(rows, cy, axis=0)
    row1 = np.take(rows, cy + 1, axis=0)
    row1 -= out
    row1 *= sy[:, None]
    out += row1
    return out


def _octave_weights(wavelength_m, octaves, lacunarity, persistence, min_wavelength_m, box_filter_m=0.0):
    """(wavelength, amplitude) per kept octave, and the normaliser over all octaves."""
    kept, total = [], 0.0
    for k in range(octaves):
        lam, amp = wavelength_m / lacunarity**k, persistence**k
        total += amp
        # Fade an octave out linearly as its wavelength goes from 2x to 1x the cut-off, drop it below.
        fade = 1.0 if min_wavelength_m <= 0 else float(np.clip(lam / min_wavelength_m - 1.0, 0.0, 1.0))
        if box_filter_m > 0:
            # A point sample standing for a box average of width b: scale the octave by the box filter's
            # response at its wavelength (sinc(b / lambda)), and drop it (smoothly) as it nears aliasing.
            ratio = box_filter_m / lam
            fade *= float(np.sinc(ratio) * np.clip((1.0 / ratio - 1.0), 0.0, 1.0))
        if fade > 0:
            kept.append((k, lam, amp * fade))
    return kept, total


def fbm_points(x, y, *, wavelength_m: float, seed: int, octaves: int = 5, lacunarity: float = 2.0,
               persistence: float = 0.5, min_wavelength_m: float = 0.0, box_filter_m: float = 0.0) -> np.ndarray:
    """Fractal sum of value noise, roughly in [-1, 1]; octaves finer than `min_wavelength_m` are cut.

    `box_filter_m` > 0 makes each point value approximate the field's average over a box that wide.
    """
    kept, total = _octave_weights(wavelength_m, octaves, lacunarity, persistence, min_wavelength_m, box_filter_m)
    out = np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape)
    for k, lam, amp in kept:
        out += value_noise_points(x, y, lam, seed * 131 + k, amp)
    out /= total
    return out


def fbm_grid(xs_w, ys_h, *, wavelength_m: float, seed: int, octaves: int = 5, lacunarity: float = 2.0,
             persistence: float = 0.5, min_wavelength_m: float = 0.0, box_filter_m: float = 0.0) -> np.ndarray:
    """`fbm_points` on the grid xs_w x ys_h -> (H, W)."""
    kept, total = _octave_weights(wavelength_m, octaves, lacunarity, persistence, min_wavelength_m, box_filter_m)
    out = np.zeros((len(ys_h), len(xs_w)))
    for k, lam, amp in kept:
        out += value_noise_grid(xs_w, ys_h, lam, seed * 131 + k, amp)
    out /= total
    return out


def smoothstep(edge0, edge1, x) -> np.ndarray:
    t = np.clip((np.asarray(x, dtype=np.float64) - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def box_step(d, filter_width_m: float) -> np.ndarray:
    """Box-filtered indicator of d >= 0 (d a signed distance in metres) for a box of `filter_width_m`."""
    fw = max(float(filter_width_m), 1e-9)
    return np.clip(np.asarray(d, dtype=np.float64) / fw + 0.5, 0.0, 1.0)


def box_band(d, half_width_m, filter_width_m: float) -> np.ndarray:
    """Box-filtered indicator of |d| <= half_width (a road, a line, a wall) for a box of `filter_width_m`.

    Exact area coverage: summing it over samples spaced `filter_width_m` apart integrates the band exactly,
    which is what keeps thin features consistent between a fine tile averaged down and a coarse tile.
    """
    fw = max(float(filter_width_m), 1e-9)
    d = np.asarray(d, dtype=np.float64)
    overlap = np.minimum(d + half_width_m, fw / 2) - np.maximum(d - half_width_m, -fw / 2)
    return np.clip(overlap / fw, 0.0, 1.0)


def box_interval(x, lo, hi, filter_width_m: float) -> np.ndarray:
    """Box-filtered indicator of lo <= x <= hi."""
    return box_band(np.asarray(x) - (np.asarray(lo) + np.asarray(hi)) / 2, (np.asarray(hi) - lo) / 2,
                    filter_width_m)
