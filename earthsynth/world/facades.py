"""Building appearance: facade styles, facade texture sheets (windows), and roofs painted top-down.

A facade sheet is one image per building covering its longest wall and its full height; every wall of the
building maps onto the sheet from its left edge, so windows line up floor by floor on all sides. Roofs are
painted into the top-down ground texture (nobody sees the ground under a building), so flat and pitched roofs
share one orthographic texture with the ground, exactly what a nadir satellite sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earthsynth.world.noise import fbm_grid, hash_cells, value_noise_grid
from earthsynth.world.primitives import inset_polygon, points_in_polygon

_LOW_WALLS = [(222, 208, 182), (236, 230, 214), (178, 96, 72), (206, 184, 150), (196, 206, 200), (232, 214, 170)]
_MID_WALLS = [(176, 176, 172), (206, 200, 188), (150, 144, 136), (168, 92, 70), (220, 220, 214), (120, 124, 130)]
_GLASS = [(64, 92, 118), (52, 86, 92), (96, 82, 62), (40, 48, 62), (84, 110, 132)]
_FLAT_ROOFS = [(150, 148, 142), (112, 110, 106), (184, 182, 176), (86, 86, 88), (128, 122, 110)]
_PITCHED_ROOFS = [(160, 78, 54), (122, 64, 48), (84, 86, 92), (112, 96, 80), (176, 104, 70)]


@dataclass(frozen=True)
class FacadeStyle:
    """How one building looks. Lengths in metres, colours sRGB 0..255."""

    kind: str                      # "punched" windows, "ribbon" window bands, or "curtain" glass wall
    wall_rgb: tuple[int, int, int]
    window_rgb: tuple[int, int, int]
    frame_rgb: tuple[int, int, int]
    roof_rgb: tuple[int, int, int]
    floor_height_m: float
    bay_width_m: float             # horizontal period of the window pattern
    window_width_m: float
    window_height_m: float
    shopfront: bool                # ground floor with wide shop windows
    solar_panels: bool             # flat roof carries a panel array (full detail only)


def sample_facade_style(rng: np.random.Generator, category: str, pitched: bool) -> FacadeStyle:
    """A random style for a 'low', 'mid' or 'tower' building."""
    def pick(colours):
        base = np.asarray(colours[int(rng.integers(len(colours)))], dtype=np.float64)
        return tuple(int(c) for c in np.clip(base * rng.uniform(0.9, 1.08), 0, 255))
    if category == "tower":
        kind = "curtain" if rng.uniform() < 0.7 else "ribbon"
        wall = pick(_MID_WALLS)
    else:
        kind = "punched" if category == "low" or rng.uniform() < 0.5 else "ribbon"
        wall = pick(_LOW_WALLS if category == "low" else _MID_WALLS)
    window = pick(_GLASS) if kind != "punched" else pick([(52, 60, 72), (70, 80, 92), (44, 50, 58)])
    return FacadeStyle(
        kind=kind, wall_rgb=wall, window_rgb=window,
        frame_rgb=pick([(60, 62, 66), (200, 200, 196), (120, 122, 126)]),
        roof_rgb=pick(_PITCHED_ROOFS if pitched else _FLAT_ROOFS),
        floor_height_m=float(rng.uniform(2.9, 3.3) if category == "low" else rng.uniform(3.3, 4.0)),
        bay_width_m=float(1.5 if kind == "curtain" else rng.uniform(2.6, 3.8)),
        window_width_m=float(rng.uniform(1.0, 1.6)), window_height_m=float(rng.uniform(1.2, 1.7)),
        shopfront=bool(category == "mid" and rng.uniform() < 0.6),
        solar_panels=bool(not pitched and rng.uniform() < 0.3),
    )


def facade_sheet(style: FacadeStyle, *, width_m: float, top_z: float, base_z: float, ground_z: float,
                 eave_z: float, texel_m: float, seed: int) -> np.ndarray:
    """Facade texture (H, W, 3) uint8: row 0 is at `top_z`, column 0 at the start of a wall."""
    h = max(int(np.ceil((top_z - base_z) / texel_m)), 1)
    w = max(int(np.ceil(width_m / texel_m)), 1)
    s = (np.arange(w) + 0.5) * texel_m                       # along the wall
    z = top_z - (np.arange(h) + 0.5) * texel_m              # height, ENU
    zg = z - ground_z
    floor = np.floor(zg / style.floor_height_m)
    in_floor = zg - floor * style.floor_height_m             # metres above this floor's slab
    bay = np.floor(s / style.bay_width_m)
    in_bay = s - bay * style.bay_width_m
    storeys = (zg > 0.3)[:, None] & (z < eave_z - 0.4)[:, None]

    wall = np.asarray(style.wall_rgb, np.float32)
    stains = value_noise_grid(s, z, 6.0, seed) * 0.05 + fbm_grid(s, z, wavelength_m=1.5, seed=seed + 1,
                                                                   octaves=2) * 0.04
    rgb = wall * (1.0 + stains[..., None]).astype(np.float32)
    rgb[z < ground_z] *= 0.7                                 # footing below grade
    if style.kind == "punched":
        glass = (np.abs(in_bay - style.bay_width_m / 2) < style.window_width_m / 2)[None, :] & \
                ((in_floor > 0.9) & (in_floor < 0.9 + style.window_height_m))[:, None]
        frame = np.zeros_like(glass)
    elif style.kind == "ribbon":
        glass = np.broadcast_to(((in_floor > 0.9) & (in_floor < style.floor_height_m - 0.35))[:, None], (h, w))
        frame = glass & (np.mod(s, 1.5) < 0.14)[None, :]
    else:  # curtain wall: glass everywhere, mullions each bay, a dark spandrel at each slab
        glass = np.ones((h, w), dtype=bool)
        frame = (in_bay < 0.14)[None, :] | (in_floor < 0.3)[:, None]
    if style.shopfront:
        shop = (floor == 0) & (in_floor > 0.3) & (in_floor < 2.8)
        wide = np.abs(in_bay - style.bay_width_m / 2) < style.bay_width_m / 2 - 0.3
        glass = glass | (shop[:, None] & wide[None, :])
    glass = glass & storeys
    frame = frame & storeys
    # Per-pane brightness: some panes reflect the sky, some are dark; constant within a pane.
    pane = hash_cells(bay[None, :], floor[:, None], seed, channel=3).astype(np.float32)
    tint = 0.7 + 0.6 * pane[..., None] + 0.25 * (pane[..., None] > 0.85) * np.float32([0.3, 0.5, 0.8])
    window_rgb = np.asarray(style.window_rgb, np.float32) * tint
    rgb = np.where(glass[..., None], window_rgb, rgb)
    rgb = np.where(frame[..., None], np.asarray(style.frame_rgb, np.float32), rgb)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def paint_roofs(targets, grid, buildings, *, seed: int) -> None:
    """Paint every building's roof into top-down textures, in place.

    `targets` is a list of (image (H, W, 3) uint8, details: bool); `details=True` adds what the reduced level
    of detail drops: parapet rims, solar panels, tile rows.
    """
    for b in buildings:
        rows, cols = grid.window(*b.footprint_n2.min(0), *b.footprint_n2.max(0))
        x, y = np.meshgrid(grid.xs_w[cols], grid.ys_h[rows])
        mask = points_in_polygon(x, y, b.footprint_n2)
        if not mask.any():
            continue
        roof = np.asarray(b.style.roof_rgb, np.float32)
        noise = fbm_grid(grid.xs_w[cols], grid.ys_h[rows], wavelength_m=4.0, seed=seed + b.index, octaves=3)
        base = roof * (1.0 + 0.12 * noise[..., None]).astype(np.float32)
        for image, details in targets:
            if b.roof_kind == "flat":
                colour = _flat_roof_details(base.copy(), b, x, y, details)
            else:
                colour = _pitched_roof_rows(base, b, x, y, details)
            window = image[rows, cols]
            window[mask] = np.clip(colour[mask], 0, 255).astype(np.uint8)
            image[rows, cols] = window


def _local(b, x, y):
    """Coordinates along (a) and across (c) the building's main axis, from its frame centre."""
    ca, sa = np.cos(b.axis_rad), np.sin(b.axis_rad)
    dx, dy = x - b.center_xy[0], y - b.center_xy[1]
    return dx * ca + dy * sa, -dx * sa + dy * ca


def _flat_roof_details(colour, b, x, y, details: bool):
    if not details:
        return colour
    inner = inset_polygon(b.footprint_n2, b.parapet_thickness_m)
    rim = ~points_in_polygon(x, y, inner)
    colour[rim] = np.asarray(b.style.wall_rgb, np.float32) * 0.95
    if b.style.solar_panels:
        a, c = _local(b, x, y)
        half_a, half_c = b.size_m[0] / 2 - 2.5, b.size_m[1] / 2 - 2.5
        # Panel rows 1.0 m deep with 0.6 m service gaps, cells every 1.7 m: dark blue with bright seams.
        panel = (np.abs(a) < half_a * 0.7) & (np.abs(c) < half_c * 0.6) & (np.mod(c, 1.6) < 1.0)
        seam = panel & (np.mod(a, 1.7) < 0.15)
        colour[panel] = (38, 52, 84)
        colour[seam] = (150, 156, 170)
    return colour


def _pitched_roof_rows(colour, b, x, y, details: bool):
    """Tile rows parallel to each eave; a darker ridge (and hip) line."""
    a, c = _local(b, x, y)
    half_long, half_short = b.size_m[0] / 2, b.size_m[1] / 2
    to_long_eave = half_short - np.abs(c)
    to_end = half_long - np.abs(a) if b.roof_kind == "hip" else np.full_like(a, np.inf)
    dist = np.minimum(to_long_eave, to_end)
    ridge = np.abs(to_long_eave - to_end) < 0.25 if b.roof_kind == "hip" else np.abs(c) < 0.25
    shade = np.where(to_long_eave <= to_end, 1.0, 0.92)      # hip ends a touch darker: a different pitch
    colour = colour * shade[..., None].astype(np.float32)
    if details:
        colour[np.mod(dist, 0.5) < 0.14] *= 0.82
    colour[ridge] *= 0.75
    return colour


def foliage_patch(rgb, size_px: int, seed: int) -> np.ndarray:
    """A leafy canopy texture (size, size, 3): clumps of light and shade around a base green."""
    t = np.arange(size_px) + 0.5
    clumps = value_noise_grid(t, t, size_px / 5.0, seed) * 0.28
    leaves = value_noise_grid(t, t, size_px / 14.0, seed + 1) * 0.16
    return np.clip(np.asarray(rgb, np.float32) * (1.0 + clumps + leaves)[..., None], 0, 255).astype(np.uint8)
