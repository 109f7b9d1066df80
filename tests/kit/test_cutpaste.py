"""CutPaste defects: the pasted piece changes the image only inside its mask."""

import numpy as np
import pytest

from edgead.errors import ConfigError
from edgead.kit.cutpaste import CutPaste


def texture(seed=0, size=96):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape", ["rectangle", "scar", "mixed"])
def test_a_pasted_piece_differs_from_the_source_only_inside_its_mask(shape):
    cutpaste = CutPaste(probability=1.0, shape=shape, max_area=0.15)
    for seed in range(20):
        image = texture(seed)
        out, mask = cutpaste(image, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.uint8 and mask.shape == image.shape[:2]
        changed = (out != image).any(axis=-1)
        assert mask.any() and changed.any()
        assert not (changed & ~mask).any(), "a pixel outside the mask changed"
        np.testing.assert_array_equal(out[~mask], image[~mask])


def test_rectangles_stay_within_the_area_and_scars_are_thin():
    image = texture(size=256)
    rect = CutPaste(1.0, "rectangle", 0.1)
    scar = CutPaste(1.0, "scar")
    rect_areas = [rect(image, np.random.default_rng(s))[1].mean() for s in range(20)]
    scar_areas = [scar(image, np.random.default_rng(s))[1].mean() for s in range(20)]
    assert 0.1 * 2 / 15 * 0.9 < min(rect_areas) and max(rect_areas) < 0.1 * 1.1  # rotation rounds the edges
    assert max(scar_areas) < 16 * 25 * 1.2 / 256**2


def test_probability_zero_pastes_nothing_and_a_seed_repeats():
    image = texture()
    out, mask = CutPaste(probability=0.0)(image, np.random.default_rng(0))
    np.testing.assert_array_equal(out, image)
    assert not mask.any()
    a = CutPaste(probability=1.0)(image, np.random.default_rng(7))
    b = CutPaste(probability=1.0)(image, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])


def test_an_unknown_shape_is_an_error():
    with pytest.raises(ConfigError, match="choose one of rectangle, scar, mixed"):
        CutPaste(shape="circle")
