import numpy as np
import pytest

from earthsynth.errors import ConfigError
from earthsynth.splat.cameras import (CurriculumConfig, PseudoCameraConfig, episode_cameras, look_at_points,
                                      pseudo_cameras)


def _elevation(cam, target):
    d = cam.center - target
    return np.degrees(np.arctan2(d[2], np.hypot(d[0], d[1])))


def test_curriculum_descends_from_85_to_45_degrees():
    config = CurriculumConfig()
    size = 300.0
    points = look_at_points(size, 2.0, config)
    assert points.shape == (9, 3) and points[:, 0].min() == pytest.approx(-75.0)
    elevations = []
    for episode in range(config.episodes):
        cams = episode_cameras(episode, size, 2.0, config, seed=1)
        assert len(cams) == 9 * 6
        elevations.append(_elevation(cams[0], points[0]))
        radius = np.linalg.norm(cams[0].center - points[0])
        assert radius == pytest.approx(config.radius(episode, size))
    assert elevations == pytest.approx([85.0, 75.0, 65.0, 55.0, 45.0])
    again = episode_cameras(2, size, 2.0, config, seed=1)
    assert all(np.array_equal(a.viewmat, b.viewmat) for a, b in zip(again, episode_cameras(2, size, 2.0, config, seed=1)))
    with pytest.raises(ConfigError):
        episode_cameras(5, size, 2.0, config)


def test_pseudo_cameras_interpolate_with_progress():
    config = PseudoCameraConfig()
    rng = np.random.default_rng(0)
    start = pseudo_cameras(0.0, 300.0, 0.0, config, rng=rng, count=4)
    end = pseudo_cameras(1.0, 300.0, 0.0, config, rng=rng, count=4)
    assert len(start) == 4
    for cam in start:   # the camera looks at its target: the optical axis points down at 80 degrees
        assert np.degrees(np.arcsin(-cam.rotation[2][2])) == pytest.approx(80.0)
    for cam in end:
        assert np.degrees(np.arcsin(-cam.rotation[2][2])) == pytest.approx(45.0)
    with pytest.raises(ConfigError):
        PseudoCameraConfig(elevations_deg=(80.0,))
