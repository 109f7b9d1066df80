"""The deployed scoring path for every detector: prepare, infer (engines), head, maps; threshold from the manifest."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgead.artifact import Artifact
from edgead.errors import ArtifactError, BackendError, ConfigError, DataError
from edgead.graphs import graph_specs, head_section
from edgead.runtime.backends.base import Backend, open_backend
from edgead.runtime.calibration import choose_threshold
from edgead.runtime.framecheck import FrameCheck, ImageGeometry
from edgead.runtime.heads import Head, open_head, with_scorer
from edgead.runtime.inference import with_inference
from edgead.runtime.postprocess import UPSAMPLING, anomaly_maps, image_scores
from edgead.runtime.preprocess import check_rgb, resize_to_input, stack_batch
from edgead.runtime.scheduler import PatchScheduler, make_slots
from edgead.runtime.tiling import Patches, cut_tiles, stitch


@dataclass
class Prediction:
    """Score of one image, its verdict, and its map (H, W) float32: at the model input size, or the frame's size when tiled."""

    score: float
    anomalous: bool
    anomaly_map: np.ndarray


@dataclass
class Batch:
    """Engine input (N, h, w, 3) uint8, and for tiled frames which tiles belong to which frame.

    `images` is an array, or for tiles that need no resizing (patches) a lazy `Patches` cut from the frames,
    copied into the engine's input one batch at a time.
    """

    images: np.ndarray | Patches
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


def cuts_patches(manifest: dict) -> bool:
    """Whether the model scores frames as stride-based patches (its engine takes patches, not images)."""
    return bool((manifest.get("tiling") or {}).get("patches"))


def prepare_batch(
    images: list[np.ndarray], size_px: tuple[int, int], tiling: Tiling | None, frame_px: tuple[int, int] | None = None
) -> Batch:
    """RGB frames -> engine input (N, h, w, 3): each frame resized to `size_px`, or cut into tiles resized to it.

    Tiles of the engine's own size (stride-based patches) are not stacked: they stay views into the frames.
    `frame_px`: frames are first resized to this size (models that cut patches from frames of a fixed size).
    """
    if tiling is None:
        return Batch(stack_batch(images, size_px))
    if frame_px is not None:
        for image in images:
            if min(check_rgb(image).shape[:2]) < tiling.tile_px:  # blown up to frame_px it would be scored on pixels never seen
                raise DataError(
                    f"image of {image.shape[0]}x{image.shape[1]} px is smaller than one {tiling.tile_px} px patch; "
                    f"score images of at least {tiling.tile_px} px on each side"
                )
        images = [resize_to_input(image, frame_px) for image in images]
    if (tiling.tile_px, tiling.tile_px) == tuple(size_px):
        patches, origins = Patches.cut([check_rgb(image) for image in images], tiling.tile_px, tiling.stride_px)
        firsts = np.cumsum([0] + [len(o) for o in origins])
        return Batch(patches, [(int(f), len(o), o, im.shape[:2]) for f, o, im in zip(firsts, origins, images)])
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
    """Input-sized maps (N, h, w), each already smoothed -> per frame: image score and map (stitched at the frame's size when tiled)."""
    if batch is None or not batch.tiles:
        frames = list(maps)
    else:
        frames = [stitch(maps[first : first + count], origins, hw, tiling.tile_px) for first, count, origins, hw in batch.tiles]
    return image_scores(frames, quantile), frames


Outputs = dict[str, np.ndarray]  # a graph's outputs by name, each (N, ...)


class Predictor:
    """Scores RGB images with an artifact's engines and scoring head; a context manager.

    The deployed path in stages, the same for every detector: prepare (resize, or cut tiles and
    patches) -> infer (the head's main graph, through the PatchScheduler) -> head (outputs -> score
    grids) -> maps (resize, smooth, stitch; image scores). On a CUDA backend with several `streams`,
    the copies and compute of consecutive batches overlap; on the CPU the same code runs with one
    synchronous slot. Graphs other than the main one are opened too and handed to the head by name.
    """

    def __init__(
        self,
        artifact: Artifact,
        backend: str | Backend | Mapping[str, Backend] | None = None,
        device: str = "cpu",
        precision: str | None = None,
        tiling: Tiling | bool = True,
        streams: int = 1,
        max_batch: int | None = None,
        threshold: float | None = None,
        false_alarm_rate: float | None = None,
        scorer: str | None = None,
        head_options: Mapping[str, Any] | None = None,
        trust_code: bool = False,
        inference: str | None = None,
    ) -> None:
        """`backend`: a name (or None for the ladder) for every graph; or opened Backends to use as they are:
        one for the main graph, or a mapping from graph name to Backend covering every graph.

        `tiling`: True follows the manifest, False resizes whole frames, a Tiling overrides the manifest.
        `max_batch`: engine batch size (default: the manifest's `runtime.max_batch`, else 8).
        `threshold`: an image threshold for this session instead of the model's; `false_alarm_rate`: the
        threshold for this rate on the engine's calibration instead. Otherwise the main engine's own
        threshold where it has one (export calibrates each engine through its own outputs), else the model's.
        `scorer`: one of the scoring heads the model stores, instead of its default (with that head's calibration).
        `head_options`: run-time options of the scoring head (e.g. {"restoration": "exact"}); None values are not given.
        `trust_code`: the model may run code (TorchScript engines); without it only a model with a verified signature may.
        `inference`: one of the inference modes the model stores (small-ae: dense or patches), instead of its default.
        """
        artifact = with_scorer(with_inference(artifact, inference), scorer)
        manifest = artifact.manifest
        self.artifact = artifact
        self.graphs = graph_specs(manifest, str(artifact.path))
        self.main_graph = head_section(manifest, str(artifact.path))["graph"]
        self.output_names = self.graphs[self.main_graph].output_names
        self.size_px = tuple(manifest["input"]["size_px"])
        # patch models resize frames to frame_px, then cut patches of size_px: their maps come at frame_px
        self.frame_px = tuple(manifest["input"]["frame_px"]) if manifest["input"].get("frame_px") else None
        self.patches = cuts_patches(manifest)
        self.blur_sigma_px = float(manifest["postprocess"]["blur_sigma_px"])
        self.score_quantile = manifest["postprocess"].get("score_quantile")  # None: the image score is the map's max
        self.upsample = manifest["postprocess"].get("upsample", "bilinear")  # models before the setting: bilinear
        if self.upsample not in UPSAMPLING:
            raise ArtifactError(f"{artifact.path}: postprocess.upsample {self.upsample!r} is not one of {sorted(UPSAMPLING)}")
        self.tiling = tiling_from(manifest, None, None) if tiling is True else (tiling or None)
        self.frame_check = FrameCheck(ImageGeometry.from_manifest(manifest.get("training", {}).get("image_geometry")), self.tiling is not None)
        self.max_batch = int(max_batch or manifest.get("runtime", {}).get("max_batch", 8))
        with ExitStack() as opened:  # whatever opened is closed again if a later part fails
            self.backends = self._open_backends(backend, device, precision, opened, trust_code)
            self.backend: Backend = self.backends[self.main_graph]
            others = {name: b for name, b in self.backends.items() if name != self.main_graph}
            self.scoring_head: Head = open_head(artifact, device, others, head_options)
            opened.callback(self.scoring_head.close)
            self.scheduler = PatchScheduler(make_slots(self.backend, streams, self.max_batch))
            self.threshold_choice, self.calibration = choose_threshold(manifest["postprocess"], self.backend.engine, threshold, false_alarm_rate)
            self.threshold = self.threshold_choice.value
            opened.pop_all()

    def _open_backends(self, backend, device: str, precision: str | None, opened: ExitStack, trust_code: bool) -> dict[str, Backend]:
        if isinstance(backend, Backend):
            backend = {self.main_graph: backend}
        if isinstance(backend, Mapping):
            missing = sorted(set(self.graphs) - set(backend))
            if missing:
                raise ConfigError(f"no backend given for graphs {missing} of {self.artifact.path}")
            return dict(backend)
        without = [name for name in self.graphs if not any(e.get("graph") == name for e in self.artifact.manifest.get("engines", []))]
        if without:
            raise BackendError(f"{self.artifact.path} has no engine of graph {', '.join(map(repr, without))}; re-train the model, or rebuild its engines with `edgead export --engine fp32`")
        backends = {}
        for name in self.graphs:
            backends[name] = open_backend(self.artifact, backend, device, precision, graph=name, trust_code=trust_code)
            opened.callback(backends[name].close)
        return backends

    # the deployed path in stages, so that a live loop can time each one
    def prepare(self, images: list[np.ndarray]) -> Batch:
        """RGB frames -> engine input: each resized to the model input, or cut into tiles (resized if tile != input)."""
        self.frame_check.check(images)
        return prepare_batch(images, self.size_px, self.tiling, self.frame_px)

    @property
    def map_px(self) -> tuple[int, int]:
        """(H, W) that maps are evaluated at: the frame size of patch models, else the model input size."""
        return self.frame_px or self.size_px

    def sample_batch(self, images: np.ndarray) -> tuple[Batch | np.ndarray, Batch | None]:
        """The model's own sample images (parity images, (N, H, W, 3)) as engine input, and the Batch for maps().

        Patch models carry frames, cut into patches as deployed; other models carry images at the input size.
        """
        if not self.patches:
            return images, None
        batch = self.prepare(list(images))
        return batch, batch

    def patches_per_sample(self) -> int:
        """How many patches (tiles) one of the model's sample images becomes; 1 for models that take whole images."""
        info = self.artifact.manifest.get("parity_images")
        if not self.patches or not info:
            return 1
        return len(self.prepare([self.artifact.load_npy(info["member"])[0]]).images)

    def infer(self, batch: Batch | np.ndarray) -> Outputs:
        """Engine input -> the main graph's outputs by name, in chunks of max_batch through the scheduler."""
        images = batch.images if isinstance(batch, Batch) else batch
        chunks = ((start, images[start : start + self.max_batch]) for start in range(0, len(images), self.max_batch))
        results = [as_outputs(out, self.output_names) for _, out in self.scheduler.map(chunks)]
        if len(results) == 1:
            return results[0]
        return {name: np.concatenate([r[name] for r in results]) for name in self.output_names}

    def head(self, outputs: Outputs) -> np.ndarray:
        """Main-graph outputs -> score grids (N, gh, gw) from the model's scoring head."""
        return self.scoring_head.score(outputs)

    def maps(self, grids: np.ndarray, batch: Batch | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Score grids -> image scores (frames,) and smoothed anomaly maps: input-sized, or stitched to the frame."""
        # every tile's (patch's) map is smoothed, then stitched: what every model has been calibrated with, small-ae's
        # `smooth: frame` ones included (their stitch-then-smooth-once branch was unreachable since it was written)
        return frame_maps(anomaly_maps(grids, self.size_px, self.blur_sigma_px, self.upsample), batch, self.tiling, self.score_quantile)

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        """Score a batch of (H, W, 3) uint8 RGB images."""
        if not images:
            return []
        batch = self.prepare(images)
        scores, maps = self.maps(self.head(self.infer(batch)), batch)
        return [Prediction(float(s), bool(s > self.threshold), m) for s, m in zip(scores, maps)]

    def describe(self) -> str:
        """The engines and head this predictor runs, for logs and reports."""
        engines = ", ".join(f"{name}: {b.describe()}" for name, b in self.backends.items()) if len(self.backends) > 1 else self.backend.describe()
        return f"{engines}; head {self.scoring_head.describe()}"

    def close(self) -> None:
        with ExitStack() as closing:  # every part is closed even when one of them fails
            for backend in self.backends.values():
                closing.callback(backend.close)
            closing.callback(self.scoring_head.close)
            closing.callback(self.scheduler.close)

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_outputs(result: np.ndarray | tuple | list, names: list[str]) -> Outputs:
    """A backend's result (one array, or a tuple in the graph's output order) -> outputs by name."""
    arrays = (result,) if isinstance(result, np.ndarray) else tuple(result)
    if len(arrays) != len(names):
        raise BackendError(f"the engine returned {len(arrays)} outputs; the model's graph has {len(names)}: {names}")
    return dict(zip(names, arrays))
