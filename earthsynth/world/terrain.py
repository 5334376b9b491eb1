"""Gentle terrain relief h(x, y) with an optional flat pond, as a function and as a closed grid mesh.

The relief is a few metres over a few hundred metres (a city on a mild slope, as in MatrixCity); the pond is a
noise-edged ellipse whose water surface is exactly flat and slightly below its banks, so "water" in the
land-cover map is also a flat patch of the height field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earthsynth.world.noise import fbm_grid, fbm_points, smoothstep, value_noise_points

RELIEF_WAVELENGTH_M = 260.0   # longest relief wavelength: one or two gentle hills over a 300 m scene
POND_BANK_M = 6.0             # width over which the ground rises from the water level back to the relief


@dataclass(frozen=True)
class Pond:
    """A noise-edged elliptical pond with a flat water surface at `water_z` (ENU metres)."""

    center_xy: tuple[float, float]
    radii_m: tuple[float, float]
    angle_rad: float
    water_z: float
    seed: int

    def signed_distance(self, x, y) -> np.ndarray:
        """Approximate signed distance (metres) to the shore: negative on water."""
        dx, dy = np.asarray(x) - self.center_xy[0], np.asarray(y) - self.center_xy[1]
        c, s = np.cos(self.angle_rad), np.sin(self.angle_rad)
        a, b = (dx * c + dy * s) / self.radii_m[0], (-dx * s + dy * c) / self.radii_m[1]
        rho = np.hypot(a, b)
        theta = np.arctan2(b, a)
        # Noise on a circle of radius 2 (periodic in theta by construction): a wobbly, natural shore.
        wobble = 1.0 + 0.22 * value_noise_points(2 * np.cos(theta), 2 * np.sin(theta), 1.0, self.seed)
        return (rho - wobble) * min(self.radii_m)


@dataclass(frozen=True)
class Terrain:
    """The ground height field of the world: relief + flat ponds."""

    seed: int
    relief_m: float
    ponds: tuple[Pond, ...] = ()

    def relief(self, x, y) -> np.ndarray:
        return self.relief_m * fbm_points(x, y, wavelength_m=RELIEF_WAVELENGTH_M, seed=self.seed, octaves=4)

    def height(self, x, y) -> np.ndarray:
        """Ground height (ENU z, metres) at points (x, y)."""
        return self._with_ponds(x, y, self.relief(x, y))

    def height_grid(self, xs_w, ys_h) -> np.ndarray:
        """Ground height on the grid xs_w x ys_h -> (H, W) (same numbers as `height`)."""
        relief = self.relief_m * fbm_grid(xs_w, ys_h, wavelength_m=RELIEF_WAVELENGTH_M, seed=self.seed,
                                          octaves=4)
        x, y = np.meshgrid(xs_w, ys_h)
        return self._with_ponds(x, y, relief)

    def _with_ponds(self, x, y, relief) -> np.ndarray:
        h = np.asarray(relief, dtype=np.float64)
        for pond in self.ponds:
            d = pond.signed_distance(x, y)
            bank = smoothstep(0.0, POND_BANK_M, d)
            h = np.where(d <= 0, pond.water_z, pond.water_z + (h - pond.water_z) * bank)
        return h


def make_pond(terrain: Terrain, center_xy, radii_m, angle_rad: float, seed: int) -> Pond:
    """A pond whose water level sits 0.4 m below the lowest relief over its area (so it is a depression)."""
    r = max(radii_m) * 1.3
    xs = np.linspace(center_xy[0] - r, center_xy[0] + r, 41)
    ys = np.linspace(center_xy[1] - r, center_xy[1] + r, 41)
    x, y = np.meshgrid(xs, ys)
    water_z = float(terrain.relief(x, y).min()) - 0.4
    return Pond(tuple(map(float, center_xy)), tuple(map(float, radii_m)), float(angle_rad), water_z, seed)


def terrain_solid(terrain: Terrain, bounds_xy, spacing_m: float, skirt_depth_m: float = 2.0):
    """Closed terrain slab: top grid + vertical skirts + a bottom fan.

    -> (vertices_n3, faces_f3, top_vertex_count, boundary_loop): top vertices come first, row-major from the
    north-west corner (rows go south); then one bottom vertex under each boundary-loop vertex; then the bottom
    centre. Skirt and bottom vertices can take the texture coordinates of the loop vertex above them.
    """
    xmin, ymin, xmax, ymax = bounds_xy
    nx = int(round((xmax - xmin) / spacing_m))
    ny = int(round((ymax - ymin) / spacing_m))
    xs, ys = np.linspace(xmin, xmax, nx + 1), np.linspace(ymax, ymin, ny + 1)
    z = terrain.height_grid(xs, ys)
    gx, gy = np.meshgrid(xs, ys)
    top = np.stack([gx.ravel(), gy.ravel(), z.ravel()], axis=1)
    idx = np.arange((ny + 1) * (nx + 1)).reshape(ny + 1, nx + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]   # NW, NE, SW, SE of each cell
    top_faces = np.concatenate([np.stack([a, c, d], -1).reshape(-1, 3), np.stack([a, d, b], -1).reshape(-1, 3)])

    # Boundary loop, counter-clockwise seen from above: south edge W->E, east S->N, north E->W, west N->S.
    loop = np.concatenate([idx[-1, :-1], idx[::-1, -1][:-1], idx[0, ::-1][:-1], idx[:, 0][:-1]])
    bottom_z = float(z.min()) - skirt_depth_m
    n_top, n_loop = len(top), len(loop)
    bottom = np.column_stack([top[loop, :2], np.full(n_loop, bottom_z)])
    centre = np.array([[(xmin + xmax) / 2, (ymin + ymax) / 2, bottom_z]])
    p, q = loop, np.roll(loop, -1)
    pb = n_top + np.arange(n_loop)
    qb = np.roll(pb, -1)
    skirt_faces = np.concatenate([np.stack([p, pb, qb], 1), np.stack([p, qb, q], 1)])
    centre_index = n_top + n_loop
    bottom_faces = np.stack([np.full(n_loop, centre_index), qb, pb], 1)
    vertices = np.concatenate([top, bottom, centre])
    faces = np.concatenate([top_faces, skirt_faces, bottom_faces])
    return vertices, faces, n_top, loop
