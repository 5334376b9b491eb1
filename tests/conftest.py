from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
REUNION_ROI_ENU = (-50.0, -50.0, 50.0, 50.0)   # the central 100 m of the s2p test pair (tests/test_mvs.py)


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL.is_dir():
        pytest.fail(f"real test data not found at {REAL}: CI must have ../shared beside the checkout")
    return REAL


class HalfwayToGrey:
    """A deterministic stand-in Refiner with a known effect, for pipeline tests (the shipped refiners have their
    own tests)."""

    name = "halfway-to-grey"

    def refine(self, images_bhw3, *, seed=0):
        return images_bhw3 * 0.5 + 0.25


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Path:
    """An 80 m synthetic scene (4 views of 160 px, truth) with its pinhole cameras: shared by pipeline tests."""
    from earthsynth.io.scene_cameras import approximate_scene_cameras
    from earthsynth.world.synth import SynthConfig, synthesize_scene

    root = tmp_path_factory.mktemp("tiny_scene") / "scene"
    synthesize_scene(SynthConfig(seed=3, size_m=80.0, num_views=4, view_size=160, cars_per_view=2,
                                 truth_points=40_000, test_view_size=64), root)
    for _ in approximate_scene_cameras(root):   # a generator: it writes cameras/<view>.json as it goes
        pass
    return root


@pytest.fixture(scope="session")
def tiny_scene_points(tiny_scene, tmp_path_factory) -> Path:
    """The height-sweep point cloud of `tiny_scene`."""
    from earthsynth.mesh.mvs import run_mvs

    return run_mvs(tiny_scene, tmp_path_factory.mktemp("tiny_dsm") / "dsm").points_path


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (restored after): small models run no faster on more, and the suite shares
    2 cores. Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def reunion_dsm(real_data, tmp_path_factory):
    """The s2p test pair, central 100 m x 100 m, 0.5 m grid (s2p's grid): about 10 s. -> (scene, MVSResult)."""
    from earthsynth.io.scene_import import import_scene
    from earthsynth.mesh.mvs import MVSConfig, run_mvs

    root = tmp_path_factory.mktemp("reunion")
    scene = import_scene(real_data / "s2p_pair_reunion", root / "scene", height_range=(2230.0, 2420.0),
                         log=lambda *_: None)
    result = run_mvs(scene.root, root / "dsm", MVSConfig(gsd_m=0.5, roi_enu=REUNION_ROI_ENU))
    return scene, result
