"""read_image, read_mask and list_images: every format to one convention, clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgead.errors import DataError
from edgead.runtime.images import IMAGE_EXTENSIONS, list_images, read_image, read_mask

H, W = 12, 20
RED_BGR = (0, 0, 255)


def _write(path, pixels):
    """Write raw BGR(A)/gray pixels as stored on disk; returns the path."""
    assert cv2.imwrite(str(path), pixels), path
    return path


def _solid(value, channels, dtype=np.uint8):
    return np.full((H, W, channels), value, dtype=dtype)


RGB_NAMES = ["red.png", "red.bmp", "red.tif", "red.tiff", "RED.PNG", "red.jpg", "red.JPEG"]


@pytest.mark.parametrize("name", RGB_NAMES)
def test_rgb_8bit_loads_as_rgb(tmp_path, name):
    image = read_image(_write(tmp_path / name, _solid(RED_BGR, 3)))
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert image[..., 0].min() > 240 and image[..., 1:].max() < 15  # jpeg is lossy


@pytest.mark.parametrize("name", ["red.png", "red.tif"])
def test_rgba_drops_alpha(tmp_path, name):
    image = read_image(_write(tmp_path / name, _solid((*RED_BGR, 128), 4)))
    assert image.shape == (H, W, 3)
    np.testing.assert_array_equal(image[0, 0], (255, 0, 0))


@pytest.mark.parametrize("name", ["gray.png", "gray.jpg", "gray.bmp", "gray.tif"])
def test_gray_8bit_replicated(tmp_path, name):
    image = read_image(_write(tmp_path / name, np.full((H, W), 77, np.uint8)))
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - 77).max() <= 1
    assert (image[..., 0] == image[..., 2]).all()


@pytest.mark.parametrize("name", ["deep.png", "deep.tif"])
def test_16bit_scaled_with_rounding(tmp_path, name):
    values = np.array([0, 128, 129, 257 * 100 + 128, 257 * 100 + 129, 65535], np.uint16)
    gray = np.tile(values, (H, 1))
    image = read_image(_write(tmp_path / name, gray))
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, :, 1], [0, 0, 1, 100, 101, 255])


def test_16bit_rgb_colour_order(tmp_path):
    bgr = _solid((0, 1000, 65535), 3, np.uint16)
    image = read_image(_write(tmp_path / "deep.png", bgr))
    np.testing.assert_array_equal(image[0, 0], (255, 4, 0))


def test_non_ascii_path(tmp_path):
    folder = tmp_path / "Prüfung ß"
    folder.mkdir()
    ok, encoded = cv2.imencode(".png", _solid(RED_BGR, 3))
    encoded.tofile(folder / "bild 1.png")
    assert read_image(folder / "bild 1.png")[0, 0, 0] == 255


def test_garbage_bytes_is_data_error(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="broken.png"):
        read_image(path)


def test_empty_file_is_data_error(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="could not be decoded"):
        read_image(path)


def test_missing_file_is_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "nope.png")


def test_float_tiff_is_data_error(tmp_path):
    path = _write(tmp_path / "float.tif", np.zeros((H, W), np.float32))
    with pytest.raises(DataError, match="float32"):
        read_image(path)


def test_mask_any_depth_nonzero_is_defect(tmp_path):
    gray = np.zeros((H, W), np.uint8)
    gray[2:4, 5:9] = 1
    np.testing.assert_array_equal(read_mask(_write(tmp_path / "m.png", gray), (H, W)), gray > 0)
    rgb16 = np.zeros((H, W, 3), np.uint16)
    rgb16[5, 5, 2] = 300
    mask = read_mask(_write(tmp_path / "m16.png", rgb16), (H, W))
    assert mask.dtype == bool and mask.sum() == 1 and mask[5, 5]


def test_mask_size_mismatch_names_both_sizes(tmp_path):
    path = _write(tmp_path / "m.png", np.zeros((H, W), np.uint8))
    with pytest.raises(DataError, match=f"{H}x{W}.*{H + 1}x{W}"):
        read_mask(path, (H + 1, W))


def test_mask_unreadable_is_data_error(tmp_path):
    (tmp_path / "m.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="m.png"):
        read_mask(tmp_path / "m.png", (H, W))


def test_list_images_sorted_images_only(tmp_path):
    pixels = _solid(0, 3)
    for name in ["b.png", "a.JPG", "sub/c.tiff", ".hidden.png", ".cache/d.png", "notes.txt"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        if name.endswith("txt"):
            (tmp_path / name).write_text("x")
        else:
            _write(tmp_path / name, pixels)
    assert list_images(tmp_path) == [tmp_path / "a.JPG", tmp_path / "b.png", tmp_path / "sub" / "c.tiff"]
    assert list_images(tmp_path, recursive=False) == [tmp_path / "a.JPG", tmp_path / "b.png"]


def test_list_images_empty_folder_names_extensions(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"\.png"):
        list_images(tmp_path)


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "absent")


def test_extensions_are_lowercase_with_dot():
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
