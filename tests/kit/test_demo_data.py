"""The demo dataset: MVTec layout, exact masks, deterministic, idempotent."""

from __future__ import annotations

import numpy as np
import pytest

from edgead.errors import ConfigError, DataError
from edgead.kit import demo_data
from edgead.kit.demo_data import DEFECT_TYPES, make_demo_dataset
from edgead.runtime.datasets import load_mask, open_dataset
from edgead.runtime.images import read_image

SMALL = dict(size_px=128, n_train=3, n_test_good=2, n_test_defect=3)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo")
    return out_dir, make_demo_dataset(out_dir, categories=("brick", "gravel"), **SMALL)


def test_layout_and_masks(demo):
    out_dir, roots = demo
    assert roots == [out_dir / "brick", out_dir / "gravel"]
    for root in roots:
        data = open_dataset(root)
        assert data.layout == "mvtec" and len(data.train) == 3 and data.has_masks
        assert sorted(s.defect_type for s in data.test) == ["cutpaste", "good", "good", "scratch", "spot"]
        for sample in data.test:
            image = read_image(sample.path)
            assert image.shape == (128, 128, 3)
            mask = load_mask(sample, image.shape[:2])
            if sample.label:
                assert 0 < mask.mean() < 0.5, sample.path


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defect_changes_exactly_its_mask(defect):
    """Outside the mask the crop is untouched; inside, pixels move visibly (mean >= 15 levels)."""
    rng = np.random.default_rng(1)
    photo = demo_data._tinted_photo("grass")
    for _ in range(5):
        clean = photo[:128, :128].copy()
        damaged, mask = demo_data._DEFECT_MAKERS[defect](clean.copy(), photo, rng)
        change = np.abs(damaged - clean).max(axis=2)
        assert 0 < mask.mean() < 0.5
        assert change[~mask].max() == 0
        assert change[mask].mean() >= 15, change[mask].mean()


def test_deterministic(demo, tmp_path):
    out_dir, _ = demo
    make_demo_dataset(tmp_path, categories=("gravel",), **SMALL)
    for relative in ("test/spot/000.png", "ground_truth/scratch/000_mask.png", "train/good/002.png"):
        assert (tmp_path / "gravel" / relative).read_bytes() == (out_dir / "gravel" / relative).read_bytes()


def test_idempotent(demo):
    out_dir, roots = demo
    image = roots[0] / "test" / "good" / "000.png"
    before = image.stat().st_mtime_ns
    assert make_demo_dataset(out_dir, categories=("brick", "gravel"), **SMALL) == roots
    assert image.stat().st_mtime_ns == before


def test_other_settings_rebuild(tmp_path):
    make_demo_dataset(tmp_path, categories=("grass",), **SMALL)
    make_demo_dataset(tmp_path, categories=("grass",), **{**SMALL, "n_train": 2})
    assert len(open_dataset(tmp_path / "grass").train) == 2


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "grass").mkdir()
    with pytest.raises(DataError, match="not an edgead demo"):
        make_demo_dataset(tmp_path, categories=("grass",), **SMALL)


def test_unknown_category(tmp_path):
    with pytest.raises(ConfigError, match="wood"):
        make_demo_dataset(tmp_path, categories=("wood",))


def test_tissue_is_a_colour_texture_split_by_columns(tmp_path):
    """The colour category: its crops have colour (channels differ), and train and test crops come from disjoint halves."""
    (root,) = make_demo_dataset(tmp_path, categories=("tissue",), **SMALL)
    image = read_image(root / "train" / "good" / "000.png").astype(np.float32)
    assert np.abs(image[..., 0] - image[..., 2]).mean() > 20  # stained tissue: brown and blue, not a tinted gray
    photo = demo_data._tinted_photo("tissue")
    import skimage.data
    np.testing.assert_array_equal(photo[:, :, 0], skimage.data.immunohistochemistry()[:, :, 0].T)
    train_rows, test_rows = demo_data._row_ranges(photo.shape[0], 128)
    assert train_rows[1] + 128 <= test_rows[0]
