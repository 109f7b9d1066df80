"""Dataset layouts on disk: an MVTec AD category, or a plain folder of good images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgead.errors import DataError
from edgead.runtime.images import find_images, read_mask

GOOD = "good"
_SPECIAL_FOLDERS = ("test", "ground_truth")

_LAYOUT_HELP = (
    "expected layout: root/train/good/*.png (MVTec AD) or good images directly in root; "
    "test images in root/test/good/ and root/test/<defect_type>/; "
    "masks in root/ground_truth/<defect_type>/<image stem>_mask.png"
)


@dataclass(frozen=True)
class Sample:
    """One test image with its label and, for defective images, its mask file."""

    path: Path
    label: int  # 0 good, 1 defective
    defect_type: str  # "good" for good images
    mask_path: Path | None


@dataclass(frozen=True)
class Dataset:
    """Training images (all good) and labelled test samples found under `root`."""

    root: Path
    layout: str  # "mvtec" | "folder"
    train: tuple[Path, ...]
    test: tuple[Sample, ...]
    warnings: tuple[str, ...] = ()  # what looks wrong about the layout, for the user to read before training

    @property
    def has_masks(self) -> bool:
        """True if every defective test sample has a mask file."""
        return all(s.mask_path is not None for s in self.test if s.label == 1)


def open_dataset(root: str | Path) -> Dataset:
    """Discover the layout under `root` and list its training images and test samples."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist or is not a folder — check the path")
    if (root / "train" / GOOD).is_dir():
        layout, train = "mvtec", find_images(root / "train" / GOOD)
        masks_required = True
    else:
        _reject_category_collection(root)
        layout, train = "folder", _plain_train_images(root)
        masks_required = (root / "ground_truth").is_dir()
    if not train:
        where = root / "train" / GOOD if layout == "mvtec" else root
        raise DataError(f"no training image found in {where} — {_LAYOUT_HELP}")
    test = _test_samples(root, masks_required)
    warnings = _looks_like_test_data(root) if layout == "folder" else []
    return Dataset(root=root, layout=layout, train=tuple(train), test=tuple(test), warnings=tuple(warnings))


def load_mask(sample: Sample, image_hw: tuple[int, int]) -> np.ndarray:
    """Ground truth of a sample as (H, W) bool: all False for good images."""
    if sample.label == 0:
        return np.zeros(image_hw, dtype=bool)
    if sample.mask_path is None:
        raise DataError(
            f"defective test image {sample.path} has no mask — add "
            f"ground_truth/{sample.defect_type}/{sample.path.stem}_mask.png, "
            "or evaluate image-level metrics only"
        )
    return read_mask(sample.mask_path, image_hw)


def _plain_train_images(root: Path) -> list[Path]:
    """Images anywhere under root except in its test/ and ground_truth/ folders."""
    return [
        path
        for path in find_images(root)
        if path.relative_to(root).parts[0] not in _SPECIAL_FOLDERS
    ]


def _looks_like_test_data(root: Path) -> list[str]:
    """A plain folder laid out like MVTec's test/ (good/ beside defect folders): its defects would train as good."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in _SPECIAL_FOLDERS)
    others = [name for name in folders if name != GOOD and find_images(root / name)]
    masks = root.parent / "ground_truth"
    labelled = [name for name in others if (masks / name).is_dir()]
    if not ((GOOD in folders and others) or labelled or (root.name == "test" and others)):
        return []
    shown = ", ".join(f"{name}/" for name in others[:4]) + (", ..." if len(others) > 4 else "")
    return [
        f"{root} looks like test data: {'good/ beside ' if GOOD in folders else ''}{shown} — every image in it, "
        f"defects included, is trained on as a good image. Train on the category folder (its train/good/), "
        f"or on a folder that holds good images only."
    ]


def _reject_category_collection(root: Path) -> None:
    """Refuse a folder of MVTec categories: its test images would silently become training images."""
    categories = sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())
    if categories:
        raise DataError(
            f"{root} holds several MVTec AD categories ({', '.join(categories)}) — "
            f"open one category, e.g. {root / categories[0]}"
        )


def _test_samples(root: Path, masks_required: bool) -> list[Sample]:
    """Samples from root/test/<defect_type>/; [] when there is no test folder."""
    test_dir = root / "test"
    if not test_dir.is_dir():
        return []
    loose = find_images(test_dir, recursive=False)
    if loose:
        raise DataError(
            f"{len(loose)} test image(s) lie directly in {test_dir} (e.g. {loose[0].name}) — "
            f"put them in a subfolder named after their label; {_LAYOUT_HELP}"
        )
    samples = []
    type_dirs = sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for type_dir in type_dirs:
        defect_type = type_dir.name
        for path in find_images(type_dir, recursive=False):
            if defect_type == GOOD:
                samples.append(Sample(path, 0, GOOD, None))
            else:
                mask_path = _mask_path(root, defect_type, path, masks_required)
                samples.append(Sample(path, 1, defect_type, mask_path))
    return samples


def _mask_path(root: Path, defect_type: str, image_path: Path, required: bool) -> Path | None:
    """root/ground_truth/<type>/<stem>_mask.png; DataError if required and missing."""
    mask_path = root / "ground_truth" / defect_type / f"{image_path.stem}_mask.png"
    if mask_path.is_file():
        return mask_path
    if required:
        raise DataError(
            f"defective test image {image_path} has no mask: expected {mask_path} — "
            "add the mask (nonzero = defect), or remove the image"
        )
    return None
