"""Patch scores to maps: the upsampling the manifest names, then the blur."""

import numpy as np
import pytest

from edgead.runtime.postprocess import anomaly_maps


def test_nearest_keeps_each_cell_a_block_and_bilinear_blends():
    grid = np.array([[[0.0, 1.0], [2.0, 3.0]]], dtype=np.float32)
    nearest = anomaly_maps(grid, (8, 8), 0.0, "nearest")[0]
    np.testing.assert_array_equal(nearest[:4, :4], 0.0)
    np.testing.assert_array_equal(nearest[4:, 4:], 3.0)
    bilinear = anomaly_maps(grid, (8, 8), 0.0)[0]
    assert 0.0 < bilinear[3, 3] < 3.0 and len(np.unique(bilinear)) > 4


def test_blur_applies_after_either_upsampling():
    grid = np.zeros((1, 4, 4), dtype=np.float32)
    grid[0, 1, 1] = 1.0
    for mode in ("bilinear", "nearest"):
        sharp, smooth = anomaly_maps(grid, (32, 32), 0.0, mode)[0], anomaly_maps(grid, (32, 32), 2.0, mode)[0]
        assert smooth.max() < sharp.max() and smooth.sum() == pytest.approx(sharp.sum(), rel=0.05)
