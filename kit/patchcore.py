"""PatchCore-style detector: patch features of good images, a coreset memory bank, calibrated maps."""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgead import __version__
from edgead.artifact import Artifact, npy_bytes
from edgead.config import NuisanceConfig, PatchCoreConfig
from edgead.errors import DataError
from edgead.graphs import FORMAT_VERSION, MAIN_GRAPH, graph_spec
from edgead.progress import Progress, silent_progress
from edgead.kit.backbones import build_backbone
from edgead.kit.bank import FittedBank, fit_bank
from edgead.kit.eager import calibrate_good_images
from edgead.kit.features import PatchFeatureModel
from edgead.runtime.framecheck import ImageGeometry
from edgead.runtime.images import read_image
from edgead.runtime.nuisance import with_copies as nuisance_copies
from edgead.runtime.calibration import describe
from edgead.runtime.crossval import ImageOutputs
from edgead.runtime.predictor import Batch, Tiling, prepare_batch
from edgead.runtime.preprocess import stack_batch

WEIGHTS_MEMBER = "weights.safetensors"
FEATURES_OUTPUT = "features"  # the feature graph's one output, which the kNN head reads
BANK_MEMBER = "memory_bank.npy"
PARITY_IMAGES = 8  # good images stored in the model to check engines on, here and on the device


@dataclass
class TrainedPatchCore:
    """What training produced: the feature model, the fp16 bank and the calibration."""

    config: PatchCoreConfig
    model: PatchFeatureModel
    bank: np.ndarray
    calibration: dict  # the postprocess section: threshold, statistics, cross-calibration
    coreset_radius: float
    n_patch_features: int
    grid: tuple[int, int]
    bank_images: list[str] = field(default_factory=list)
    holdout_images: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    image_geometry: dict | None = None  # sizes of the training images (ImageGeometry.to_manifest())
    # of n_patch_features, the bank copies' features subsampled at their own share, and the rows kept of them
    copies_seen: int = 0
    copies_kept: int = 0

    @property
    def graphs(self) -> dict[str, PatchFeatureModel]:
        return {MAIN_GRAPH: self.model}

    @property
    def parity_images(self) -> np.ndarray:
        """Up to PARITY_IMAGES held-out (else bank) good images, (N, H, W, 3) uint8 at the input size."""
        paths = (self.holdout_images or self.bank_images)[:PARITY_IMAGES]
        return stack_batch([read_image(p) for p in paths], (self.config.image_size_px, self.config.image_size_px))

    def artifact_parts(self) -> tuple[dict, dict[str, bytes]]:
        return to_artifact_parts(self)

    def summary(self, manifest: dict) -> list[str]:
        """What `edgead train` prints about the model beyond the common lines."""
        bank, post = manifest["memory_bank"], manifest["postprocess"]
        return [
            f"memory bank: {bank['count']} of {bank['patch_features_seen']} patch features x {bank['dim']} (fp16), "
            f"coreset radius {bank['coreset_radius']:.4f}",
            f"nuisance copies: {self.config.nuisance.describe()}",
        ] + describe(post)


def build_feature_model(config: PatchCoreConfig, weights: Path | None = None, pretrained: bool = True) -> PatchFeatureModel:
    """The exported graph for `config`: backbone plus patch aggregation, in eval mode."""
    backbone = build_backbone(config.backbone, weights=weights, pretrained=pretrained, stages=config.feature_stages)
    side = config.image_size_px + 2 * config.reflect_pad_px
    backbone.check_input_px(side, side)  # a stride-32 stage needs multiples of 32
    return PatchFeatureModel(backbone, config.patch_cells, config.feature_dim, config.reflect_pad_px, config.pool_zero_pad).eval()


def tiling_of(config: PatchCoreConfig) -> Tiling | None:
    return Tiling(config.tile_px, config.stride_px or config.tile_px) if config.tile_px else None


def extract_features(
    model: PatchFeatureModel, paths: Sequence[Path], config: PatchCoreConfig, progress: Progress, label: str,
    shapes: list | None = None,
) -> np.ndarray:
    """Patch features (N, C, h, w) float32 of the images at `paths` (of their tiles when tiling), in batches.

    `shapes`, when given, receives the (H, W, 3) shape of every image read.
    """
    return np.concatenate([features for _, features in _feature_batches(model, paths, config, progress, label, shapes)])


def _feature_batches(model: PatchFeatureModel, paths: Sequence[Path], config: PatchCoreConfig, progress: Progress, label: str,
                     shapes: list | None = None):
    """(Batch, features) per batch of images, prepared exactly as the runtime prepares frames (no nuisance copies)."""
    for _, batch, features in _version_batches(model, paths, config, progress, label, shapes, copies=False):
        yield batch, features


def _made_copies(config: PatchCoreConfig, copies: bool, bank_only: bool) -> NuisanceConfig:
    """The nuisance settings of the copies made: none, the bank copies only, or all of them."""
    if not copies:
        return NuisanceConfig(copies=0)
    return dataclasses.replace(config.nuisance, copies=config.nuisance.bank_copies) if bank_only else config.nuisance


def _versions(paths: Sequence[Path], config: PatchCoreConfig, shapes: list | None, copies: bool, bank_only: bool = False):
    """(image index, version, image): each image read once, then its nuisance copies (versions 1..copies; 1..bank copies)."""
    nuisance = _made_copies(config, copies, bank_only)
    for index, path in enumerate(paths):
        image = read_image(path)
        if shapes is not None:
            shapes.append(image.shape)
        yield from nuisance_copies([image], nuisance, config.seed, index)


@torch.inference_mode()  # torch applies it around every step of the generator
def _version_batches(model: PatchFeatureModel, paths: Sequence[Path], config: PatchCoreConfig, progress: Progress, label: str,
                     shapes: list | None = None, copies: bool = True, bank_only: bool = False):
    """([(image index, version)], Batch, features) per batch of images and their nuisance copies (`bank_only`: the bank
    copies only), prepared as the runtime does."""
    size = (config.image_size_px, config.image_size_px)
    tiling = tiling_of(config)
    versions = 1 + _made_copies(config, copies, bank_only).copies
    if versions > 1:
        label = f"{label} (+{versions - 1} nuisance copies each)"
    items = _versions(paths, config, shapes, copies, bank_only)
    device = next(model.parameters()).device
    with progress(label, len(paths) * versions) as advance:
        while chunk := list(itertools.islice(items, config.batch_size)):
            batch = prepare_batch([image for _, _, image in chunk], size, tiling)
            features = model(torch.from_numpy(np.asarray(batch.images)).to(device)).cpu().numpy()
            yield [(index, version) for index, version, _ in chunk], batch, features
            advance(len(chunk))


def fit_bank_of(model: torch.nn.Module, paths: Sequence[Path], config: PatchCoreConfig, progress: Progress) -> FittedBank:
    """The coreset bank of `model`'s patch features of the images at `paths` and their bank copies (any model from uint8
    images to (N, C, h, w))."""
    if config.nuisance.share and config.nuisance.bank_copies:
        return bank_of_versions(_per_image(model, paths, config, progress, "features", None, bank_only=True), config,
                                str(next(model.parameters()).device))
    batches = ((len(batch.tiles) or len(batch.images), features)
               for _, batch, features in _version_batches(model, paths, config, progress, "features", bank_only=True))
    device = str(next(model.parameters()).device)
    return fit_bank(batches, len(paths) * (1 + config.nuisance.bank_copies), config.coreset_fraction, config.coreset_count,
                    config.projection_dim, config.seed, device)


def bank_of_versions(per_image: Sequence[Sequence[tuple[Batch, np.ndarray]]], config: PatchCoreConfig, device: str) -> FittedBank:
    """The bank of each image's features and its bank copies' (versions 1..bank), from `_per_image`'s lists.

    With `nuisance.share`, the images' features keep the model's coreset rule and the copies' go through a coreset of
    that fraction of their own (a few copy rows cover what compression adds without accepting relit texture as good);
    without it, one coreset of all of them, as before the share existed.
    """
    used = 1 + config.nuisance.bank_copies
    def batches(versions: slice):
        return ((features.shape[0], features) for per in per_image for _, features in per[versions])
    if not (config.nuisance.share and used > 1):
        return fit_bank(batches(slice(0, used)), len(per_image) * used, config.coreset_fraction, config.coreset_count,
                        config.projection_dim, config.seed, device)
    own = fit_bank(batches(slice(0, 1)), len(per_image), config.coreset_fraction, config.coreset_count, config.projection_dim,
                   config.seed, device)
    copies = fit_bank(batches(slice(1, used)), len(per_image) * (used - 1), config.nuisance.share, None, config.projection_dim,
                      config.seed + 1, device)
    return FittedBank(np.concatenate([own.features, copies.features]), max(own.radius, copies.radius), own.seen + copies.seen,
                      own.grid, own.coreset_s + copies.coreset_s, copies.seen, int(copies.features.shape[0]))


def split_holdout(paths: Sequence[Path], config: PatchCoreConfig) -> tuple[list[Path], list[Path]]:
    """Good images for the bank, and good images held out of it (none by default: cross-calibration needs none)."""
    paths = list(paths)
    if len(paths) < 2:
        raise DataError(f"training needs at least 2 good images (to calibrate the threshold), found {len(paths)}")
    n_holdout = 0 if config.holdout_fraction == 0 else max(1, round(config.holdout_fraction * len(paths)))
    n_holdout = min(n_holdout, len(paths) - 2)  # cross-calibration needs two bank images
    order = np.random.default_rng(config.seed).permutation(len(paths))
    holdout = sorted(order[:n_holdout])
    bank = sorted(order[n_holdout:])
    return [paths[i] for i in bank], [paths[i] for i in holdout]


def _per_image(model: PatchFeatureModel, paths: Sequence[Path], config: PatchCoreConfig, progress: Progress, label: str,
               shapes: list | None, bank_only: bool = False) -> list[list[tuple[Batch, np.ndarray]]]:
    """Per image, per version (the image, then its nuisance copies): its layout (one frame; its tiles when tiling)
    and its features (T, C, h, w), extracted once."""
    out: list[list[tuple[Batch, np.ndarray]]] = [[] for _ in paths]
    for keys, batch, features in _version_batches(model, paths, config, progress, label, shapes, bank_only=bank_only):
        if not batch.tiles:
            items = [(Batch(np.empty(0, np.uint8)), features[i : i + 1]) for i in range(features.shape[0])]
        else:
            items = [(Batch(np.empty(0, np.uint8), [(0, count, origins, hw)]), features[first : first + count])
                     for first, count, origins, hw in batch.tiles]
        for (index, _), item in zip(keys, items):
            out[index].append(item)
    return out


def fit_patchcore(
    train_paths: Sequence[Path],
    config: PatchCoreConfig,
    weights: Path | None = None,
    progress: Progress = silent_progress,
    device: str = "cpu",
) -> TrainedPatchCore:
    """Train on good images: extract once (on `device`), subsample into the bank with the streaming
    coreset (bounded time, on the GPU with CuPy when `device` is one), cross-calibrate the threshold on every image.

    The per-image features are kept for the cross-calibration's fold banks.
    """
    from edgead.kit.training import resolve_device

    torch.manual_seed(config.seed)
    started = time.perf_counter()
    device = resolve_device(device)
    model = build_feature_model(config, weights=weights).to(device)
    bank_paths, holdout_paths = split_holdout(train_paths, config)
    shapes: list = []
    per_image = _per_image(model, bank_paths, config, progress, "features", shapes)
    fitted = bank_of_versions(per_image, config, str(device))  # the images and their bank copies; the rest calibrate only
    model.cpu()  # the artifact's weights and the calibration's eager backend are on the CPU
    subsampled = time.perf_counter()
    trained = TrainedPatchCore(
        config=config,
        model=model,
        bank=fitted.features.astype(np.float16),
        calibration={},
        coreset_radius=fitted.radius,
        n_patch_features=fitted.seen,
        copies_seen=fitted.copies_seen,
        copies_kept=fitted.copies_kept,
        grid=fitted.grid,
        bank_images=[str(p) for p in bank_paths],
        holdout_images=[str(p) for p in holdout_paths],
        image_geometry=ImageGeometry.of(shapes).to_manifest(),
    )
    manifest, members = to_artifact_parts(trained)
    # k-fold cross-calibration through the runtime's kNN head and maps, from the features already extracted
    # (and on the images' nuisance copies: each scored by the bank of the other folds, which holds neither it nor its image)
    outputs = [[ImageOutputs(layout, {FEATURES_OUTPUT: features}) for layout, features in versions] for versions in per_image]
    trained.calibration = calibrate_good_images(manifest, members, trained.graphs, bank_paths, holdout_paths, config, progress, outputs)
    trained.timings_s = {
        "features": subsampled - started - fitted.coreset_s,
        "coreset": fitted.coreset_s,
        "calibration": time.perf_counter() - subsampled,
    }
    return trained


def to_artifact_parts(trained: TrainedPatchCore, method: str = "patchcore") -> tuple[dict, dict[str, bytes]]:
    """The manifest and members of a freshly trained detector (engines are added by export)."""
    from safetensors.torch import save

    cfg = trained.config
    model = trained.model
    images_dir = os.path.commonpath([str(Path(p).resolve().parent) for p in trained.bank_images + trained.holdout_images])
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    h, w = trained.grid
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_by": f"edgead {__version__}",
        "method": method,
        "config": cfg.to_dict(),
        "input": {
            "size_px": [cfg.image_size_px, cfg.image_size_px],
            "color_order": "RGB",
            "dtype": "uint8",
            "layout": "NHWC",
            # applied inside the exported graph: (pixel - mean*255) / (std*255)
            "normalisation": {"mean": list(model.backbone.mean), "std": list(model.backbone.std), "inside_graph": True},
        },
        # whole frames are resized to the input; tiles of tile_px at stride_px when tiling is enabled
        "tiling": {
            "enabled": cfg.tile_px is not None,
            "tile_px": cfg.tile_px or cfg.image_size_px,
            "stride_px": cfg.stride_px or cfg.tile_px or cfg.image_size_px,
        },
        "features": {
            "layout": "NCHW",
            "channels": model.out_channels,
            "grid": list(trained.grid),
            "stride_px": model.stride_px,
            "backbone": cfg.backbone,
            "backbone_channels": list(model.backbone.feature_channels),
        },
        "graphs": {
            MAIN_GRAPH: graph_spec(
                MAIN_GRAPH,
                {"images": (("batch", cfg.image_size_px, cfg.image_size_px, 3), "uint8")},
                {FEATURES_OUTPUT: (("batch", model.out_channels, h, w), "float32")},
            ).to_dict()
        },
        "head": {"name": "knn", "graph": MAIN_GRAPH, "output": FEATURES_OUTPUT},
        "memory_bank": {
            "member": BANK_MEMBER,
            "count": int(trained.bank.shape[0]),
            "dim": int(trained.bank.shape[1]),
            "dtype": "float16",
            "k": cfg.k,
            "coreset_radius": trained.coreset_radius,
            "patch_features_seen": trained.n_patch_features,
            # how `edgead enroll` re-subsamples the bank on the device
            "coreset": {"fraction": cfg.coreset_fraction, "count": cfg.coreset_count, "projection_dim": cfg.projection_dim, "seed": cfg.seed},
            # the bank copies' features (of patch_features_seen) went through a coreset of their own share: enroll applies the
            # model's rule to the images' features and keeps the copies' rows on top (models without it: one rule for all)
            **({"nuisance_copies": {"seen": trained.copies_seen, "kept": trained.copies_kept}} if trained.copies_seen else {}),
        },
        "postprocess": {
            "blur_sigma_px": cfg.blur_sigma_px,
            "upsample": cfg.map_upsample,
            "score_quantile": cfg.score_quantile,
            "image_score": "max of map" if cfg.score_quantile is None else f"quantile {cfg.score_quantile} of map",
            **trained.calibration,
        },
        "weights": {"member": WEIGHTS_MEMBER, "format": "safetensors"},
        "training": {
            # INT8 calibration and per-engine thresholds default to these good images when they are still on this machine
            "images_dir": images_dir,
            "images": [os.path.relpath(Path(p).resolve(), images_dir) for p in trained.bank_images + trained.holdout_images],
            "bank_images": len(trained.bank_images),
            "holdout_images": trained.holdout_images,
            "timings_s": trained.timings_s,
            # frames far from these sizes are scored with a warning (runtime/framecheck.py)
            **({"image_geometry": trained.image_geometry} if trained.image_geometry else {}),
        },
        "engines": [],
    }
    members = {WEIGHTS_MEMBER: save(state), BANK_MEMBER: npy_bytes(trained.bank)}
    return manifest, members


def load_feature_model(artifact: Artifact) -> PatchFeatureModel:
    """Rebuild the eager feature model from an artifact's own config and weights (no hub, no pickle)."""
    from safetensors.torch import load

    config = PatchCoreConfig.from_dict(artifact.manifest["config"])
    model = build_feature_model(config, pretrained=False)
    state = load(artifact.member(artifact.manifest["weights"]["member"]))
    model.load_state_dict(state)
    return model.eval()


class PatchCoreDetector:
    """PatchCore in the detector registry: one `features` graph, the `knn` head."""

    name = "patchcore"
    config_class = PatchCoreConfig

    resumable = False  # one pass, no epochs: nothing to resume

    def fit(
        self, train_paths: Sequence[Path], config: PatchCoreConfig, *, weights: Path | None = None, progress: Progress = silent_progress,
        device: str = "cpu", checkpoint: Path | None = None, resume: Path | None = None,
    ) -> TrainedPatchCore:
        return fit_patchcore(train_paths, config, weights=weights, progress=progress, device=device)

    def load_graphs(self, artifact: Artifact) -> dict[str, PatchFeatureModel]:
        return {MAIN_GRAPH: load_feature_model(artifact)}


DETECTOR = PatchCoreDetector()
