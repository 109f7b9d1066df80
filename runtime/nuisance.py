"""Nuisance augmentation: copies of a good image as a camera and a line would show it, without making a defect.

A model trained on lossless crops meets frames that a codec recompressed, a lamp brightened, a lens
softened, a sensor noised and a conveyor shifted: each lifts a good frame's score, and together they
lift every good frame above a threshold set on lossless crops. Training sees copies with these
nuisances (for the memory-bank detectors they go through the coreset into the bank; learned
detectors train on them), and the calibration scores copies the fold's model has not seen, so that
the false-alarm rate asked for is the one met on camera frames.

Per copy, in the order light travels: shift (and, for textures, a turn or flip) -> focus (optics: blurred, or
sharpened as a lens focused better than at training) ->
brightness, contrast, gamma (lighting, exposure) -> noise (sensor) -> JPEG recompression (the
codec; twice at times, as a recorder re-encoding a camera's MJPG; a reduced colour resolution at
times, as H.264's 4:2:0 with its deblocking filter). Each nuisance that is on is drawn at a random
strength up to its setting (`NuisanceConfig`). Numpy and OpenCV only: training, export and the
device can all make the same copies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from edgead.config import NuisanceConfig
from edgead.errors import ConfigError

MAX_QUALITY = 95


def copy_rng(seed: int, image: int, copy: int) -> np.random.Generator:
    """The generator of copy `copy` of image `image`: the same copies in training, calibration and export."""
    return np.random.default_rng([int(seed), 7919, int(image), int(copy)])


def augment(image: np.ndarray, config: NuisanceConfig, rng: np.random.Generator) -> np.ndarray:
    """One nuisance copy of an (H, W, 3) uint8 RGB image, same shape and dtype."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ConfigError(f"nuisance copies need (H, W, 3) uint8 images, got {image.shape} {image.dtype}")
    out = image
    if config.turns:
        out = _turn(out, rng)
    if config.shift:
        out = _shift(out, config.shift, rng)
    values = out.astype(np.float32)
    if config.blur:
        values = _focus(values, rng.uniform(-config.blur, config.blur))
    if config.light:
        values = _light(values, config.light, rng)
    if config.noise:
        values = values + rng.normal(0.0, rng.uniform(0.0, config.noise), values.shape).astype(np.float32)
    out = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if config.jpeg:
        out = _codec(out, config.jpeg, rng)
    return np.ascontiguousarray(out)


def copies(image: np.ndarray, config: NuisanceConfig, seed: int, index: int) -> list[np.ndarray]:
    """The `config.copies` nuisance copies of image number `index` (deterministic in seed and index)."""
    return [augment(image, config, copy_rng(seed, index, c)) for c in range(config.copies)]


def with_copies(images: Sequence[np.ndarray], config: NuisanceConfig, seed: int, first_index: int = 0) -> Iterator[tuple[int, int, np.ndarray]]:
    """(image index, version, image) for every image and its copies; version 0 is the image itself."""
    for offset, image in enumerate(images):
        index = first_index + offset
        yield index, 0, image
        for c in range(config.copies):
            yield index, c + 1, augment(image, config, copy_rng(seed, index, c))


def _turn(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    square = image.shape[0] == image.shape[1]
    turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))  # keep a non-square frame's shape
    out = np.rot90(image, turns)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def _shift(image: np.ndarray, shift_px: int, rng: np.random.Generator) -> np.ndarray:
    dx, dy = (float(v) for v in rng.uniform(-shift_px, shift_px, 2))
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = image.shape[:2]
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _focus(values: np.ndarray, sigma: float) -> np.ndarray:
    """Focus off either way: sigma > 0 blurs by a Gaussian of sigma px; sigma < 0 sharpens (unsharp mask of amount |sigma|)."""
    if abs(sigma) <= 0.2:  # below that a 3-tap kernel is the identity at 8 bits
        return values
    if sigma > 0:
        return cv2.GaussianBlur(values, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    soft = cv2.GaussianBlur(values, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT_101)
    return values + abs(sigma) * (values - soft)


def _light(values: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    brightness, contrast, gamma = rng.uniform(-strength, strength, 3)
    mean = float(values.mean())
    values = (values - mean) * (1.0 + contrast) + mean + 255.0 * brightness
    values = np.clip(values, 0, 255)
    return 255.0 * (values / 255.0) ** (1.0 + gamma)


def _codec(image: np.ndarray, lowest_quality: int, rng: np.random.Generator) -> np.ndarray:
    quality = int(rng.integers(lowest_quality, MAX_QUALITY + 1))
    if rng.random() < 0.33:  # H.264-like: colour at half resolution, deblocked (a slight blur of the chroma)
        ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)
        h, w = image.shape[:2]
        chroma = cv2.resize(ycrcb[:, :, 1:], (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
        ycrcb[:, :, 1:] = cv2.resize(chroma, (w, h), interpolation=cv2.INTER_LINEAR)
        image = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)
    out = _jpeg(image, quality)
    if rng.random() < 0.25:  # re-encoded on the way (a recorder, a stream relay)
        out = _jpeg(out, int(rng.integers(lowest_quality, MAX_QUALITY + 1)))
    return out


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ConfigError(f"OpenCV could not JPEG-encode a {image.shape} image at quality {quality}")
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if decoded is None:
        raise ConfigError(f"OpenCV could not decode its own JPEG of a {image.shape} image")
    return decoded[:, :, ::-1]
