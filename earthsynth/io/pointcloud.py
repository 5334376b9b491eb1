"""PLY point clouds (binary little endian, double x y z, uchar colours, float normals) with plyfile.

`write_point_cloud_ply` / `read_point_cloud_ply` are also importable from `earthsynth.io.mesh`;
`read_ply` is the checked PLY opener shared with `earthsynth.io.splats`.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement, PlyParseError

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.io.atomic import atomic_path


def write_point_cloud_ply(path, points_n3, *, colors_n3=None, normals_n3=None, comments=()) -> Path:
    """Binary little-endian PLY: double x y z (UTM coordinates need more than float32), optional uchar
    red green blue and float nx ny nz, like s2p's clouds. `comments` go to the header (e.g. the CRS)."""
    points = np.asarray(points_n3, np.float64).reshape(-1, 3)
    fields = [("x", "<f8"), ("y", "<f8"), ("z", "<f8")]
    columns = [points[:, 0], points[:, 1], points[:, 2]]
    if colors_n3 is not None:
        colors = np.asarray(colors_n3)
        if colors.dtype != np.uint8 or colors.shape != points.shape:
            raise ConfigError(f"colors_n3 must be uint8 {points.shape}, got {colors.dtype} {colors.shape}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        columns += [colors[:, 0], colors[:, 1], colors[:, 2]]
    if normals_n3 is not None:
        normals = np.asarray(normals_n3, np.float32)
        if normals.shape != points.shape:
            raise ConfigError(f"normals_n3 must be {points.shape}, got {normals.shape}")
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
        columns += [normals[:, 0], normals[:, 1], normals[:, 2]]
    vertex = np.empty(len(points), dtype=fields)
    for (name, _), column in zip(fields, columns, strict=True):
        vertex[name] = column
    ply = PlyData([PlyElement.describe(vertex, "vertex")], byte_order="<", comments=list(comments))
    with atomic_path(path) as tmp:
        ply.write(str(tmp))
    return Path(path)


def read_ply(path) -> PlyData:
    """Open a PLY and read all its elements; a missing, corrupt or truncated file is an InputFileError."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError("no such file", path=path, hint="check the path and the file name")
    try:
        ply = PlyData.read(str(path))
        for element in ply.elements:
            element.data  # noqa: B018 (forces plyfile to read every element: a truncated file fails here)
        return ply
    except (PlyParseError, ValueError, EOFError, struct.error, OSError) as exc:
        raise InputFileError(f"cannot be read as PLY ({type(exc).__name__}: {exc})", path=path,
                             hint="check that the file is a complete PLY; copy or export it again") from None


def _columns(vertex, names) -> np.ndarray | None:
    present = vertex.data.dtype.names
    if not all(name in present for name in names):
        return None
    return np.stack([np.asarray(vertex[name]) for name in names], axis=1)


def read_point_cloud_ply(path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """-> (points float64 (n, 3), colors uint8 (n, 3) or None, normals float32 (n, 3) or None)."""
    ply = read_ply(path)
    if "vertex" not in ply or _columns(ply["vertex"], ("x", "y", "z")) is None:
        raise InputFileError("has no vertex element with x, y, z", path=path,
                             hint="a point cloud PLY needs 'element vertex' with properties x, y, z")
    vertex = ply["vertex"]
    points = _columns(vertex, ("x", "y", "z")).astype(np.float64)
    colors = _columns(vertex, ("red", "green", "blue"))
    if colors is not None and colors.dtype != np.uint8:
        raise InputFileError(f"colours are {colors.dtype}, expected uchar", path=path,
                             hint="store red, green, blue as uchar (0..255)")
    normals = _columns(vertex, ("nx", "ny", "nz"))
    return points, colors, None if normals is None else normals.astype(np.float32)
