"""`earthsynth mesh` end to end on a tiny synthetic scene: every stage folder, the textured GLB, the metrics."""

import json

import numpy as np
import pytest

from earthsynth.errors import EarthsynthError
from conftest import HalfwayToGrey

pytestmark = pytest.mark.slow


def tiny_config():
    from earthsynth.mesh.geometry import GeometryConfig
    from earthsynth.mesh.pipeline import MeshPipelineConfig
    from earthsynth.mesh.refinement import RefinementConfig
    from earthsynth.mesh.texture import TextureConfig
    from earthsynth.mesh.uav_path import UAVPathConfig

    return MeshPipelineConfig(
        geometry=GeometryConfig(divisions=(1, 1), heightmap_resolution=64, zsdf_resolution=32, grid_resolution=32,
                                steps=8),
        texture=TextureConfig(steps=4, views_per_step=2),
        texel_m=0.5, texture_max_faces=2000,     # below the tiny geometry mesh: the decimation runs
        refinement=RefinementConfig(iterations=1, texture_steps=3,
                                    uav=UAVPathConfig(grid=(1, 1), altitude_m=40.0, size_px=48)))


def test_mesh_pipeline_writes_every_stage(tiny_scene, tmp_path):
    from earthsynth.io.mesh import is_watertight, read_glb
    from earthsynth.mesh.pipeline import run_mesh

    out = tmp_path / "run"
    result = run_mesh(tiny_scene, out, tiny_config(), progress=False, log=lambda _: None, refiner=HalfwayToGrey())
    for rel in ("dsm/points.ply", "geometry/mesh.glb", "texture/mesh.glb", "texture/texture.json",
                "refine/mesh.glb", "refine/refine.json", "refine/iteration_0.png", "mesh.glb",
                "dsm_from_mesh.tif", "metrics.json", "config.json"):
        assert (out / rel).is_file(), rel
    mesh, frame = read_glb(out / "mesh.glb")
    assert frame is not None and mesh.texture_hw3 is not None and mesh.uvs_n2 is not None
    # the textured mesh is the decimated geometry: fewer faces, still closed, its report in texture.json
    decimation = json.loads((out / "texture" / "texture.json").read_text())["decimation"]
    assert decimation["decimated"] and decimation["faces_in"] == read_glb(out / "geometry" / "mesh.glb")[0].num_faces
    assert mesh.num_faces == decimation["faces_out"] <= 2000 < decimation["faces_in"]
    assert is_watertight(mesh) and decimation["max_deviation_m"] < 0.5
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))          # the file says what the call returned
    assert set(metrics["seconds"]) == {"dsm", "geometry", "texture", "refine"}
    assert 0.0 <= metrics["geometry"]["points"]["f1"] <= 1.0
    assert np.isfinite(metrics["geometry"]["dsm"]["mae"])
    basic, refined = metrics["appearance"]["basic_texture"], metrics["appearance"]["refined"]
    assert basic["views"] and refined["views"]
    # the stand-in pulls every restored view halfway to grey: the refined texture must have moved that way
    refine_meta = json.loads((out / "refine" / "refine.json").read_text())
    assert refine_meta["refiner"] == "halfway-to-grey"
    assert refine_meta["iterations"][0]["mean_abs_restoration"] > 0.01
    # a second run reuses every completed stage
    again = run_mesh(tiny_scene, out, tiny_config(), progress=False, log=lambda _: None, refiner=HalfwayToGrey())
    assert again.metrics["seconds"]["geometry"] < 5.0 and again.metrics["seconds"]["texture"] < 5.0
    assert json.loads((out / "refine" / "refine.json").read_text()) == refine_meta
    # ... but not a refinement made with other weights of the same refiner
    retrained = HalfwayToGrey()
    retrained.fingerprint = lambda: "other weights"
    run_mesh(tiny_scene, out, tiny_config(), progress=False, log=lambda _: None, refiner=retrained)
    redone = json.loads((out / "refine" / "refine.json").read_text())
    assert redone["inputs"]["refiner_weights"] == "other weights" and redone["seconds"] != refine_meta["seconds"]


def test_mesh_pipeline_needs_cameras(tmp_path, tiny_scene):
    import shutil

    from earthsynth.mesh.pipeline import MeshPipelineConfig, run_mesh

    copy = tmp_path / "scene"
    shutil.copytree(tiny_scene, copy)
    shutil.rmtree(copy / "cameras")
    with pytest.raises(EarthsynthError, match="cameras approx"):
        run_mesh(copy, tmp_path / "run", tiny_config(), progress=False, log=lambda _: None)
    assert not (tmp_path / "run" / "dsm").exists()
    with pytest.raises(EarthsynthError):
        MeshPipelineConfig(refiner="magic")
    with pytest.raises(EarthsynthError, match="texture_max_faces"):
        MeshPipelineConfig(texture_max_faces=0)
