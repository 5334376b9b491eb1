"""Wavefront OBJ (+ MTL + PNG texture) for TexturedMesh, for tools that do not read glTF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.io.atomic import atomic_path
from earthsynth.io.mesh import TexturedMesh, _check_mesh, enu_to_y_up, y_up_to_enu

def _obj_up_axis(lines: list[str]) -> str:
    for line in lines[:20]:
        if line.startswith("# earthsynth up_axis="):
            return line.split("=", 1)[1].strip()
    return "y"                                   # the usual OBJ convention (Blender, three.js)


def write_obj(path, mesh: TexturedMesh, *, up_axis: str = "y") -> Path:
    """Write a Wavefront OBJ; when textured also `<stem>.mtl` and `<stem>.png` beside it (each atomic,
    the OBJ last, so a complete OBJ always has its material and texture).

    up_axis "y" stores ENU as (east, up, -north) like the GLB (Blender's OBJ default), "z" stores ENU as
    it is (GIS tools); a comment line records the choice for `read_obj`. Vertex colours without a texture
    use the common `v x y z r g b` extension. Numbers are written with 17 digits: a round trip is exact."""
    if up_axis not in ("y", "z"):
        raise ConfigError(f"up_axis must be 'y' or 'z', got {up_axis!r}")
    _check_mesh(mesh)
    path = Path(path)
    vertices = enu_to_y_up(mesh.vertices_n3) if up_axis == "y" else mesh.vertices_n3
    header = [f"# earthsynth up_axis={up_axis}", "# ENU metres" + (" as (east, up, -north)" if up_axis == "y" else "")]
    textured = mesh.texture_hw3 is not None
    if textured:
        with atomic_path(path.with_suffix(".png")) as tmp:
            Image.fromarray(np.ascontiguousarray(mesh.texture_hw3), "RGB").save(tmp)
        with atomic_path(path.with_suffix(".mtl")) as tmp:
            tmp.write_text(f"newmtl texture\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\n"
                           f"map_Kd {path.with_suffix('.png').name}\n")
        header += [f"mtllib {path.with_suffix('.mtl').name}", "usemtl texture"]
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("\n".join(header) + "\n")
        if mesh.vertex_colors_n3 is not None and not textured:
            colors = np.asarray(mesh.vertex_colors_n3, np.float64)
            np.savetxt(f, np.hstack([vertices, colors]), fmt="v" + " %.17g" * 6)
        else:
            np.savetxt(f, vertices, fmt="v %.17g %.17g %.17g")
        if textured:                             # OBJ texture coordinates are v-up
            uv = np.asarray(mesh.uvs_n2, np.float32).astype(np.float64)
            np.savetxt(f, np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1), fmt="vt %.17g %.17g")
            one = mesh.faces_f3 + 1
            np.savetxt(f, np.repeat(one, 2, axis=1), fmt="f %d/%d %d/%d %d/%d")
        else:
            np.savetxt(f, mesh.faces_f3 + 1, fmt="f %d %d %d")
    return path


def _parse_obj(lines: list[str], path: Path):
    """-> positions (n, 3|6), uvs (m, 2), corner index pairs (k, 2) with -1 for "no uv", mtllib or None."""
    positions, uvs, corners, mtllib = [], [], [], None
    for number, line in enumerate(lines, start=1):
        token, _, rest = line.strip().partition(" ")
        try:
            if token == "v":
                positions.append([float(x) for x in rest.split()])
            elif token == "vt":
                uvs.append([float(x) for x in rest.split()[:2]])
            elif token == "f":
                refs = [_obj_ref(r, len(positions), len(uvs)) for r in rest.split()]
                for i in range(1, len(refs) - 1):          # fan-triangulate polygons
                    corners += [refs[0], refs[i], refs[i + 1]]
            elif token == "mtllib":
                mtllib = rest.strip()
        except (ValueError, IndexError):
            raise InputFileError(f"line {number} is not valid OBJ: {line.strip()[:80]!r}", path=path,
                                 hint="check that the file is complete; export it again") from None
    if not positions or len({len(p) for p in positions}) != 1 or len(positions[0]) not in (3, 6):
        raise InputFileError("has no vertices, or vertices of mixed length", path=path,
                             hint="write one 'v x y z' (or 'v x y z r g b') line per vertex")
    return np.array(positions), np.array(uvs).reshape(-1, 2), np.array(corners, np.int64).reshape(-1, 2), mtllib


def _obj_ref(ref: str, n_positions: int, n_uvs: int) -> tuple[int, int]:
    """'v', 'v/vt', 'v//vn' or 'v/vt/vn' (1-based, negative = relative) -> 0-based (v, vt or -1)."""
    parts = ref.split("/")
    v = int(parts[0])
    vt = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    v = v - 1 if v > 0 else n_positions + v
    vt = (vt - 1 if vt > 0 else n_uvs + vt) if vt else -1
    if not 0 <= v < n_positions or vt >= n_uvs:
        raise IndexError(ref)
    return v, vt


def _obj_texture(obj_path: Path, mtllib: str | None) -> np.ndarray | None:
    if mtllib is None:
        return None
    mtl_path = obj_path.parent / mtllib
    if not mtl_path.is_file():
        raise InputFileError(f"names the material file {mtllib!r}, which is missing", path=obj_path,
                             hint="keep the .mtl and its texture next to the .obj")
    maps = [line.split()[-1] for line in mtl_path.read_text().splitlines() if line.strip().startswith("map_Kd")]
    if not maps:
        return None
    if len(set(maps)) > 1:
        raise InputFileError(f"uses {len(set(maps))} textures; a TexturedMesh has one texture atlas",
                             path=mtl_path, hint="bake the textures into one atlas first")
    try:
        return np.asarray(Image.open(mtl_path.parent / maps[0]).convert("RGB"), np.uint8)
    except OSError as exc:
        raise InputFileError(f"texture {maps[0]!r} cannot be read ({exc})", path=mtl_path,
                             hint="check that the texture image is next to the .mtl and complete") from None


def read_obj(path, *, up_axis: str | None = None) -> TexturedMesh:
    """Read an OBJ (+ .mtl + texture) into ENU metres. up_axis: as written (see `write_obj`); by default
    the file's `# earthsynth up_axis=` comment, else "y". Corners with distinct (v, vt) pairs become
    distinct vertices, as UVs are per vertex."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError("no such file", path=path, hint="check the path and the file name")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"cannot be read as text ({exc})", path=path,
                             hint="is it really an OBJ file?") from None
    positions, uvs_gl, corners, mtllib = _parse_obj(lines, path)
    up_axis = up_axis or _obj_up_axis(lines)
    texture = _obj_texture(path, mtllib)
    uvs = None
    if texture is not None and len(uvs_gl) and (corners[:, 1] >= 0).all():
        if len(uvs_gl) == len(positions) and (corners[:, 0] == corners[:, 1]).all():
            keep = uv_index = np.arange(len(positions))      # vertex i has uv i (our files): keep the order
            faces = corners[:, 0].reshape(-1, 3)
        else:
            pairs, inverse = np.unique(corners, axis=0, return_inverse=True)
            keep, uv_index, faces = pairs[:, 0], pairs[:, 1], inverse.reshape(-1, 3)
        positions, uv = positions[keep], uvs_gl[uv_index]
        uvs = np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1).astype(np.float32)
    else:
        texture, faces = None, corners[:, 0].reshape(-1, 3)
    xyz = positions[:, :3]
    colors = positions[:, 3:6].astype(np.float32) if positions.shape[1] == 6 else None
    vertices = y_up_to_enu(xyz) if up_axis == "y" else xyz
    return TexturedMesh(vertices, faces, uvs, texture, None if texture is not None else colors)


