"""A 2.5D surface (DSM / binned points) as a triangle mesh, so depth can be rendered from it with the mesh
rasteriser: the depth target of Skyfall-GS's pseudo-camera supervision when MoGe is not available."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from earthsynth.errors import ConfigError


def heightfield_from_points(points_n3, bounds_xy, cell_m: float) -> np.ndarray:
    """(H, W) heights on an ENU grid over `bounds_xy` (xmin, ymin, xmax, ymax; row 0 at ymax): the highest point
    in each cell (a DSM keeps the top surface); empty cells take their nearest filled neighbour's height."""
    points = np.asarray(points_n3, np.float64).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1)]
    if not cell_m > 0:
        raise ConfigError(f"cell_m must be positive, got {cell_m}")
    if len(points) == 0:
        raise ConfigError("no finite points to build a height field from")
    x0, y0, x1, y1 = (float(b) for b in bounds_xy)
    width, height = max(1, int(np.ceil((x1 - x0) / cell_m))), max(1, int(np.ceil((y1 - y0) / cell_m)))
    col = np.floor((points[:, 0] - x0) / cell_m).astype(np.int64)
    row = np.floor((y1 - points[:, 1]) / cell_m).astype(np.int64)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    heights = np.full(height * width, -np.inf)
    np.maximum.at(heights, row[inside] * width + col[inside], points[inside, 2])
    heights = heights.reshape(height, width)
    empty = ~np.isfinite(heights)
    if empty.all():
        raise ConfigError("no point falls inside bounds_xy", hint="check that points and bounds are both ENU metres")
    if empty.any():
        _, (rows, cols) = ndimage.distance_transform_edt(empty, return_indices=True)
        heights = heights[rows, cols]
    return heights


def heightfield_mesh(heights_hw, bounds_xy) -> tuple[np.ndarray, np.ndarray]:
    """(vertices_n3, faces_f3) of the surface through the cell centres of `heights_hw` over `bounds_xy`, two
    triangles per quad, counter-clockwise seen from above."""
    heights = np.asarray(heights_hw, np.float64)
    if heights.ndim != 2 or min(heights.shape) < 2 or not np.isfinite(heights).all():
        raise ConfigError(f"heights must be a finite (H, W) grid with H, W >= 2, got shape {heights.shape}")
    h, w = heights.shape
    x0, y0, x1, y1 = (float(b) for b in bounds_xy)
    xs = x0 + (np.arange(w) + 0.5) * (x1 - x0) / w
    ys = y1 - (np.arange(h) + 0.5) * (y1 - y0) / h
    gx, gy = np.meshgrid(xs, ys)
    vertices = np.stack([gx.ravel(), gy.ravel(), heights.ravel()], axis=1)
    idx = np.arange(h * w).reshape(h, w)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    # rows go south: a (north-west), b (north-east), c (south-west), d (south-east)
    faces = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    return vertices, faces.astype(np.int64)
