"""The bundled demo dataset: MVTec-layout categories cut from scikit-image's CC0 texture photos.

Good images are random crops (flips, 90° rotations, a brightness jitter, a colour tint per
gray category) of `skimage.data.brick()`, `grass()` and `gravel()` (512x512 gray) and, as the colour
texture `tissue`, of `skimage.data.immunohistochemistry()` (512x512 RGB, stained tissue: the defects
must differ from the good surface in colour as well as in structure; its training crops come from the left of
the photo and its test crops from the right). Training crops
come from the top rows of the photo and test crops from the rows below them; the two regions
are disjoint whenever size_px <= half the photo (at 256 px: rows 0-255 vs 256-511), otherwise
they overlap as little as the photo allows. Defects are synthesised with exact masks:
`scratch` (a thin bright or dark curve), `spot` (a soft-edged irregular stain), and
`cutpaste` (a rotated, rescaled rectangle of texture from elsewhere in the photo).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np

from edgead.errors import ConfigError, DataError, DependencyError
from edgead.runtime.images import write_image

DEMO_CATEGORIES = ("brick", "grass", "gravel", "tissue")
DEFECT_TYPES = ("scratch", "spot", "cutpaste")
_TINT_RGB = {"brick": (1.0, 0.82, 0.70), "grass": (0.82, 1.0, 0.70), "gravel": (0.96, 0.96, 1.0)}
_COLOUR_PHOTOS = {"tissue": "immunohistochemistry"}  # category -> skimage.data photo, used as it is
_STAINS_RGB = ((60, 40, 25), (150, 75, 30), (235, 230, 215), (40, 40, 45))  # oil, rust, dust, soot
_TRAIN_FRACTION = 0.6  # of the photo's rows, when the crop size allows
_MARKER = ".edgead-demo.json"


def make_demo_dataset(
    out_dir: str | Path,
    categories: tuple[str, ...] = DEMO_CATEGORIES,
    size_px: int = 256,
    n_train: int = 40,
    n_test_good: int = 10,
    n_test_defect: int = 18,
    seed: int = 0,
) -> list[Path]:
    """Write one MVTec-layout folder per category under out_dir; return the category roots.

    A category already built with the same settings is left untouched; one built with other
    settings is rebuilt. Defect types take turns, so n_test_defect=18 gives 6 of each.
    """
    unknown = [c for c in categories if c not in DEMO_CATEGORIES]
    if unknown:
        raise ConfigError(f"unknown demo categories {unknown} — choose from {list(DEMO_CATEGORIES)}")
    if min(n_train, n_test_good, n_test_defect) < 0 or n_train == 0:
        raise ConfigError(
            f"n_train={n_train}, n_test_good={n_test_good}, n_test_defect={n_test_defect} — "
            "n_train must be >= 1 and the test counts >= 0"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(size_px=size_px, n_train=n_train, n_test_good=n_test_good,
                    n_test_defect=n_test_defect, seed=seed)
    return [_ensure_category(out_dir, category, settings) for category in categories]


def _ensure_category(out_dir: Path, category: str, settings: dict) -> Path:
    """Build out_dir/category unless it already holds this exact demo; return its path."""
    root = out_dir / category
    marker = root / _MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) == {"category": category, **settings}:
            return root
        shutil.rmtree(root)  # our own demo, built with other settings
    elif root.exists():
        raise DataError(
            f"{root} exists and is not an edgead demo dataset — move it away or choose another out_dir"
        )
    # Build in a hidden sibling and rename, so an interrupted build never looks complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{category}-", dir=out_dir))
    try:
        _write_category(staging, category, **settings)
        (staging / _MARKER).write_text(json.dumps({"category": category, **settings}))
        staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _write_category(root: Path, category: str, size_px: int, n_train: int,
                    n_test_good: int, n_test_defect: int, seed: int) -> None:
    """Write train/good, test/good, test/<defect> and ground_truth/<defect> under root."""
    photo = _tinted_photo(category)
    rng = np.random.default_rng([seed, zlib.crc32(category.encode())])
    train_rows, test_rows = _row_ranges(photo.shape[0], size_px)
    for i in range(n_train):
        _save(root / "train" / "good" / f"{i:03d}.png", _crop(photo, size_px, train_rows, rng))
    for i in range(n_test_good):
        _save(root / "test" / "good" / f"{i:03d}.png", _crop(photo, size_px, test_rows, rng))
    for i in range(n_test_defect):
        defect = DEFECT_TYPES[i % len(DEFECT_TYPES)]
        name = f"{i // len(DEFECT_TYPES):03d}"
        image = _crop(photo, size_px, test_rows, rng)
        image, mask = _DEFECT_MAKERS[defect](image, photo, rng)
        _save(root / "test" / defect / f"{name}.png", image)
        _save(root / "ground_truth" / defect / f"{name}_mask.png", mask.astype(np.uint8) * 255)


def _tinted_photo(category: str) -> np.ndarray:
    """The category's 512x512 photo, gray ones tinted: (H, W, 3) float32 RGB in [0, 255]."""
    try:
        import skimage.data
    except ImportError as error:
        raise DependencyError(
            "the demo dataset is cut from scikit-image's sample photos — "
            "install them with `pip install edgead[train]`"
        ) from error
    if category in _COLOUR_PHOTOS:
        rgb = getattr(skimage.data, _COLOUR_PHOTOS[category])()[:, :, :3]
        # transposed, so that the row split below splits the columns: the photo's top and bottom hold different
        # tissue (its bottom half a round gland and more stroma than the top), its left and right the same kinds
        return np.ascontiguousarray(rgb.transpose(1, 0, 2)).astype(np.float32)
    gray = getattr(skimage.data, category)().astype(np.float32)
    return gray[:, :, None] * np.array(_TINT_RGB[category], dtype=np.float32)


def _row_ranges(height: int, size_px: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Allowed top rows (inclusive ranges) of training and test crops."""
    if not 16 <= size_px <= height:
        raise ConfigError(f"size_px={size_px} — the demo photos are {height} px; use 16 to {height}")
    split = max(size_px, min(round(_TRAIN_FRACTION * height), height - size_px))
    test_top = min(split, height - size_px)
    return (0, split - size_px), (test_top, height - size_px)


def _crop(photo: np.ndarray, size_px: int, rows: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random (size_px, size_px, 3) float32 crop, flipped/rotated, with brightness jitter."""
    top = int(rng.integers(rows[0], rows[1] + 1))
    left = int(rng.integers(0, photo.shape[1] - size_px + 1))
    crop = photo[top:top + size_px, left:left + size_px]
    crop = np.rot90(crop, k=int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop) * rng.uniform(0.94, 1.06)


def _add_scratch(image: np.ndarray, photo: np.ndarray, rng: np.random.Generator):
    """A thin (2-4 px) bright or dark smooth curve across part of the image."""
    size = image.shape[0]
    steps = 24
    step_px = rng.uniform(0.3, 0.6) * size / steps
    angle = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.08, steps))
    start = rng.uniform(0.2, 0.8, 2) * size
    points = start + np.cumsum(step_px * np.stack([np.cos(angle), np.sin(angle)], 1), 0)
    mask = np.zeros((size, size), np.uint8)
    thickness = int(rng.integers(2, 5)) if size >= 128 else int(rng.integers(1, 3))
    cv2.polylines(mask, [np.round(points).astype(np.int32)], False, 1, thickness, cv2.LINE_8)
    mask = mask.astype(bool)
    shade = rng.uniform(225, 255) if rng.random() < 0.5 else rng.uniform(10, 40)
    image[mask] = 0.15 * image[mask] + 0.85 * shade
    return image, mask


def _add_spot(image: np.ndarray, photo: np.ndarray, rng: np.random.Generator):
    """An irregular stain with a soft edge; the mask is exactly where it changes the image."""
    size = image.shape[0]
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radii = rng.uniform(0.07, 0.14, 2) * size
    wobble = 1 + sum(rng.uniform(-0.12, 0.12) * np.cos(k * angles + rng.uniform(0, 6.3)) for k in (2, 3, 5))
    centre = rng.uniform(0.25, 0.75, 2) * size
    outline = centre + wobble[:, None] * radii * np.stack([np.cos(angles), np.sin(angles)], 1)
    blob = np.zeros((size, size), np.float32)
    cv2.fillPoly(blob, [np.round(outline).astype(np.int32)], 1.0)
    alpha = cv2.GaussianBlur(blob, (0, 0), sigmaX=max(1.0, radii.min() / 5))
    alpha[alpha < 0.1] = 0  # a fade this faint is invisible; cut it so the mask is exact
    stain_rgb = _STAINS_RGB[int(rng.integers(len(_STAINS_RGB)))]
    strength = rng.uniform(0.55, 0.8) * alpha[:, :, None]
    image = image * (1 - strength) + strength * np.array(stain_rgb, np.float32)
    return image, alpha > 0



def _add_cutpaste(image: np.ndarray, photo: np.ndarray, rng: np.random.Generator):
    """A rectangle of texture from elsewhere in the photo, rescaled and rotated, pasted in."""
    size = image.shape[0]
    box_wh = rng.uniform(0.18, 0.35, 2) * size
    centre = rng.uniform(0.3, 0.7, 2) * size
    box_angle = rng.uniform(0, 180)
    source = rng.uniform(0.2, 0.8, 2) * np.array(photo.shape[1::-1])
    scale = rng.uniform(1.4, 1.8) if rng.random() < 0.5 else rng.uniform(0.55, 0.7)
    to_crop = cv2.getRotationMatrix2D(tuple(source), rng.uniform(20, 70), scale)
    to_crop[:, 2] += centre - source  # source point lands on the box centre
    patch = cv2.warpAffine(photo, to_crop, (size, size), borderMode=cv2.BORDER_REFLECT)
    corners = cv2.boxPoints((tuple(centre), tuple(box_wh), box_angle))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], 1)
    mask = mask.astype(bool)
    image[mask] = patch[mask] * rng.choice([0.85, 1.15])
    return image, mask


_DEFECT_MAKERS = {"scratch": _add_scratch, "spot": _add_spot, "cutpaste": _add_cutpaste}


def _save(path: Path, image: np.ndarray) -> None:
    """Clip to uint8 and write as PNG, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.clip(np.round(image), 0, 255).astype(np.uint8))
