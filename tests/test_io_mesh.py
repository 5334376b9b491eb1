"""GLB / OBJ meshes, PLY point clouds, welding and watertightness."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh

from earthsynth.errors import InputFileError
from earthsynth.geo.frames import ENUFrame
from earthsynth.io.mesh import (TexturedMesh, is_watertight, read_glb, read_obj, read_point_cloud_ply, weld,
                                write_glb, write_obj, write_point_cloud_ply)

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
S2P_CLOUD = REAL / "s2p_pair_reunion" / "s2p_cloud_utm40s.ply"

# the six faces of a unit cube: outward normal axis/sign and four corners counter-clockwise seen from outside
_CUBE_QUADS = [
    [(0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)],   # top (+z)
    [(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)],   # bottom (-z)
    [(0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)],   # south (-y)
    [(1, 1, 0), (0, 1, 0), (0, 1, 1), (1, 1, 1)],   # north (+y)
    [(1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1)],   # east (+x)
    [(0, 1, 0), (0, 0, 0), (0, 0, 1), (0, 1, 1)],   # west (-x)
]


def textured_box(size=(16.0, 12.0, 20.0), centre=(3.5, -2.25, 10.0), seed=0) -> TexturedMesh:
    """A box with one atlas cell per side (24 vertices: positions repeat along the UV seams)."""
    rng = np.random.default_rng(seed)
    corners = np.array(_CUBE_QUADS, np.float64).reshape(-1, 3)
    vertices = (corners - 0.5) * np.array(size) + np.array(centre)
    faces = np.array([[4 * q, 4 * q + 1, 4 * q + 2] for q in range(6)]
                     + [[4 * q, 4 * q + 2, 4 * q + 3] for q in range(6)])
    cell = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float64)          # v down: rows grow downwards
    uvs = np.concatenate([(cell * 0.9 + 0.05 + [q % 3, q // 3]) / [3, 2] for q in range(6)]).astype(np.float32)
    uvs += rng.uniform(-0.01, 0.01, uvs.shape).astype(np.float32)           # arbitrary float32 values
    texture = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    return TexturedMesh(vertices, faces, uvs, texture)


def _glb_json(path: Path) -> dict:
    blob = path.read_bytes()
    length = struct.unpack("<I", blob[12:16])[0]
    return json.loads(blob[20:20 + length])


def test_glb_round_trip_is_exact_and_keeps_the_origin(tmp_path):
    box = textured_box()
    origin = ENUFrame(55.712, -21.232, 2300.0)
    path = write_glb(tmp_path / "box.glb", box, origin=origin)
    mesh, origin_back = read_glb(path)
    np.testing.assert_array_equal(mesh.vertices_n3, box.vertices_n3)
    np.testing.assert_array_equal(mesh.faces_f3, box.faces_f3)
    np.testing.assert_array_equal(mesh.uvs_n2, box.uvs_n2)
    assert mesh.uvs_n2.dtype == np.float32
    np.testing.assert_array_equal(mesh.texture_hw3, box.texture_hw3)
    assert origin_back == origin
    assert [p.name for p in tmp_path.iterdir()] == ["box.glb"]


def test_glb_file_is_y_up_with_gltf_uvs_and_origin_extras(tmp_path):
    box = textured_box()
    gltf = _glb_json(write_glb(tmp_path / "box.glb", box, origin={"lon": 1.0, "lat": 2.0, "alt": 3.0}))
    assert gltf["asset"]["extras"]["origin"] == {"lon": 1.0, "lat": 2.0, "alt": 3.0}
    primitive = gltf["meshes"][0]["primitives"][0]
    position = gltf["accessors"][primitive["attributes"]["POSITION"]]
    # ENU z (up, 0..20 m) is glTF +Y; ENU y (north, -8.25..3.75) is glTF -Z
    assert position["min"][1] == pytest.approx(0.0) and position["max"][1] == pytest.approx(20.0)
    assert position["min"][2] == pytest.approx(-3.75) and position["max"][2] == pytest.approx(8.25)
    texcoord = gltf["accessors"][primitive["attributes"]["TEXCOORD_0"]]
    assert texcoord["min"][1] == pytest.approx(float(box.uvs_n2[:, 1].min()))   # stored v-down, as given
    assert "KHR_materials_unlit" in gltf["extensionsUsed"]
    assert gltf["bufferViews"][position["bufferView"]]["target"] == 34962         # ARRAY_BUFFER


def test_glb_texture_lookup_matches_the_pixel(tmp_path):
    """A uv at a texel centre still finds that texel after the round trip (glTF v-down convention)."""
    box = textured_box()
    h, w = box.texture_hw3.shape[:2]
    box.uvs_n2[0] = [(7 + 0.5) / w, (3 + 0.5) / h]
    mesh, _ = read_glb(write_glb(tmp_path / "b.glb", box))
    u, v = mesh.uvs_n2[0]
    np.testing.assert_array_equal(mesh.texture_hw3[int(v * h), int(u * w)], box.texture_hw3[3, 7])


def test_glb_vertex_colours_and_no_origin(tmp_path):
    box = textured_box()
    colours = np.linspace(0, 1, 24 * 3).reshape(24, 3).astype(np.float32)
    plain = TexturedMesh(box.vertices_n3, box.faces_f3, vertex_colors_n3=colours)
    mesh, origin = read_glb(write_glb(tmp_path / "c.glb", plain))
    assert origin is None and mesh.texture_hw3 is None
    np.testing.assert_allclose(mesh.vertex_colors_n3, colours, atol=0.5 / 255 + 1e-7)
    # a matte material: with none, glTF means a rough metal that viewers light black away from the sun
    from earthsynth.io.mesh import _glb_chunks
    gltf, _ = _glb_chunks(tmp_path / "c.glb")
    assert gltf["materials"][0]["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    assert all(p["material"] == 0 for m in gltf["meshes"] for p in m["primitives"])


def test_bad_glb_files_are_input_file_errors(tmp_path):
    good = write_glb(tmp_path / "good.glb", textured_box()).read_bytes()
    (tmp_path / "truncated.glb").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.glb").write_text("not a glb at all")
    for name in ("truncated.glb", "text.glb", "missing.glb"):
        with pytest.raises(InputFileError, match=name):
            read_glb(tmp_path / name)


@pytest.mark.parametrize("damage", ["zeroed_pixels", "cut_image"])
def test_glb_with_a_corrupt_texture_is_an_input_file_error(tmp_path, damage):
    """trimesh drops (zeroed data) or defers (cut image) a texture it cannot decode; both must be errors."""
    blob = bytearray(write_glb(tmp_path / "ok.glb", textured_box()).read_bytes())
    png_at = bytes(blob).index(b"\x89PNG")
    if damage == "zeroed_pixels":
        blob[png_at + 40:png_at + 400] = bytes(360)      # inside the image data; the GLB structure stays valid
    else:
        blob[png_at + 100:png_at + 4000] = bytes(3900)   # past the header: PIL opens it, then finds it truncated
    (tmp_path / "bad_texture.glb").write_bytes(bytes(blob))
    with pytest.raises(InputFileError, match="bad_texture.glb.*texture"):
        read_glb(tmp_path / "bad_texture.glb")


def test_obj_round_trip_textured_and_exact(tmp_path):
    box = textured_box()
    write_obj(tmp_path / "box.obj", box)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box.mtl", "box.obj", "box.png"]
    mesh = read_obj(tmp_path / "box.obj")
    np.testing.assert_array_equal(mesh.vertices_n3, box.vertices_n3)
    np.testing.assert_array_equal(mesh.faces_f3, box.faces_f3)
    np.testing.assert_array_equal(mesh.uvs_n2, box.uvs_n2)
    np.testing.assert_array_equal(mesh.texture_hw3, box.texture_hw3)
    # an independent reader agrees on the geometry (trimesh keeps the OBJ's own Y-up axes)
    loaded = trimesh.load(tmp_path / "box.obj", process=False, force="mesh")
    assert loaded.bounds[1, 1] == pytest.approx(20.0)


def test_obj_z_up_and_vertex_colours(tmp_path):
    box = textured_box()
    colours = np.random.default_rng(3).random((24, 3)).astype(np.float32)
    plain = TexturedMesh(box.vertices_n3 + 1e-9, box.faces_f3, vertex_colors_n3=colours)
    mesh = read_obj(write_obj(tmp_path / "plain.obj", plain, up_axis="z"))
    np.testing.assert_array_equal(mesh.vertices_n3, plain.vertices_n3)
    np.testing.assert_array_equal(mesh.vertex_colors_n3, colours)
    lines = (tmp_path / "plain.obj").read_text().splitlines()
    assert lines[0] == "# earthsynth up_axis=z"
    assert len(next(line for line in lines if line.startswith("v ")).split()) == 7   # v x y z r g b


def test_obj_from_another_tool_with_shared_uv_indices_and_quads(tmp_path):
    (tmp_path / "quad.mtl").write_text("newmtl m\nmap_Kd -s 1 1 1 tex.png\n")
    from PIL import Image
    Image.fromarray(np.full((2, 2, 3), 9, np.uint8)).save(tmp_path / "tex.png")
    (tmp_path / "quad.obj").write_text(
        "mtllib quad.mtl\nv 0 0 0\nv 1 0 0\nv 1 0 -1\nv 0 0 -1\nvt 0 0\nvt 1 1\nusemtl m\nf 1/1 2/1 3/2 4/2\n")
    mesh = read_obj(tmp_path / "quad.obj")
    assert mesh.num_faces == 2 and len(mesh.vertices_n3) == 4
    np.testing.assert_array_equal(np.sort(mesh.vertices_n3[:, 1]), [0, 0, 1, 1])   # -Z in the file = north
    assert set(map(tuple, mesh.uvs_n2.tolist())) == {(0.0, 1.0), (1.0, 0.0)}
    (tmp_path / "quad.mtl").unlink()
    with pytest.raises(InputFileError, match="quad.mtl"):
        read_obj(tmp_path / "quad.obj")


def test_point_cloud_ply_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    points = rng.normal(0, 1, (500, 3)) + [359922.46228348, 7651921.62613828, 2371.1]
    colours = rng.integers(0, 256, (500, 3), dtype=np.uint8)
    normals = rng.normal(0, 1, (500, 3)).astype(np.float32)
    path = write_point_cloud_ply(tmp_path / "cloud.ply", points, colors_n3=colours, normals_n3=normals,
                                 comments=["projection: CRS epsg:32740"])
    back, colours_back, normals_back = read_point_cloud_ply(path)
    np.testing.assert_array_equal(back, points)
    np.testing.assert_array_equal(colours_back, colours)
    np.testing.assert_array_equal(normals_back, normals)
    assert b"binary_little_endian" in path.read_bytes()[:200]
    only_xyz = read_point_cloud_ply(write_point_cloud_ply(tmp_path / "xyz.ply", points))
    assert only_xyz[1] is None and only_xyz[2] is None


@pytest.mark.skipif(not S2P_CLOUD.is_file(), reason="shared real data not present")
def test_read_the_real_s2p_cloud():
    points, colours, normals = read_point_cloud_ply(S2P_CLOUD)
    assert points.shape == (120_764, 3) and points.dtype == np.float64
    assert colours.shape == (120_764, 3) and colours.dtype == np.uint8 and normals is None
    np.testing.assert_allclose(points[0], [359922.46228348, 7651921.62613828, 2371.10008435])
    assert 2270 < points[:, 2].min() and points[:, 2].max() < 2380


def test_bad_ply_files_are_input_file_errors(tmp_path):
    good = write_point_cloud_ply(tmp_path / "good.ply", np.zeros((100, 3))).read_bytes()
    (tmp_path / "truncated.ply").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.ply").write_bytes(b"\x00\x01garbage" * 10)
    for name in ("truncated.ply", "garbage.ply", "missing.ply"):
        with pytest.raises(InputFileError, match=name):
            read_point_cloud_ply(tmp_path / name)


def test_weld_merges_seam_vertices_and_drops_uvs():
    box = textured_box()
    welded = weld(box)
    assert len(welded.vertices_n3) == 8 and welded.uvs_n2 is None and welded.texture_hw3 is None
    np.testing.assert_array_equal(welded.vertices_n3[welded.faces_f3], box.vertices_n3[box.faces_f3])


def test_watertight_closed_box_true_open_box_false():
    box = textured_box()
    assert is_watertight(box)
    open_box = TexturedMesh(box.vertices_n3, np.delete(box.faces_f3, [0, 6], axis=0))   # no top
    assert not is_watertight(open_box)
    assert not is_watertight(TexturedMesh(np.zeros((0, 3)), np.zeros((0, 3))))
    for mesh, expected in ((box, True), (open_box, False)):             # trimesh agrees
        w = weld(mesh)
        assert trimesh.Trimesh(w.vertices_n3, w.faces_f3, process=False).is_watertight == expected
