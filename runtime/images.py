"""Read images and masks from disk into one convention: (H, W, 3) uint8 RGB and (H, W) bool."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgead.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_ACCEPTED = ", ".join(IMAGE_EXTENSIONS)


def is_image_path(path: str | Path) -> bool:
    """True if the file name has an image extension (any case) and is not hidden."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def read_image(path: str | Path) -> np.ndarray:
    """Read PNG/JPEG/BMP/TIFF (8/16-bit; gray, RGB or RGBA) as (H, W, 3) uint8 RGB.

    16-bit values are scaled to 8 bits with rounding (value / 257); gray is replicated to
    three channels; alpha is dropped (not composited), so transparent pixels keep their colour.
    EXIF orientation is not applied: pixels come as stored.
    """
    return to_rgb(_decode(path, "image"), str(path))


def to_rgb(pixels: np.ndarray, what: str) -> np.ndarray:
    """Pixels as OpenCV decodes or captures them (gray, BGR, BGRA; 8 or 16 bit) -> (H, W, 3) uint8 RGB.

    `what` names the file or source in errors.
    """
    pixels = _to_uint8(np.asarray(pixels), what)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2] if pixels.ndim == 3 else 0
    if channels in (1, 2):  # gray, gray + alpha
        return np.ascontiguousarray(np.repeat(pixels[:, :, :1], 3, axis=2))
    if channels in (3, 4):  # BGR, BGRA: alpha dropped
        return cv2.cvtColor(np.ascontiguousarray(pixels[:, :, :3]), cv2.COLOR_BGR2RGB)
    raise DataError(f"{what} has pixels of shape {pixels.shape}; edgead reads gray, RGB and RGBA — convert it to 8-bit RGB")


def read_mask(path: str | Path, expected_hw: tuple[int, int]) -> np.ndarray:
    """Read a defect mask of any depth and channel count as (H, W) bool: nonzero = defect.

    A fourth (alpha) channel is ignored; `expected_hw` is the (H, W) of the image it labels.
    """
    raw = _decode(path, "mask")
    if raw.ndim == 3:
        mask = np.any(raw[:, :, :3] != 0, axis=2)
    else:
        mask = raw != 0
    if mask.shape != tuple(expected_hw):
        raise DataError(
            f"mask {path} is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image is "
            f"{expected_hw[0]}x{expected_hw[1]} — masks must have their image's size; "
            "regenerate the mask at the image's resolution"
        )
    return mask


def find_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Sorted image files in a folder (hidden files and folders skipped); [] if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist or is not a folder — check the path")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    images = []
    for path in candidates:
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if not hidden and path.is_file() and is_image_path(path):
            images.append(path)
    return sorted(images)


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Sorted image files in a folder; DataError if it is missing or holds none."""
    images = find_images(folder, recursive)
    if not images:
        where = "or its subfolders" if recursive else "(subfolders not searched)"
        raise DataError(f"no image found in {folder} {where} — accepted extensions are {_ACCEPTED} (any case)")
    return images


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB or (H, W) uint8 gray image; the extension picks the format."""
    path = Path(path)
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(path.suffix, pixels)
    if not ok:
        raise DataError(f"could not encode {path} as {path.suffix} — use one of {_ACCEPTED}")
    encoded.tofile(path)


def _decode(path: str | Path, what: str) -> np.ndarray:
    """File bytes -> decoded array as stored: (H, W) or (H, W, C), BGR order, any dtype."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file {path} does not exist — check the path")
    # np.fromfile + imdecode rather than cv2.imread: works with non-ASCII paths everywhere.
    data = np.fromfile(path, dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if decoded is None:
        raise DataError(
            f"{what} file {path} could not be decoded ({data.size} bytes) — it is empty, "
            f"truncated or not an image; re-export it as one of {_ACCEPTED}"
        )
    return decoded


def _to_uint8(pixels: np.ndarray, path: str | Path) -> np.ndarray:
    """uint8 unchanged, uint16 rounded to 8 bits; any other dtype is a DataError."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise DataError(
        f"{path} stores {pixels.dtype} pixels; edgead reads 8- and 16-bit unsigned images — "
        "convert it to 8-bit (e.g. an RGB PNG)"
    )
