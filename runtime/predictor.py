"""The deployed scoring path: backend features, memory bank, maps and threshold from the manifest."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from edgead.artifact import Artifact
from edgead.errors import ArtifactError, ConfigError, EdgeADError
from edgead.runtime.backends.base import Backend, open_backend
from edgead.runtime.memory_bank import MemoryBank
from edgead.runtime.postprocess import anomaly_maps, image_scores, patch_scores
from edgead.runtime.preprocess import resize_to_input, stack_batch
from edgead.runtime.scheduler import PatchScheduler, make_slots
from edgead.runtime.tiling import cut_tiles, stitch

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Score of one image, its verdict, and its map (H, W) float32: at the model input size, or the frame's size when tiled."""

    score: float
    anomalous: bool
    anomaly_map: np.ndarray


@dataclass
class Batch:
    """Engine input (N, h, w, 3) uint8, and for tiled frames which tiles belong to which frame."""

    images: np.ndarray
    # per frame: (first tile, tile count, tile origins, frame height and width); empty when frames were resized
    tiles: list[tuple[int, int, list[tuple[int, int]], tuple[int, int]]] = field(default_factory=list)


@dataclass(frozen=True)
class Tiling:
    """Cut frames into tile_px tiles at stride_px (frame pixels) instead of resizing them whole."""

    tile_px: int
    stride_px: int

    def __post_init__(self) -> None:
        if self.tile_px < 16:
            raise ConfigError(f"--tile {self.tile_px} px is too small; use at least the model input size")
        if not 1 <= self.stride_px <= self.tile_px:
            raise ConfigError(f"--stride {self.stride_px} px must be between 1 and the tile size {self.tile_px}")


def tiling_from(manifest: dict, tile_px: int | None, stride_px: int | None) -> Tiling | None:
    """--tile/--stride where given, else the manifest's tiling when it is enabled, else None (resize whole frames)."""
    saved = manifest.get("tiling") or {}
    if tile_px is None and stride_px is None:
        return Tiling(int(saved["tile_px"]), int(saved["stride_px"])) if saved.get("enabled") else None
    tile = tile_px if tile_px is not None else int(saved.get("tile_px", manifest["input"]["size_px"][0]))
    return Tiling(tile, stride_px if stride_px is not None else tile)


def prepare_batch(images: list[np.ndarray], size_px: tuple[int, int], tiling: Tiling | None) -> Batch:
    """RGB frames -> engine input (N, h, w, 3): each frame resized to `size_px`, or cut into tiles resized to it."""
    if tiling is None:
        return Batch(stack_batch(images, size_px))
    chunks, layout, first = [], [], 0
    for image in images:
        tiles, origins = cut_tiles(image, tiling.tile_px, tiling.stride_px)
        if tiles.shape[1:3] != size_px:
            tiles = np.stack([resize_to_input(t, size_px) for t in tiles])
        chunks.append(tiles)
        layout.append((first, len(origins), origins, image.shape[:2]))
        first += len(origins)
    return Batch(np.ascontiguousarray(np.concatenate(chunks)), layout)


def frame_maps(
    maps: np.ndarray, batch: Batch | None, tiling: Tiling | None, quantile: float | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Input-sized maps (N, h, w) -> per frame: image score and map (stitched at the frame's size when tiled)."""
    if batch is None or not batch.tiles:
        frames = list(maps)
    else:
        frames = [stitch(maps[first : first + count], origins, hw, tiling.tile_px) for first, count, origins, hw in batch.tiles]
    return image_scores(frames, quantile), frames


class Predictor:
    """Scores RGB images with an artifact's engine and memory bank; a context manager.

    Engine batches go through a PatchScheduler: on a CUDA backend with several `streams`, the copies
    and compute of consecutive batches (tiles of a large frame) overlap; on the CPU the same code runs
    with one synchronous slot.
    """

    def __init__(
        self,
        artifact: Artifact,
        backend: str | Backend | None = None,
        device: str = "cpu",
        precision: str | None = None,
        tiling: Tiling | bool = True,
        streams: int = 1,
        max_batch: int = 8,
        threshold: float | None = None,
    ) -> None:
        """`backend`: a name (or None for the ladder), or an opened Backend to use as it is.

        `tiling`: True follows the manifest, False resizes whole frames, a Tiling overrides the manifest.
        `threshold`: an image threshold for this session instead of the model's.
        """
        manifest = artifact.manifest
        self.artifact = artifact
        self.size_px = tuple(manifest["input"]["size_px"])
        bank = artifact.load_npy(manifest["memory_bank"]["member"])
        expected = (manifest["memory_bank"]["count"], manifest["memory_bank"]["dim"])
        if bank.shape != expected:
            raise ArtifactError(f"{artifact.path}: memory bank has shape {bank.shape}, the manifest says {expected}")
        self.bank = _open_bank(bank, manifest["memory_bank"]["k"], device)
        self.blur_sigma_px = float(manifest["postprocess"]["blur_sigma_px"])
        self.threshold = float(manifest["postprocess"]["image_threshold"] if threshold is None else threshold)
        self.score_quantile = manifest["postprocess"].get("score_quantile")  # None: the image score is the map's max
        self.tiling = tiling_from(manifest, None, None) if tiling is True else (tiling or None)
        self.max_batch = max_batch
        self.backend: Backend = backend if isinstance(backend, Backend) else open_backend(artifact, backend, device, precision)
        self.scheduler = PatchScheduler(make_slots(self.backend, streams, max_batch))

    # the deployed path in stages, so that a live loop can time each one
    def prepare(self, images: list[np.ndarray]) -> Batch:
        """RGB frames -> engine input: each resized to the model input, or cut into tiles (resized if tile != input)."""
        return prepare_batch(images, self.size_px, self.tiling)

    def infer(self, batch: Batch | np.ndarray) -> np.ndarray:
        """Engine input -> patch features (N, C, h/8, w/8), in chunks of max_batch through the scheduler."""
        images = batch.images if isinstance(batch, Batch) else batch
        chunks = ((start, images[start : start + self.max_batch]) for start in range(0, len(images), self.max_batch))
        outputs = [out for _, out in self.scheduler.map(chunks)]
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def knn(self, features: np.ndarray) -> np.ndarray:
        """Patch features -> kNN patch scores (N, h/8, w/8)."""
        return patch_scores(features, self.bank)

    def maps(self, scores: np.ndarray, batch: Batch | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Patch scores -> image scores (frames,) and smoothed anomaly maps: input-sized, or stitched to the frame."""
        return frame_maps(anomaly_maps(scores, self.size_px, self.blur_sigma_px), batch, self.tiling, self.score_quantile)

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        """Score a batch of (H, W, 3) uint8 RGB images."""
        if not images:
            return []
        batch = self.prepare(images)
        scores, maps = self.maps(self.knn(self.infer(batch)), batch)
        return [Prediction(float(s), bool(s > self.threshold), m) for s, m in zip(scores, maps)]

    def close(self) -> None:
        try:
            self.scheduler.close()
        finally:
            self.backend.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_bank(bank: np.ndarray, k: int, device: str) -> MemoryBank:
    """The bank on the GPU (CuPy) for a CUDA device where CuPy runs, else on the CPU."""
    if device.startswith("cuda"):
        try:
            return MemoryBank(bank, k=k, device="cuda")
        except EdgeADError as exc:
            log.warning("kNN memory bank stays on the CPU: %s", exc)
    return MemoryBank(bank, k=k)
