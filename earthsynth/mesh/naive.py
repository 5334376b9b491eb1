"""The naive 2.5D baseline of Orbit to Ground's ablation (paper 003, Fig. 4 and Table 2, "Naive Marching Cubes
128 / 256"): DSM -> voxel occupancy grid -> iso-surface, with no optimisation. Its stair steps and holes are the
point of comparison with the Z-monotonic SDF.

Voxelisation. The DSM's footprint (its pixel edges, not its pixel centres) is cut into R x R voxel columns
(R along columns and R along rows, whatever the raster's aspect: the paper's normalised cube) and z_range into
R layers. A column takes the height of the DSM pixel under its centre (nearest pixel; no smoothing, no
hole filling) and a voxel is occupied when its centre is at or below that height. A NaN pixel (no data, e.g.
no MVS point there) leaves its columns empty: a hole, as in the paper's figure. The occupancy becomes an SDF of
-1 (occupied) and +1 (empty) on the voxel centres and goes through `extract_isosurface` (marching tetrahedra,
closed): surface vertices sit at edge midpoints, so the caps (floor and sides) lie exactly on the footprint's
edges and on z_range[0], and the mesh is a closed solid.
"""

from __future__ import annotations

import numpy as np
import torch

from earthsynth.errors import ConfigError
from earthsynth.mesh.isosurface import extract_isosurface


def _pixel_to_map(transform_or_gsd) -> np.ndarray:
    """2 x 3 matrix taking pixel-corner coordinates (col, row, 1) to map (x, y)."""
    if isinstance(transform_or_gsd, (int, float, np.floating, np.integer)):
        gsd = float(transform_or_gsd)
        if not gsd > 0:
            raise ConfigError(f"the GSD must be positive metres per pixel, got {transform_or_gsd!r}")
        # north-up raster whose top-left pixel CENTRE is the origin (the project's pixel convention)
        return np.array([[gsd, 0.0, -0.5 * gsd], [0.0, -gsd, 0.5 * gsd]])
    values = transform_or_gsd
    if all(hasattr(values, name) for name in "abcdef"):           # rasterio / affine.Affine
        values = [values.a, values.b, values.c, values.d, values.e, values.f]
    try:
        matrix = np.asarray(values, dtype=np.float64).reshape(-1)[:6].reshape(2, 3)
    except (TypeError, ValueError):
        raise ConfigError(f"transform_or_gsd must be a GSD in metres or an affine transform (a, b, c, d, e, f) "
                          f"in rasterio's top-left-corner convention, got {transform_or_gsd!r}") from None
    if abs(np.linalg.det(matrix[:, :2])) == 0 or not np.isfinite(matrix).all():
        raise ConfigError(f"the affine transform is singular or not finite: {matrix.tolist()}")
    return matrix


def _check_dsm(dsm_hw, z_range, resolution) -> tuple[np.ndarray, float, float]:
    dsm = np.asarray(dsm_hw.detach().cpu() if isinstance(dsm_hw, torch.Tensor) else dsm_hw, dtype=np.float64)
    if dsm.ndim != 2 or min(dsm.shape) < 1:
        raise ConfigError(f"dsm_hw must be a 2D (H, W) height grid, got shape {dsm.shape}")
    if not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ConfigError(f"resolution must be an integer >= 2 (the paper uses 128 and 256), got {resolution!r}")
    finite = dsm[np.isfinite(dsm)]
    if finite.size == 0:
        raise ConfigError("dsm_hw has no finite height", hint="check the DSM's no-data value")
    z_lo, z_hi = (float(z) for z in z_range)
    if not z_hi > z_lo:
        raise ConfigError(f"z_range must be (low, high) with high > low, got {z_range!r}")
    if finite.min() < z_lo or finite.max() > z_hi:
        raise ConfigError(f"DSM heights span [{finite.min():.3f}, {finite.max():.3f}] m, outside z_range "
                          f"({z_lo}, {z_hi})", hint="widen z_range; put its low end below the lowest ground")
    return dsm, z_lo, z_hi


def naive_mesh_from_dsm(dsm_hw, transform_or_gsd, z_range, resolution: int = 128, *,
                        device=None) -> tuple[np.ndarray, np.ndarray]:
    """The naive baseline mesh of a DSM, in metres: (vertices_v3 float64, faces_f3 int64), counter-clockwise
    seen from outside, ready for `earthsynth.io.mesh.TexturedMesh`.

    dsm_hw: (H, W) heights in metres, NaN for no data. transform_or_gsd: the raster's affine (rasterio's
    top-left-corner convention; x, y come out in its CRS units) or a GSD in metres per pixel (north-up, the
    top-left pixel centre at x = y = 0). z_range: (low, high) metres covered by the R voxel layers; heights
    must lie inside it, and the low end should sit at least one voxel below the ground (a column lower than
    the first voxel centre stays empty). resolution: R voxels across each xy axis and along z."""
    dsm, z_lo, z_hi = _check_dsm(dsm_hw, z_range, resolution)
    to_map = _pixel_to_map(transform_or_gsd)
    height, width = dsm.shape
    r = int(resolution)
    centres = (np.arange(r) + 0.5) / r                              # voxel centres in [0, 1]
    rows = np.minimum((centres * height).astype(np.int64), height - 1)
    cols = np.minimum((centres * width).astype(np.int64), width - 1)
    column_height = dsm[np.ix_(rows, cols)]                        # (R rows, R cols)
    z_centres = z_lo + centres * (z_hi - z_lo)
    with np.errstate(invalid="ignore"):                           # NaN columns compare False: empty
        occupied = z_centres[None, None, :] <= column_height[:, :, None]
    # grid axes [ix, iy, iz] = (col, row, layer), in (col, row) pixel-corner units and metres for z
    sdf = torch.from_numpy(np.where(occupied.transpose(1, 0, 2), -1.0, 1.0)).to(device)
    bounds_min = (0.5 * width / r, 0.5 * height / r, z_lo + 0.5 * (z_hi - z_lo) / r)
    bounds_max = (width - 0.5 * width / r, height - 0.5 * height / r, z_hi - 0.5 * (z_hi - z_lo) / r)
    with torch.no_grad():
        vertices, faces = extract_isosurface(sdf, bounds_min, bounds_max, closed=True)
    pixel = vertices.cpu().numpy()
    xy = pixel[:, :2] @ to_map[:, :2].T + to_map[:, 2]
    vertices_v3 = np.concatenate([xy, pixel[:, 2:3]], axis=1)
    faces_f3 = faces.cpu().numpy().astype(np.int64)
    if np.linalg.det(to_map[:, :2]) < 0:                           # the map mirrors (north-up: rows go south)
        faces_f3 = faces_f3[:, [0, 2, 1]]
    return vertices_v3, faces_f3
