"""Street network, city blocks and the land-cover map of the synthetic world, and its ground albedo.

The street network is a jittered grid in a slightly rotated "street frame" (u, v) (cities are rarely aligned
with north); a few road segments are dropped so some blocks are twice as long, giving T-junctions. Each block
gets a use (buildings, park with a pond, plaza, parking, bare soil). The land-cover map and albedo are rasters
on the ground texel grid (rows go south, column 0 at the west edge).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from earthsynth.world.noise import fbm_grid, hash_uniform
from earthsynth.world.primitives import points_in_polygon

LANDCOVER_NAMES = ("road", "sidewalk", "grass", "trees", "water", "soil", "plaza", "parking", "building")
ROAD, SIDEWALK, GRASS, TREES, WATER, SOIL, PLAZA, PARKING, BUILDING = range(len(LANDCOVER_NAMES))

# Base albedo per class (sRGB 0..255) and how much fine / medium noise modulates it.
_CLASS_RGB = np.array([
    [72, 72, 74], [168, 163, 152], [88, 118, 54], [62, 86, 42], [34, 60, 74],
    [152, 124, 94], [182, 176, 164], [84, 84, 86], [120, 120, 120]], dtype=np.float32)
_CLASS_FINE = np.array([0.10, 0.06, 0.12, 0.14, 0.03, 0.10, 0.05, 0.08, 0.0], dtype=np.float32)
_CLASS_MEDIUM = np.array([0.12, 0.06, 0.22, 0.18, 0.06, 0.18, 0.06, 0.10, 0.0], dtype=np.float32)
BLOCK_USES = ("buildings", "park", "plaza", "parking", "soil")
_USE_WEIGHTS = np.array([0.80, 0.05, 0.05, 0.05, 0.05])
MAX_PARKS = 2


@dataclass(frozen=True)
class GroundGrid:
    """The ground texel grid over the world bounds: texel (row i, col j) centred at (x_j, y_i)."""

    bounds_xy: tuple[float, float, float, float]
    texel_m: float

    @property
    def size_px(self) -> tuple[int, int]:
        xmin, ymin, xmax, ymax = self.bounds_xy
        return int(round((ymax - ymin) / self.texel_m)), int(round((xmax - xmin) / self.texel_m))

    @property
    def xs_w(self) -> np.ndarray:
        return self.bounds_xy[0] + (np.arange(self.size_px[1]) + 0.5) * self.texel_m

    @property
    def ys_h(self) -> np.ndarray:
        return self.bounds_xy[3] - (np.arange(self.size_px[0]) + 0.5) * self.texel_m

    def texel_of(self, x, y) -> np.ndarray:
        """ENU (x, y) -> (…, 2) texel coordinates (col, row) measured from the top-left image corner."""
        return np.stack([(np.asarray(x) - self.bounds_xy[0]) / self.texel_m,
                         (self.bounds_xy[3] - np.asarray(y)) / self.texel_m], axis=-1)

    def window(self, xmin, ymin, xmax, ymax) -> tuple[slice, slice]:
        """Row / column slices of the texels whose centres may fall in an ENU box."""
        h, w = self.size_px
        c0 = max(int(np.floor((xmin - self.bounds_xy[0]) / self.texel_m)), 0)
        c1 = min(int(np.ceil((xmax - self.bounds_xy[0]) / self.texel_m)) + 1, w)
        r0 = max(int(np.floor((self.bounds_xy[3] - ymax) / self.texel_m)), 0)
        r1 = min(int(np.ceil((self.bounds_xy[3] - ymin) / self.texel_m)) + 1, h)
        return slice(r0, max(r1, r0)), slice(c0, max(c1, c0))


@dataclass(frozen=True)
class Block:
    """A city block: the area between road edges. `rect_uv` = (u0, v0, u1, v1) in the street frame."""

    rect_uv: tuple[float, float, float, float]
    polygon_n2: np.ndarray     # ENU corners, counter-clockwise, clipped to the world bounds
    use: str                   # one of BLOCK_USES
    inside_world: bool         # the whole block lies inside the world bounds
    variant: int = 0           # layout variant (park footpaths: 0 X, 1 one diagonal, 2 cross, 3 none)


@dataclass(frozen=True)
class StreetLayout:
    """Roads along lines u = u_lines[k] (width u_widths[k]) and v = v_lines[k]; the blocks between them."""

    angle_rad: float
    u_lines: np.ndarray
    u_widths: np.ndarray
    v_lines: np.ndarray
    v_widths: np.ndarray
    sidewalk_m: float
    blocks: tuple[Block, ...]

    def to_street(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.angle_rad), np.sin(self.angle_rad)
        x, y = np.asarray(x), np.asarray(y)
        return x * c + y * s, -x * s + y * c

    def to_enu(self, u, v) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.angle_rad), np.sin(self.angle_rad)
        u, v = np.asarray(u), np.asarray(v)
        return u * c - v * s, u * s + v * c

    def rect_polygon(self, rect_uv) -> np.ndarray:
        """(u0, v0, u1, v1) -> its 4 ENU corners, counter-clockwise."""
        u0, v0, u1, v1 = rect_uv
        x, y = self.to_enu(np.array([u0, u1, u1, u0]), np.array([v0, v0, v1, v1]))
        return np.stack([x, y], axis=1)


def _road_lines(rng: np.random.Generator, extent_m: float, spacing_m: tuple[float, float]):
    """Jittered road centre lines covering [-extent, extent]; one major (wider) road near the middle."""
    lines = [-extent_m - rng.uniform(0, spacing_m[0])]
    while lines[-1] < extent_m:
        lines.append(lines[-1] + rng.uniform(*spacing_m))
    lines = np.asarray(lines)
    widths = rng.uniform(8.0, 11.0, size=len(lines))
    major = int(np.argmin(np.abs(lines - rng.uniform(-0.3, 0.3) * extent_m)))
    widths[major] = rng.uniform(14.0, 18.0)
    return lines, widths, major


def _clip_to_bounds(polygon_n2: np.ndarray, bounds_xy) -> np.ndarray:
    """Sutherland-Hodgman clip of a convex polygon to the axis-aligned world bounds."""
    xmin, ymin, xmax, ymax = bounds_xy
    poly = [tuple(p) for p in polygon_n2]
    for axis, limit, keep_below in ((0, xmin, False), (0, xmax, True), (1, ymin, False), (1, ymax, True)):
        def inside(p):
            return p[axis] <= limit if keep_below else p[axis] >= limit
        out = []
        for k, cur in enumerate(poly):
            prev = poly[k - 1]
            if inside(cur) != inside(prev):
                t = (limit - prev[axis]) / (cur[axis] - prev[axis])
                out.append(tuple(np.asarray(prev) + t * (np.asarray(cur) - np.asarray(prev))))
            if inside(cur):
                out.append(cur)
        poly = out
        if not poly:
            break
    return np.asarray(poly, dtype=np.float64).reshape(-1, 2)


def make_street_layout(rng: np.random.Generator, bounds_xy, *, max_angle_deg: float = 12.0,
                       block_spacing_m: tuple[float, float] = (58.0, 92.0), merge_probability: float = 0.15,
                       sidewalk_m: float = 2.5) -> StreetLayout:
    """Jittered, slightly rotated street grid; blocks with uses; one fully-inside block is a park."""
    angle = np.radians(rng.uniform(-max_angle_deg, max_angle_deg))
    half = max(bounds_xy[2] - bounds_xy[0], bounds_xy[3] - bounds_xy[1]) / 2
    extent = half * (abs(np.cos(angle)) + abs(np.sin(angle))) + 10.0
    u_lines, u_widths, u_major = _road_lines(rng, extent, block_spacing_m)
    v_lines, v_widths, _ = _road_lines(rng, extent, block_spacing_m)
    layout = StreetLayout(float(angle), u_lines, u_widths, v_lines, v_widths, sidewalk_m, ())

    cells, merged = [], set()
    for j in range(len(v_lines) - 1):
        for i in range(len(u_lines) - 1):
            if (i, j) in merged:
                continue
            i_end = i + 1
            # Drop the road between this cell and the next one along u (never a major road): a long block.
            can_merge = i + 2 < len(u_lines) and (i + 1) != u_major and (i + 1, j) not in merged
            if can_merge and rng.uniform() < merge_probability:
                merged.add((i + 1, j))
                i_end = i + 2
            cells.append((u_lines[i] + u_widths[i] / 2, v_lines[j] + v_widths[j] / 2,
                          u_lines[i_end] - u_widths[i_end] / 2, v_lines[j + 1] - v_widths[j + 1] / 2))

    blocks = []
    uses = rng.choice(len(BLOCK_USES), size=len(cells), p=_USE_WEIGHTS)
    for rect, use in zip(cells, uses):
        corners = layout.rect_polygon(rect)
        clipped = _clip_to_bounds(corners, bounds_xy)
        if len(clipped) < 3:
            continue
        inside = bool(np.all((corners >= np.asarray(bounds_xy[:2])) & (corners <= np.asarray(bounds_xy[2:]))))
        blocks.append(Block(rect, clipped, BLOCK_USES[use], inside, int(rng.integers(4))))
    blocks = _balance_parks(blocks, rng)
    return StreetLayout(float(angle), u_lines, u_widths, v_lines, v_widths, sidewalk_m, tuple(blocks))


def _balance_parks(blocks: list[Block], rng: np.random.Generator) -> list[Block]:
    """One to MAX_PARKS parks: the largest fully-inside park holds the pond, extra parks become buildings."""
    def area(b):
        return (b.rect_uv[2] - b.rect_uv[0]) * (b.rect_uv[3] - b.rect_uv[1])
    if not any(b.use == "park" and b.inside_world and area(b) > 1500 for b in blocks):
        candidates = [k for k, b in enumerate(blocks) if b.inside_world and area(b) > 1500] or [
            int(np.argmax([area(b) for b in blocks]))]
        k = candidates[int(rng.integers(len(candidates)))]
        blocks[k] = replace(blocks[k], use="park")
    parks = sorted((k for k, b in enumerate(blocks) if b.use == "park"), key=lambda k: -area(blocks[k]))
    for k in parks[MAX_PARKS:]:
        blocks[k] = replace(blocks[k], use="buildings")
    # A city-sized world shows every kind of open ground at least once (the land-cover map should).
    inside = [k for k, b in enumerate(blocks) if b.inside_world and b.use == "buildings"]
    if len([b for b in blocks if b.inside_world]) >= 8:
        for use in ("parking", "plaza", "soil"):
            if not any(b.use == use for b in blocks) and len(inside) > 4:
                k = inside.pop(int(rng.integers(len(inside))))
                blocks[k] = replace(blocks[k], use=use)
    return blocks


def paint_landcover(layout: StreetLayout, grid: GroundGrid, *, ponds=(), lots=(), footprints=()) -> np.ndarray:
    """Land-cover classes (H, W) uint8: roads everywhere, then blocks, lots, park paths, ponds, buildings.

    `lots` is a sequence of (rect_uv, class_id) painted over their block; `footprints` are ENU polygons.
    """
    classes = np.full(grid.size_px, ROAD, dtype=np.uint8)
    xs, ys = grid.xs_w, grid.ys_h
    sw = layout.sidewalk_m
    interior = {"buildings": GRASS, "park": GRASS, "plaza": PLAZA, "parking": PARKING, "soil": SOIL}
    for block in layout.blocks:
        rows, cols = grid.window(*block.polygon_n2.min(0), *block.polygon_n2.max(0))
        u, v = layout.to_street(*np.meshgrid(xs[cols], ys[rows]))
        u0, v0, u1, v1 = block.rect_uv
        inside = (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)
        edge = np.minimum(np.minimum(u - u0, u1 - u), np.minimum(v - v0, v1 - v))
        window = classes[rows, cols]
        window[inside] = np.where(edge[inside] < sw, SIDEWALK, interior[block.use])
        if block.use == "park":
            window[inside & (_park_path_distance(block, u, v) < 1.2)] = PLAZA
        classes[rows, cols] = window
    for rect_uv, class_id in lots:
        _paint_polygon(classes, grid, layout.rect_polygon(rect_uv), class_id)
    for pond in ponds:
        rows, cols, distance = pond_distance_window(pond, grid)
        window = classes[rows, cols]
        window[distance < 0] = WATER
        classes[rows, cols] = window
    for polygon in footprints:
        _paint_polygon(classes, grid, polygon, BUILDING)
    return classes


def _park_path_distance(block: Block, u, v) -> np.ndarray:
    """Distance to the park's footpaths: both diagonals, one diagonal, a central cross, or none."""
    u0, v0, u1, v1 = block.rect_uv
    du, dv = u1 - u0, v1 - v0
    diagonal_up = np.abs((u - u0) * dv - (v - v0) * du) / np.hypot(du, dv)
    diagonal_down = np.abs((u - u0) * dv + (v - v1) * du) / np.hypot(du, dv)
    cross = np.minimum(np.abs(u - (u0 + u1) / 2), np.abs(v - (v0 + v1) / 2))
    return [np.minimum(diagonal_up, diagonal_down), diagonal_up, cross, np.full_like(u, np.inf)][block.variant]


def _paint_polygon(raster_hw, grid: GroundGrid, polygon_n2, value) -> None:
    rows, cols = grid.window(*polygon_n2.min(0), *polygon_n2.max(0))
    x, y = np.meshgrid(grid.xs_w[cols], grid.ys_h[rows])
    window = raster_hw[rows, cols]
    window[points_in_polygon(x, y, polygon_n2)] = value
    raster_hw[rows, cols] = window


def paint_disc(raster_hw, grid: GroundGrid, center_xy, radius_m: float, value, where=None) -> None:
    """Set texels within `radius_m` of a point (only where `where(window)` is True, if given)."""
    rows, cols = grid.window(center_xy[0] - radius_m, center_xy[1] - radius_m,
                             center_xy[0] + radius_m, center_xy[1] + radius_m)
    x, y = np.meshgrid(grid.xs_w[cols], grid.ys_h[rows])
    window = raster_hw[rows, cols]
    mask = np.hypot(x - center_xy[0], y - center_xy[1]) <= radius_m
    if where is not None:
        mask &= where(window)
    window[mask] = value
    raster_hw[rows, cols] = window


def pond_distance_window(pond, grid: GroundGrid):
    """(rows, cols, signed shore distance) over the texels around a pond (only there: it is costly)."""
    reach = max(pond.radii_m) * 1.5
    rows, cols = grid.window(pond.center_xy[0] - reach, pond.center_xy[1] - reach,
                             pond.center_xy[0] + reach, pond.center_xy[1] + reach)
    gx, gy = np.meshgrid(grid.xs_w[cols], grid.ys_h[rows])
    return rows, cols, pond.signed_distance(gx, gy)


def _nearest_line(coord, lines, widths):
    """Signed distance to the nearest road centre line and that road's width and index."""
    k = np.clip(np.searchsorted(lines, coord), 1, len(lines) - 1)
    pick_lower = np.abs(coord - lines[k - 1]) < np.abs(coord - lines[k])
    k = np.where(pick_lower, k - 1, k)
    return coord - lines[k], widths[k], k


def ground_albedo(classes_hw: np.ndarray, layout: StreetLayout, grid: GroundGrid, *, ponds=(),
                  seed: int) -> np.ndarray:
    """Ground albedo (H, W, 3) uint8: per-class colours, noise, paving patterns, road and parking markings."""
    xs, ys = grid.xs_w, grid.ys_h
    fine = fbm_grid(xs, ys, wavelength_m=3.0, seed=seed, octaves=3).astype(np.float32)
    medium = fbm_grid(xs, ys, wavelength_m=30.0, seed=seed + 1, octaves=4).astype(np.float32)
    c = classes_hw
    shade = 1.0 + _CLASS_FINE[c] * fine * 2.0 + _CLASS_MEDIUM[c] * medium * 2.0
    rgb = _CLASS_RGB[c] * shade[..., None]
    # Grass dries to yellow-brown where the medium noise is high: hue variation, not just brightness.
    dry = np.clip(medium * 3.0, 0.0, 1.0)[..., None] * (c == GRASS)[..., None]
    rgb = rgb * (1 - 0.4 * dry) + np.array([130, 124, 70], np.float32) * 0.4 * dry

    u, v = layout.to_street(*np.meshgrid(xs, ys))
    u, v = u.astype(np.float32), v.astype(np.float32)
    _paving_patterns(rgb, c, u, v, seed)
    road = np.nonzero(c == ROAD)
    rgb[road] = _road_markings(rgb[road], u[road], v[road], layout)
    for pond in ponds:
        rows, cols, distance = pond_distance_window(pond, grid)
        depth = np.clip(-distance / 5.0, 0.0, 1.0)[..., None]
        shallow, deep = np.array([70, 96, 84], np.float32), np.array([22, 46, 62], np.float32)
        water = (shallow + (deep - shallow) * depth) * (1.0 + 0.04 * fine[rows, cols][..., None])
        rgb[rows, cols] = np.where((c[rows, cols] == WATER)[..., None], water, rgb[rows, cols])
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _paving_patterns(rgb, c, u, v, seed) -> None:
    """Slab joints on sidewalks, tiles on plazas, mowing stripes on grass, stalls in parking lots (in place)."""
    def joints(uu, vv, period):
        return (np.mod(uu, period) < 0.2) | (np.mod(vv, period) < 0.2)
    walk = np.nonzero(c == SIDEWALK)
    rgb[walk] *= np.where(joints(u[walk], v[walk], 1.5), np.float32(0.82), np.float32(1.0))[:, None]
    plaza = np.nonzero(c == PLAZA)
    pu, pv = u[plaza], v[plaza]
    tile = hash_uniform(np.floor(pu / 3.0), np.floor(pv / 3.0), seed, channel=5).astype(np.float32)
    rgb[plaza] *= ((0.93 + 0.14 * tile) * np.where(joints(pu, pv, 3.0), 0.8, 1.0).astype(np.float32))[:, None]
    grass = np.nonzero(c == GRASS)
    rgb[grass] *= np.where(np.mod(u[grass], 8.0) < 4.0, np.float32(1.04), np.float32(1.0))[:, None]
    # Parking: 5 m stall rows either side of a 6 m aisle (16 m period across u), stall lines every 2.6 m.
    park = np.nonzero(c == PARKING)
    in_row = np.mod(u[park], 16.0)
    stall_line = ((in_row < 5.0) | (in_row > 11.0)) & (np.mod(v[park], 2.6) < 0.15)
    row_end = (np.abs(in_row - 5.0) < 0.1) | (np.abs(in_row - 11.0) < 0.1)
    lines = stall_line | row_end
    rgb[park[0][lines], park[1][lines]] = (215, 215, 208)


def _road_markings(rgb_n3, u_n, v_n, layout: StreetLayout):
    """Centre lines (dashed; double yellow on the major roads), lane dashes and zebra crossings.

    Works on the road texels only: colours (N, 3) and street-frame coordinates (N,) -> new colours.
    """
    white, yellow = np.array([226, 226, 218], np.float32), np.array([222, 188, 64], np.float32)
    du, wu, _ = _nearest_line(u_n, layout.u_lines, layout.u_widths)
    dv, wv, _ = _nearest_line(v_n, layout.v_lines, layout.v_widths)
    on_u_road, on_v_road = np.abs(du) <= wu / 2, np.abs(dv) <= wv / 2
    for d_across, along, width, on_self, on_cross, d_cross, w_cross in (
            (du, v_n, wu, on_u_road, on_v_road, dv, wv), (dv, u_n, wv, on_v_road, on_u_road, du, wu)):
        link = on_self & ~on_cross
        major = width > 13.0
        dash = np.mod(along, 6.0) < 3.0
        centre = link & ~major & (np.abs(d_across) < 0.12) & dash
        double = link & major & (np.abs(np.abs(d_across) - 0.2) < 0.1)
        lanes = link & major & (np.abs(np.abs(d_across) - width / 4) < 0.1) & dash
        rgb_n3[centre | lanes] = white
        rgb_n3[double] = yellow
        # Zebra crossing: 3 m band just before the crossing road, 0.5 m stripes across the carriageway.
        gap = np.abs(d_cross) - w_cross / 2
        zebra = link & (gap > 1.0) & (gap < 4.0) & (np.mod(d_across, 1.0) < 0.5) & (np.abs(d_across) < width / 2 - 0.6)
        rgb_n3[zebra] = white
    return rgb_n3
