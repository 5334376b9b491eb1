"""Triangle meshes in memory and on disk (GLB / OBJ) and PLY point clouds.

The point cloud functions live in `earthsynth.io.pointcloud` and are re-exported here.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from earthsynth.errors import ConfigError, InputFileError
from earthsynth.geo.frames import ENUFrame
from earthsynth.io.atomic import atomic_path
from earthsynth.io.pointcloud import read_point_cloud_ply, write_point_cloud_ply  # noqa: F401 (re-exported)


@dataclass
class TexturedMesh:
    """A triangle mesh in world (ENU metre) coordinates with an optional texture atlas.

    UV convention (glTF's): uv (0, 0) is the top-left corner of the texture image, u to the right, v down;
    texel (row i, col j) has its centre at uv ((j + .5) / W, (i + .5) / H). UVs are per vertex, so vertices
    are duplicated along UV seams; `watertight` questions are asked after welding positions.
    """

    vertices_n3: np.ndarray                    # float64, ENU metres
    faces_f3: np.ndarray                       # int64 vertex indices, counter-clockwise seen from outside
    uvs_n2: np.ndarray | None = None           # float32 per-vertex texture coordinates
    texture_hw3: np.ndarray | None = None      # uint8 RGB texture atlas
    vertex_colors_n3: np.ndarray | None = None # float32 in [0, 1], used when there is no texture
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.vertices_n3 = np.asarray(self.vertices_n3, dtype=np.float64).reshape(-1, 3)
        self.faces_f3 = np.asarray(self.faces_f3, dtype=np.int64).reshape(-1, 3)

    @property
    def num_faces(self) -> int:
        return int(self.faces_f3.shape[0])


# ---------------------------------------------------------------------------------------------------- frames
# glTF (and OBJ as Blender reads it) is Y-up: ENU (east, north, up) is stored as (east, up, -north).
# Both maps only permute and negate, so positions survive a round trip bit for bit.

def enu_to_y_up(points_n3) -> np.ndarray:
    p = np.asarray(points_n3, np.float64)
    return np.stack([p[:, 0], p[:, 2], -p[:, 1]], axis=1)


def y_up_to_enu(points_n3) -> np.ndarray:
    p = np.asarray(points_n3, np.float64)
    return np.stack([p[:, 0], -p[:, 2], p[:, 1]], axis=1)


def _origin_dict(origin) -> dict | None:
    if origin is None:
        return None
    values = origin.to_dict() if hasattr(origin, "to_dict") else dict(origin)
    try:
        return {"lon": float(values["lon"]), "lat": float(values["lat"]), "alt": float(values.get("alt", 0.0))}
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"origin must be an ENUFrame or a dict with lon, lat, alt; got {origin!r}") from None


def _check_mesh(mesh: TexturedMesh) -> None:
    n = len(mesh.vertices_n3)
    if mesh.num_faces and (mesh.faces_f3.min() < 0 or mesh.faces_f3.max() >= n):
        raise ConfigError(f"mesh faces index vertices outside 0..{n - 1}")
    if not np.isfinite(mesh.vertices_n3).all():
        raise ConfigError("mesh vertices contain NaN or infinite values")
    if (mesh.uvs_n2 is None) != (mesh.texture_hw3 is None):
        raise ConfigError("a textured mesh needs both uvs_n2 and texture_hw3 (or neither)")
    if mesh.uvs_n2 is not None and np.shape(mesh.uvs_n2) != (n, 2):
        raise ConfigError(f"uvs_n2 must be ({n}, 2), got {np.shape(mesh.uvs_n2)}")
    if mesh.texture_hw3 is not None:
        texture = np.asarray(mesh.texture_hw3)
        if texture.dtype != np.uint8 or texture.ndim != 3 or texture.shape[2] != 3:
            raise ConfigError(f"texture_hw3 must be uint8 (H, W, 3), got {texture.dtype} {texture.shape}")


# ---------------------------------------------------------------------------------------------------- GLB

def _trimesh_of(mesh: TexturedMesh) -> trimesh.Trimesh:
    visual = None
    if mesh.texture_hw3 is not None:
        # trimesh keeps OpenGL's v-up UVs and flips v when it writes glTF; flip here so the file holds ours.
        # Done in float64, 1 - (1 - v) gives back the float32 v exactly.
        uv = np.asarray(mesh.uvs_n2, np.float32).astype(np.float64)
        uv_gl = np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1)
        material = trimesh.visual.material.PBRMaterial(
            baseColorTexture=Image.fromarray(np.ascontiguousarray(mesh.texture_hw3), "RGB"),
            metallicFactor=0.0, roughnessFactor=1.0, doubleSided=True)
        visual = trimesh.visual.TextureVisuals(uv=uv_gl, material=material)
    elif mesh.vertex_colors_n3 is not None:
        colors = np.clip(np.round(np.asarray(mesh.vertex_colors_n3, np.float64) * 255), 0, 255).astype(np.uint8)
        visual = trimesh.visual.ColorVisuals(vertex_colors=colors)
    return trimesh.Trimesh(enu_to_y_up(mesh.vertices_n3), mesh.faces_f3, visual=visual, process=False)


def _set_buffer_view_targets(tree: dict) -> None:
    """Mark vertex and index buffer views as such (trimesh leaves `target` out; glTF validators hint at it)."""
    for gltf_mesh in tree.get("meshes", []):
        for primitive in gltf_mesh.get("primitives", []):
            for accessor in primitive.get("attributes", {}).values():
                tree["bufferViews"][tree["accessors"][accessor]["bufferView"]]["target"] = 34962  # ARRAY_BUFFER
            if "indices" in primitive:
                tree["bufferViews"][tree["accessors"][primitive["indices"]]["bufferView"]]["target"] = 34963


def write_glb(path, mesh: TexturedMesh, *, origin=None, unlit: bool = True) -> Path:
    """Write a (textured) GLB; ENU metres become glTF's Y-up frame, positions are stored as float32.

    origin: the scene origin (ENUFrame or {lon, lat, alt}), kept in the glTF `asset.extras.origin`.
    unlit: textures from satellite photos already hold their lighting, so materials are marked
    KHR_materials_unlit (viewers show the texture as is); the PBR factors remain for viewers without it."""
    _check_mesh(mesh)
    origin_extras = _origin_dict(origin)
    scene = trimesh.Scene()
    scene.add_geometry(_trimesh_of(mesh), geom_name="mesh", node_name="mesh")

    def edit_tree(tree: dict) -> None:
        tree["asset"]["generator"] = "earthsynth"
        tree["asset"]["extras"] = {"frame": "ENU metres stored as glTF Y-up: (east, up, -north)",
                                   **({"origin": origin_extras} if origin_extras else {})}
        _set_buffer_view_targets(tree)
        if not tree.get("materials"):
            # without a material glTF means a rough metal, which viewers light black on faces turned from the
            # light: vertex-coloured meshes get a matte dielectric one (unlit, as textures, when asked)
            tree["materials"] = [{"pbrMetallicRoughness": {"metallicFactor": 0.0, "roughnessFactor": 1.0},
                                  "doubleSided": True}]
            for gltf_mesh in tree.get("meshes", []):
                for primitive in gltf_mesh.get("primitives", []):
                    primitive["material"] = 0
        if unlit and tree.get("materials") and mesh.texture_hw3 is not None:
            for material in tree["materials"]:
                material.setdefault("extensions", {})["KHR_materials_unlit"] = {}
            tree["extensionsUsed"] = sorted(set(tree.get("extensionsUsed", [])) | {"KHR_materials_unlit"})

    blob = trimesh.exchange.gltf.export_glb(scene, include_normals=False, tree_postprocessor=edit_tree)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return Path(path)


def _glb_chunks(path: Path) -> tuple[dict, bytes]:
    """The JSON and BIN chunks of a GLB, checked enough to say clearly when a file is not one."""
    blob = path.read_bytes()
    if len(blob) < 20 or blob[:4] != b"glTF":
        raise InputFileError("not a GLB file (no 'glTF' magic)", path=path,
                             hint="export the mesh as binary glTF (.glb)")
    version, total, json_length, chunk_type = struct.unpack_from("<III4s", blob, 4)
    if version != 2 or chunk_type != b"JSON" or len(blob) < total:
        raise InputFileError(f"incomplete or unsupported GLB (version {version}, {len(blob)} of {total} bytes)",
                             path=path, hint="copy or export the file again")
    try:
        gltf = json.loads(blob[20:20 + json_length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"corrupt GLB JSON chunk ({exc})", path=path, hint="export the file again") from None
    bin_at = 20 + json_length
    bin_chunk = b""
    if bin_at + 8 <= len(blob) and blob[bin_at + 4:bin_at + 8] == b"BIN\0":
        bin_length = struct.unpack_from("<I", blob, bin_at)[0]
        bin_chunk = blob[bin_at + 8:bin_at + 8 + bin_length]
    return gltf, bin_chunk


def _stored_texcoords(gltf: dict, bin_chunk: bytes) -> np.ndarray | None:
    """TEXCOORD_0 of a one-primitive GLB exactly as stored. trimesh flips v in float32 when it loads,
    which rounds; our files have one primitive, so their UVs are taken from the file instead."""
    primitives = [p for mesh in gltf.get("meshes", []) for p in mesh.get("primitives", [])]
    if len(primitives) != 1 or "TEXCOORD_0" not in primitives[0].get("attributes", {}):
        return None
    accessor = gltf["accessors"][primitives[0]["attributes"]["TEXCOORD_0"]]
    if accessor.get("componentType") != 5126 or accessor.get("type") != "VEC2" or "bufferView" not in accessor \
            or "sparse" in accessor:
        return None
    view = gltf["bufferViews"][accessor["bufferView"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    stride, count = view.get("byteStride", 8), accessor["count"]
    if view.get("buffer", 0) != 0 or start + stride * (count - 1) + 8 > len(bin_chunk):
        return None
    return np.ndarray((count, 2), "<f4", buffer=bin_chunk, offset=start, strides=(stride, 4)).astype(np.float32)


def _load_scene(path: Path) -> trimesh.Scene:
    try:
        scene = trimesh.load(path, file_type="glb", force="scene", process=False)
    except Exception as exc:   # trimesh raises many kinds (ValueError, KeyError, struct.error, ...)
        raise InputFileError(f"cannot be read as a mesh ({type(exc).__name__}: {exc})", path=path,
                             hint="check that the file is complete; export it again") from None
    if not scene.geometry:
        raise InputFileError("holds no triangle mesh", path=path, hint="export a file with at least one mesh")
    return scene


def _texture_of(geometry, path: Path):
    visual = geometry.visual
    if not isinstance(visual, trimesh.visual.TextureVisuals) or visual.uv is None:
        return None, None
    material = visual.material
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    if image is None:
        return None, None
    uv_gl = np.asarray(visual.uv, np.float64)
    uvs = np.stack([uv_gl[:, 0], 1.0 - uv_gl[:, 1]], axis=1).astype(np.float32)
    try:
        return uvs, np.asarray(image.convert("RGB"), np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:   # PIL's errors for a truncated / corrupt image
        raise InputFileError(f"its texture image cannot be decoded ({exc})", path=path,
                             hint="the embedded texture is damaged; export the mesh again") from None


def _declares_texture(gltf: dict) -> bool:
    materials = gltf.get("materials", [])
    used = {p["material"] for mesh in gltf.get("meshes", []) for p in mesh.get("primitives", []) if "material" in p}
    return any("baseColorTexture" in materials[i].get("pbrMetallicRoughness", {})
               for i in used if i < len(materials))


def _one_mesh_of(scene: trimesh.Scene, path: Path) -> TexturedMesh:
    parts = []
    for node in scene.graph.nodes_geometry:
        matrix, geometry_name = scene.graph[node]
        geometry = scene.geometry[geometry_name]
        vertices = np.asarray(geometry.vertices, np.float64)
        if not np.array_equal(matrix, np.eye(4)):
            vertices = vertices @ matrix[:3, :3].T + matrix[:3, 3]
        uvs, texture = _texture_of(geometry, path)
        colors = None
        if texture is None and isinstance(geometry.visual, trimesh.visual.ColorVisuals) \
                and geometry.visual.kind == "vertex":
            colors = (np.asarray(geometry.visual.vertex_colors)[:, :3] / 255.0).astype(np.float32)
        elif texture is None and "color" in getattr(geometry.visual, "vertex_attributes", {}):
            # COLOR_0 beside a material without a texture (ours since vertex-coloured meshes got a material)
            colors = (np.asarray(geometry.visual.vertex_attributes["color"])[:, :3] / 255.0).astype(np.float32)
        parts.append(TexturedMesh(vertices, np.asarray(geometry.faces), uvs, texture, colors))
    if len(parts) == 1:
        return parts[0]
    if any(p.texture_hw3 is not None for p in parts):
        raise InputFileError(f"holds {len(parts)} meshes with textures; a TexturedMesh has one texture atlas",
                             path=path, hint="join the meshes and bake their textures into one atlas first")
    offsets = np.cumsum([0] + [len(p.vertices_n3) for p in parts[:-1]])
    return TexturedMesh(np.concatenate([p.vertices_n3 for p in parts]),
                        np.concatenate([p.faces_f3 + o for p, o in zip(parts, offsets, strict=True)]))


def read_glb(path) -> tuple[TexturedMesh, "ENUFrame | None"]:
    """Read a GLB written by `write_glb` (or any glTF binary with one textured mesh) back into ENU metres.

    Returns the mesh and the scene origin from `asset.extras.origin` (None when the file has none)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError("no such file", path=path, hint="check the path and the file name")
    gltf, bin_chunk = _glb_chunks(path)
    extras = gltf.get("asset", {}).get("extras") or {}
    mesh = _one_mesh_of(_load_scene(path), path)
    if mesh.texture_hw3 is None and _declares_texture(gltf):
        # trimesh drops a texture it cannot decode without a word; a silently untextured mesh is worse
        raise InputFileError("declares a texture that cannot be decoded (corrupt or missing image)", path=path,
                             hint="the embedded texture is damaged; export the mesh again")
    mesh.vertices_n3 = y_up_to_enu(mesh.vertices_n3)
    stored_uvs = _stored_texcoords(gltf, bin_chunk) if mesh.uvs_n2 is not None else None
    if stored_uvs is not None and stored_uvs.shape == mesh.uvs_n2.shape:
        mesh.uvs_n2 = stored_uvs
    origin = extras.get("origin")
    return mesh, (ENUFrame.from_dict(origin) if origin else None)


# ---------------------------------------------------------------------------------------------------- topology

def weld(mesh: TexturedMesh) -> TexturedMesh:
    """Merge vertices with identical positions (UV seams duplicate them); UVs and texture are dropped,
    vertex colours keep the first duplicate's value."""
    unique, first, inverse = np.unique(mesh.vertices_n3, axis=0, return_index=True, return_inverse=True)
    colors = None if mesh.vertex_colors_n3 is None else np.asarray(mesh.vertex_colors_n3)[first]
    return TexturedMesh(unique, inverse.reshape(-1)[mesh.faces_f3], vertex_colors_n3=colors,
                        metadata=dict(mesh.metadata))


def is_watertight(mesh: TexturedMesh) -> bool:
    """True when, after welding positions, every edge is shared by exactly two faces."""
    if mesh.num_faces == 0:
        return False
    faces = weld(mesh).faces_f3
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool((counts == 2).all())


from earthsynth.io.obj import read_obj, write_obj  # noqa: E402,F401  (re-exported; obj.py imports TexturedMesh)
