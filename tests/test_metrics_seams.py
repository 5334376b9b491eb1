"""MetaEarth's seam metric, on images with closed-form answers."""

import numpy as np
import pytest

from earthsynth.errors import ConfigError
from earthsynth.metrics.seams import seam_lines, seam_ratio


def test_hard_steps_at_every_tile_boundary():
    a, h, tile = 0.5, 20.0, 16
    rows, cols = np.mgrid[0:64, 0:80].astype(float)
    image = a * (rows + cols) + h * (rows // tile + cols // tile)
    result = seam_ratio(image, tile)
    assert result["seam"] == pytest.approx(a + h) and result["interior"] == pytest.approx(a)
    assert result["ratio"] == pytest.approx((a + h) / a) and result["ratio"] > 10


def test_smooth_ramp_has_ratio_one_for_any_shape():
    rows, cols = np.mgrid[0:50, 0:90].astype(float)
    image = np.stack([0.3 * cols + 0.7 * rows, 2.0 * cols, rows], axis=-1)
    assert seam_ratio(image, 16)["ratio"] == pytest.approx(1.0)
    assert seam_ratio(image, 10, offset=3, tile_size_y=7)["ratio"] == pytest.approx(1.0)


def test_lines_and_edge_cases():
    assert seam_lines(40, 16).tolist() == [16, 32]
    assert seam_lines(40, 16, offset=8).tolist() == [8, 24]
    flat = np.zeros((32, 32))
    assert seam_ratio(flat, 8)["ratio"] == 1.0
    step = np.zeros((32, 32))
    step[:, 16:] = 1.0
    assert seam_ratio(step, 16)["ratio"] == float("inf")
    only_columns = seam_ratio(np.zeros((8, 40)) + np.arange(40) // 16, 16)   # no horizontal seam: one direction
    assert only_columns["seam_y"] is None and only_columns["seam_x"] == 1.0
    with pytest.raises(ConfigError, match="no seam"):
        seam_ratio(np.zeros((8, 8)), 16)
    with pytest.raises(ConfigError, match="tile_size"):
        seam_ratio(flat, 1)
