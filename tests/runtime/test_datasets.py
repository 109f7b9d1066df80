"""open_dataset and load_mask on MVTec and plain-folder layouts built in tmp_path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgead.errors import DataError
from edgead.runtime.datasets import Sample, load_mask, open_dataset

H, W = 8, 10


def _image(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((H, W, 3), value, np.uint8))


def _mask(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((H, W), np.uint8)
    mask[2:5, 3:6] = 255
    assert cv2.imwrite(str(path), mask)


def _mvtec(root, with_masks=True):
    for i in range(3):
        _image(root / "train" / "good" / f"{i:03d}.png")
    _image(root / "test" / "good" / "000.png")
    for defect in ("crack", "hole"):
        for i in range(2):
            _image(root / "test" / defect / f"{i:03d}.png", 200)
            if with_masks:
                _mask(root / "ground_truth" / defect / f"{i:03d}_mask.png")
    return root


def test_mvtec_layout(tmp_path):
    data = open_dataset(_mvtec(tmp_path / "bottle"))
    assert data.layout == "mvtec" and len(data.train) == 3
    assert [(s.label, s.defect_type) for s in data.test] == [
        (1, "crack"), (1, "crack"), (0, "good"), (1, "hole"), (1, "hole")
    ]
    hole = data.test[-1]
    assert hole.mask_path == tmp_path / "bottle" / "ground_truth" / "hole" / "001_mask.png"
    assert data.test[2].mask_path is None and data.has_masks


def test_mvtec_missing_mask_names_expected_path(tmp_path):
    root = _mvtec(tmp_path / "bottle")
    (root / "ground_truth" / "hole" / "001_mask.png").unlink()
    with pytest.raises(DataError, match="ground_truth/hole/001_mask.png"):
        open_dataset(root)


def test_mvtec_empty_train(tmp_path):
    root = _mvtec(tmp_path / "bottle")
    for path in (root / "train" / "good").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="no training image"):
        open_dataset(root)


def test_plain_folder_without_test(tmp_path):
    _image(tmp_path / "a.png")
    _image(tmp_path / "line2" / "b.jpg")
    data = open_dataset(tmp_path)
    assert data.layout == "folder" and data.train == (tmp_path / "a.png", tmp_path / "line2" / "b.jpg")
    assert data.test == () and data.has_masks


def test_plain_folder_with_test_no_masks(tmp_path):
    _image(tmp_path / "a.png")
    _image(tmp_path / "test" / "good" / "g.png")
    _image(tmp_path / "test" / "dent" / "d.png")
    data = open_dataset(tmp_path)
    assert data.train == (tmp_path / "a.png",)
    found = [(s.label, s.defect_type, s.mask_path) for s in data.test]
    assert found == [(1, "dent", None), (0, "good", None)]
    assert not data.has_masks


def test_plain_folder_with_masks(tmp_path):
    _image(tmp_path / "a.png")
    _image(tmp_path / "test" / "dent" / "d.png")
    _mask(tmp_path / "ground_truth" / "dent" / "d_mask.png")
    data = open_dataset(tmp_path)
    assert data.train == (tmp_path / "a.png",) and data.has_masks  # masks are not training images


def test_plain_folder_ground_truth_present_but_mask_missing(tmp_path):
    _image(tmp_path / "a.png")
    _image(tmp_path / "test" / "dent" / "d.png")
    (tmp_path / "ground_truth").mkdir()
    with pytest.raises(DataError, match="ground_truth/dent/d_mask.png"):
        open_dataset(tmp_path)


def test_plain_folder_empty_train(tmp_path):
    _image(tmp_path / "test" / "good" / "g.png")
    with pytest.raises(DataError, match="no training image"):
        open_dataset(tmp_path)


def test_loose_test_images_rejected(tmp_path):
    _image(tmp_path / "a.png")
    _image(tmp_path / "test" / "x.png")
    with pytest.raises(DataError, match="directly in"):
        open_dataset(tmp_path)


def test_collection_of_categories_rejected(tmp_path):
    _mvtec(tmp_path / "bottle")
    with pytest.raises(DataError, match="bottle"):
        open_dataset(tmp_path)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "absent")


def test_load_mask(tmp_path):
    data = open_dataset(_mvtec(tmp_path / "bottle"))
    good, defective = data.test[2], data.test[0]
    assert not load_mask(good, (H, W)).any()
    mask = load_mask(defective, (H, W))
    assert mask.shape == (H, W) and mask.sum() == 9
    with pytest.raises(DataError, match="has no mask"):
        load_mask(Sample(defective.path, 1, "crack", None), (H, W))
