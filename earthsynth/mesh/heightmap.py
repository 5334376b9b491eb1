"""MVS points -> the target height map of the Orbit to Ground geometry stage (paper 003, App. B.2, Eqs. A1-A2),
and the grid <-> ENU <-> normalised-coordinate mapping the Z-monotonic SDF works in.

Frames. `GridBox` is an axis-aligned ENU box (`bounds_xy` = (x_min, y_min, x_max, y_max) metres, `z_range` =
(z_low, z_high) metres) with an (H, W) grid of cells over its footprint. Its normalised cube [-1, 1]^3 maps x and
y over the footprint and z over z_range, each axis on its own (the paper's "normalised MVS point cloud in
[-1, 1]^3"; the axes are scaled independently, so a non-cubic box is stretched):

    x_n = 2 (x - x_min) / (x_max - x_min) - 1,   likewise y over (y_min, y_max) and z over z_range.

Cell (row v, col u) covers x in [x_min + u cx, x_min + (u + 1) cx), y likewise with ROWS FOLLOWING +y (row 0 is
the SOUTH edge), cx = (x_max - x_min) / W, cy = (y_max - y_min) / H: the paper's Eq. A1

    u = floor((x_n + 1) / 2 W),   v = floor((y_n + 1) / 2 H),

and the layout of `ZMonotonicSDF` (node (i, j) at the centre of cell (i, j)). A north-up raster is the same grid
flipped upside down (`north_up`). Points on the max edge go to the last cell; points outside the box are dropped.

Binning (Eq. A2): each cell keeps the MAXIMUM height of the points that fall in it (the visible top surface);
cells with no point are NaN in `heights_hw` and False in `mask_hw`, the set Omega of Eq. A4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from earthsynth.errors import ConfigError


@dataclass(frozen=True)
class GridBox:
    """ENU box `bounds_xy` x `z_range` (metres) with an (H, W) cell grid whose rows follow +y."""

    bounds_xy: tuple[float, float, float, float]
    z_range: tuple[float, float]
    shape_hw: tuple[int, int]

    def __post_init__(self):
        bounds = tuple(float(b) for b in self.bounds_xy)
        z_range = tuple(float(z) for z in self.z_range)
        shape = tuple(int(n) for n in self.shape_hw)
        if len(bounds) != 4 or not (bounds[2] > bounds[0] and bounds[3] > bounds[1]):
            raise ConfigError(f"bounds_xy must be (x_min, y_min, x_max, y_max) with max > min, got {self.bounds_xy}")
        if len(z_range) != 2 or not z_range[1] > z_range[0] or not np.isfinite(bounds + z_range).all():
            raise ConfigError(f"z_range must be finite (low, high) metres with high > low, got {self.z_range}")
        if len(shape) != 2 or min(shape) < 1:
            raise ConfigError(f"shape_hw must be two positive cell counts (H, W), got {self.shape_hw}")
        object.__setattr__(self, "bounds_xy", bounds)
        object.__setattr__(self, "z_range", z_range)
        object.__setattr__(self, "shape_hw", shape)

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def lo_3(self) -> np.ndarray:
        return np.array([self.bounds_xy[0], self.bounds_xy[1], self.z_range[0]])

    @property
    def hi_3(self) -> np.ndarray:
        return np.array([self.bounds_xy[2], self.bounds_xy[3], self.z_range[1]])

    @property
    def cell_size_xy(self) -> tuple[float, float]:
        """(cx, cy) metres: a cell's width along x and height along y."""
        x0, y0, x1, y1 = self.bounds_xy
        return (x1 - x0) / self.shape_hw[1], (y1 - y0) / self.shape_hw[0]

    def with_shape(self, shape_hw) -> "GridBox":
        """The same box with another cell grid."""
        return GridBox(self.bounds_xy, self.z_range, tuple(shape_hw))

    def sub_box(self, rows: slice, cols: slice) -> "GridBox":
        """The box of cells [rows, cols] (slices with explicit start / stop, rows following +y)."""
        cx, cy = self.cell_size_xy
        x0, y0 = self.bounds_xy[:2]
        r0, r1, c0, c1 = rows.start, rows.stop, cols.start, cols.stop
        if not (0 <= r0 < r1 <= self.shape_hw[0] and 0 <= c0 < c1 <= self.shape_hw[1]):
            raise ConfigError(f"cell window rows {r0}:{r1}, cols {c0}:{c1} is not inside the grid {self.shape_hw}")
        bounds = (x0 + c0 * cx, y0 + r0 * cy, x0 + c1 * cx, y0 + r1 * cy)
        if c1 == self.shape_hw[1]:
            bounds = (bounds[0], bounds[1], self.bounds_xy[2], bounds[3])   # no rounding at the outer edges
        if r1 == self.shape_hw[0]:
            bounds = (bounds[0], bounds[1], bounds[2], self.bounds_xy[3])
        return GridBox(bounds, self.z_range, (r1 - r0, c1 - c0))

    # ------------------------------------------------------------------------------------------ mappings
    def to_normalised(self, points_n3) -> np.ndarray:
        """ENU metres (N, 3) -> normalised (N, 3) in [-1, 1]^3 over the box."""
        points = np.asarray(points_n3, np.float64)
        return 2.0 * (points - self.lo_3) / (self.hi_3 - self.lo_3) - 1.0

    def from_normalised(self, points_n3) -> np.ndarray:
        """Normalised (N, 3) -> ENU metres (N, 3); also takes torch tensors (returns a tensor, differentiable)."""
        lo, hi = self.lo_3, self.hi_3
        if hasattr(points_n3, "new_tensor"):
            return points_n3.new_tensor(lo) + (points_n3 + 1.0) * points_n3.new_tensor(0.5 * (hi - lo))
        return lo + (np.asarray(points_n3, np.float64) + 1.0) * 0.5 * (hi - lo)

    def heights_to_normalised(self, z):
        z_lo, z_hi = self.z_range
        return 2.0 * (z - z_lo) / (z_hi - z_lo) - 1.0

    def heights_from_normalised(self, z_n):
        z_lo, z_hi = self.z_range
        return z_lo + (z_n + 1.0) * 0.5 * (z_hi - z_lo)

    def cell_index(self, xy_n2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Eq. A1: (rows v, cols u, inside) of ENU (N, 2+) points; points outside the box get inside = False."""
        xy = np.asarray(xy_n2, np.float64)[:, :2]
        x0, y0, x1, y1 = self.bounds_xy
        height, width = self.shape_hw
        inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
        with np.errstate(invalid="ignore"):
            u = np.floor((xy[:, 0] - x0) / (x1 - x0) * width)
            v = np.floor((xy[:, 1] - y0) / (y1 - y0) * height)
        u = np.clip(np.nan_to_num(u), 0, width - 1).astype(np.int64)
        v = np.clip(np.nan_to_num(v), 0, height - 1).astype(np.int64)
        return v, u, inside

    def cell_centres_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """x (W,) and y (H,) of the cell centres, ENU metres (y increasing with the row)."""
        cx, cy = self.cell_size_xy
        x0, y0 = self.bounds_xy[:2]
        return x0 + (np.arange(self.shape_hw[1]) + 0.5) * cx, y0 + (np.arange(self.shape_hw[0]) + 0.5) * cy

    def to_dict(self) -> dict:
        return {"bounds_xy": list(self.bounds_xy), "z_range": list(self.z_range), "shape_hw": list(self.shape_hw)}


@dataclass(frozen=True, eq=False)
class HeightMap:
    """Binned heights on `box`'s grid (rows follow +y), ENU metres; NaN where no point fell."""

    heights_hw: np.ndarray      # float64 max height per cell (Eq. A2), NaN where empty
    counts_hw: np.ndarray       # int64 number of points per cell
    box: GridBox

    @property
    def mask_hw(self) -> np.ndarray:
        """Omega of Eq. A4: cells that received at least one point."""
        return self.counts_hw > 0

    @property
    def valid_fraction(self) -> float:
        return float(self.mask_hw.mean())

    def normalised(self) -> np.ndarray:
        """Heights in the box's normalised z units (NaN kept)."""
        return self.box.heights_to_normalised(self.heights_hw)

    def crop(self, rows: slice, cols: slice) -> "HeightMap":
        return HeightMap(self.heights_hw[rows, cols], self.counts_hw[rows, cols], self.box.sub_box(rows, cols))

    def north_up(self) -> np.ndarray:
        """The heights as a north-up raster (row 0 = north), e.g. to write with `from_origin(x_min, y_max, ...)`."""
        return self.heights_hw[::-1].copy()


def bin_points(points_n3, box: GridBox) -> HeightMap:
    """Eqs. A1-A2: the maximum height of the ENU points (N, 3) in each cell of `box`; NaN where none fell.

    Points outside the box's footprint, non-finite points and points outside z_range are dropped (the z_range
    check keeps an outlier from poking through the top of the iso-surface grid)."""
    points = np.asarray(points_n3, np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ConfigError(f"points_n3 must have shape (N, 3), got {points.shape}")
    finite = np.isfinite(points).all(axis=1)
    z_lo, z_hi = box.z_range
    rows, cols, inside = box.cell_index(points)
    keep = finite & inside & (points[:, 2] >= z_lo) & (points[:, 2] <= z_hi)
    height, width = box.shape_hw
    flat = rows[keep] * width + cols[keep]
    top = np.full(height * width, -np.inf)
    np.maximum.at(top, flat, points[keep, 2])
    counts = np.bincount(flat, minlength=height * width).astype(np.int64)
    heights = np.where(counts > 0, top, np.nan)
    return HeightMap(heights.reshape(height, width), counts.reshape(height, width), box)


def fill_holes(heights_hw: np.ndarray, *, near_cells: float = 2.0, low_quantile: float = 0.1) -> np.ndarray:
    """An initial surface where the MVS saw nothing (NaN cells), for the SDF to start from.

    Satellite MVS holes are mostly occlusions and shadows beside tall buildings, i.e. low ground hidden by a high
    roof; filling them from the nearest cell would stretch the roofs over them. So a hole cell within `near_cells`
    (Euclidean, in cells) of valid data takes the nearest valid height (narrow gaps split between their two
    sides), and deeper inside a hole it takes the `low_quantile` of the valid heights around that hole (its
    8-connected component's one-cell ring). Raises ConfigError when no cell is valid."""
    heights = np.asarray(heights_hw, np.float64)
    invalid = ~np.isfinite(heights)
    if invalid.all():
        raise ConfigError("the height map has no valid cell: no MVS point fell inside the scene box",
                          hint="check that the points are ENU metres of this scene and that z_range covers them")
    if not invalid.any():
        return heights.copy()
    distance, (rows, cols) = ndimage.distance_transform_edt(invalid, return_indices=True)
    nearest = heights[rows, cols]
    labels, count = ndimage.label(invalid, structure=np.ones((3, 3), bool))
    ring_label = np.where(invalid, 0, ndimage.grey_dilation(labels, size=(3, 3)))
    ring = ring_label > 0
    low = ndimage.labeled_comprehension(heights[ring], ring_label[ring], np.arange(1, count + 1),
                                        lambda v: np.quantile(v, low_quantile), np.float64, np.nan)
    low_hw = np.concatenate([[np.nan], low])[labels]
    deep = invalid & (distance > near_cells) & np.isfinite(low_hw)
    return np.where(deep, low_hw, nearest)


def scene_box(points_n3, bounds_xy, z_range, cells_hw) -> GridBox:
    """A GridBox, checking that some points fall inside (a clear error instead of an empty optimisation)."""
    box = GridBox(bounds_xy, z_range, cells_hw)
    points = np.asarray(points_n3, np.float64).reshape(-1, 3)
    _, _, inside = box.cell_index(points)
    if not inside.any():
        raise ConfigError(f"none of the {len(points)} points lies inside bounds_xy {box.bounds_xy}",
                          hint="pass ENU metres at the scene origin (MVS points.ply is) and the scene's bounds_enu")
    return box
