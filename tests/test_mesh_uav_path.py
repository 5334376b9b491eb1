import numpy as np
import pytest

from earthsynth.errors import ConfigError
from earthsynth.mesh.uav_path import UAVPathConfig, uav_cameras


def test_uav_grid_headings_and_pitch():
    config = UAVPathConfig(grid=(3, 2), altitude_m=100.0, pitch_deg=45.0)
    cams = uav_cameras((-150, -100, 150, 100), 5.0, config)
    assert len(cams) == 3 * 2 * 4
    for name, cam in cams.items():
        assert cam.center[2] == pytest.approx(105.0)
        forward = cam.rotation[2]                       # optical axis in world coordinates
        pitch = np.degrees(np.arcsin(-forward[2]))
        assert pitch == pytest.approx(45.0, abs=1e-9)
        heading = int(name.rsplit("_h", 1)[1])
        expected = np.array([np.sin(np.radians(heading)), np.cos(np.radians(heading))])
        assert forward[:2] / np.linalg.norm(forward[:2]) == pytest.approx(expected, abs=1e-9)
        # the look-at point (altitude ahead along the heading, on the ground) projects to the principal point
        target = np.array([*(cam.center[:2] + 100.0 * expected), 5.0])
        uv, _ = cam.project(target[None])
        assert uv[0] == pytest.approx([cam.K[0, 2], cam.K[1, 2]], abs=1e-6)
    xs = sorted({round(c.center[0], 6) for c in cams.values()})
    assert xs == pytest.approx([-90.0, 0.0, 90.0])       # 20 % margins of a 300 m box


def test_uav_straight_down_and_bad_input():
    cams = uav_cameras((0, 0, 10, 10), 0.0, UAVPathConfig(grid=(1, 1), pitch_deg=90.0, headings_deg=(0.0,)))
    cam = next(iter(cams.values()))
    assert cam.rotation[2] == pytest.approx([0, 0, -1], abs=1e-9)
    with pytest.raises(ConfigError):
        UAVPathConfig(grid=(0, 3))
    with pytest.raises(ConfigError):
        uav_cameras((10, 0, 0, 10), 0.0)
