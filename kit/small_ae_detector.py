"""The small patch auto-encoder as a detector (`edgead train --method small-ae`): training, scorers, artifact.

Good images are resized to `image_size_px`; the auto-encoder learns to reconstruct random 63x63 patches of
them (flips and 90-degree turns as augmentation, L2 or L2 + SSIM loss) in the shared training loop. Two ways
to run it are stored (runtime/inference.py): `dense`, each frame through the `dense` graph once (error map
of the frame, latent grid from which the support head reads every patch's code), and `patches`, every frame
cut into patches at `patch_stride_px` for the `patch` graph (each patch's error map and latent code). Two
scorers can be stored: `reconstruction` (the error map) and `support` (a one-class SVM on the latent codes
of good patches). Each scorer is calibrated in each mode on held-out good images.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgead import __version__
from edgead.artifact import Artifact, npy_bytes
from edgead.config import NuisanceConfig, SmallAEConfig
from edgead.graphs import FORMAT_VERSION, graph_spec
from edgead.kit.eager import calibrate_good_images
from edgead.kit.patchcore import split_holdout
from edgead.kit.small_ae import (
    LATENT_CHANNELS, LATENT_PX, LATENT_SHAPE, LATENT_STEP_PX, PATCH_PX, TEXTURE_EPS, DenseGraph, ErrorSettings, PatchGraph, SmallAutoEncoder,
    dense_latent_px, gaussian_taps, parameter_count, to_unit,
)
from edgead.kit.svm import FittedSVM, fit_one_class_svm
from edgead.kit.training import resolve_device, run_epochs
from edgead.progress import Progress, silent_progress
from edgead.runtime.images import read_image
from edgead.runtime.nuisance import with_copies
from edgead.runtime.calibration import describe
from edgead.runtime.inference import inference_manifest
from edgead.runtime.postprocess import smooth
from edgead.runtime.preprocess import stack_batch
from edgead.runtime.tiling import tile_origins

METHOD = "small-ae"
GRAPH = "patch"
DENSE_GRAPH = "dense"
MODE_GRAPHS = {"dense": DENSE_GRAPH, "patches": GRAPH}
WEIGHTS_MEMBER = "weights.safetensors"
SVM_VECTORS_MEMBER = "svm_support_vectors.npy"
SVM_COEF_MEMBER = "svm_dual_coef.npy"
# the dense mode's SVM, fitted on windows of frames' latent grids: near a patch's border its dense code sees the
# frame where the patch graph's sees zero padding, and an SVM of patch codes scores dense codes out of its support
DENSE_SVM_SECTION = "dense_svm"
# the cells of each patch's 17x17 window that the dense SVM takes: (first cell, side). A border cell's 15 px receptive
# field reaches 8 px past the patch (4 px for the next cells in): on the whole window the dense SVM lost 0.039 pixel
# AUROC to stride-based patches on seed-1 brick; on cells 1-15 0.007 (README "Dense inference against stride-based
# patches"). Models before it: the whole window (their manifests have no dense_svm.window)
DENSE_SVM_WINDOW = (1, 15)
PARITY_IMAGES = 3  # frames (each ~700 patches at the default stride) stored to check engines on
HEAD_OUTPUTS = {"reconstruction": "error", "support": "latent"}
PATCH_MAX_BATCH = 256  # patches are small: large engine batches
DENSE_MAX_BATCH = 8  # frames (or tiles) per dense engine call: a 256 px frame's activations take about 10 MB


@dataclass
class TrainedSmallAE:
    """What training produced: the auto-encoder, the SVM (if the support scorer was asked for), calibrations."""

    config: SmallAEConfig
    autoencoder: SmallAutoEncoder
    svm: FittedSVM | None
    calibrations: dict[str, dict[str, dict]]  # inference mode -> scorer -> its postprocess calibration
    losses: list[float]
    train_images: list[str] = field(default_factory=list)
    holdout_images: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    dense_svm: FittedSVM | None = None  # the support scorer's SVM in dense mode (codes read off latent grids)
    error: ErrorSettings = ErrorSettings()  # how the graphs compute the error map (fitted on good frames)

    @property
    def graphs(self) -> dict[str, PatchGraph | DenseGraph]:
        return module_graphs(self.autoencoder, self.config.inference_modes, self.error)

    @property
    def parity_images(self) -> np.ndarray:
        """Up to PARITY_IMAGES held-out (else training) good frames, (N, S, S, 3) uint8 at image_size_px."""
        paths = (self.holdout_images or self.train_images)[:PARITY_IMAGES]
        return load_frames(paths, self.config.image_size_px)

    def artifact_parts(self) -> tuple[dict, dict[str, bytes]]:
        return to_artifact_parts(self)

    def summary(self, manifest: dict) -> list[str]:
        training = manifest["training"]
        lines = [
            f"auto-encoder: {training['parameters']:,} parameters, {training['patches_seen']:,} patches seen, "
            f"final loss {self.losses[-1]:.5f}",
            f"patches: {PATCH_PX} px every {self.config.patch_stride_px} px of {self.config.image_size_px} px frames "
            f"({training['patches_per_frame']} per frame)",
            f"nuisance copies: {self.config.nuisance.describe(_copies_role(self.config))}",
            f"error map: {describe_error(self.error)}",
        ]
        first, side = DENSE_SVM_WINDOW
        for what, svm, part in (("patch", self.svm, ""), ("dense", self.dense_svm, f", cells {first}-{first + side - 1} of each {LATENT_PX}x{LATENT_PX} window")):
            if svm is not None:
                lines.append(
                    f"support scorer ({what} codes): one-class SVM, {svm.support_vectors.shape[0]} support vectors of {svm.samples} "
                    f"latent codes{part} (nu {svm.nu}, gamma {svm.gamma:.3g})"
                )
        for mode in self.config.inference_modes:
            for name in self.config.scorers:
                default = " (default)" if (mode, name) == (self.config.inference, self.config.scorers[0]) else ""
                lines += [f"[{mode} {name}]{default} {line}" for line in describe(self.calibrations[mode][name])]
        return lines


def _copies_role(config: SmallAEConfig) -> str:
    if config.train_on_copies:
        return "the auto-encoder trains on them, the held-out images' copies set the threshold"
    return "the held-out images' copies set the threshold; the auto-encoder trains on the images alone"


def describe_error(error: ErrorSettings) -> str:
    """One line on what the graphs' error output is."""
    low = f"squared error low-passed by sigma {error.lowpass_sigma_px:g} px" if error.lowpass_sigma_px > 0 else "per-pixel squared error"
    if error.texture_weight == 0:
        return low
    return f"{low} / {error.lowpass_scale:.3g} + {error.texture_weight:g} x texture (log error energy over sigma {error.texture_sigma_px:g} px, both ways from good frames')"


def module_graphs(autoencoder: SmallAutoEncoder, modes: Sequence[str], error: ErrorSettings = ErrorSettings()) -> dict[str, PatchGraph | DenseGraph]:
    """The exported graphs of the inference `modes`, by graph name, computing the error map as `error` says."""
    make = {DENSE_GRAPH: DenseGraph, GRAPH: PatchGraph}
    return {MODE_GRAPHS[mode]: make[MODE_GRAPHS[mode]](autoencoder, error).eval() for mode in modes}


@torch.inference_mode()
def fit_error_settings(autoencoder: SmallAutoEncoder, frames: np.ndarray, config: SmallAEConfig, batch_size: int = 8) -> ErrorSettings:
    """The error map's settings, its scales and texture reference fitted on good frames (N, S, S, 3) uint8 through the dense graph.

    Each term is scaled by its 99th percentile on the frames (the low-pass term after the map's smoothing); the texture
    reference is the median log energy. Without the texture term nothing is fitted: the low-pass error is used as it is.
    """
    settings = ErrorSettings(lowpass_sigma_px=config.error_sigma_px, texture_sigma_px=config.texture_sigma_px, texture_weight=config.texture_weight)
    if config.texture_weight == 0:
        return dataclasses.replace(settings, texture_sigma_px=0.0)
    dense = DenseGraph(autoencoder.eval(), settings)
    lowpass, log_energy = [], []
    for start in range(0, len(frames), batch_size):
        low, energy = dense.error.parts(*dense.reconstruct(torch.from_numpy(frames[start : start + batch_size]))[:2])
        lowpass += [smooth(m, config.blur_sigma_px) for m in low.numpy()]
        log_energy.append(torch.log(energy + TEXTURE_EPS).numpy())
    logs = np.concatenate(log_energy).ravel()
    log_ref = float(np.median(logs))
    return dataclasses.replace(
        settings,
        lowpass_scale=max(float(np.quantile(np.stack(lowpass), 0.99)), 1e-12),
        texture_log_ref=log_ref,
        texture_scale=max(float(np.quantile(np.abs(logs - log_ref), 0.99)), 1e-6),
    )



def training_frames(paths: Sequence[str | Path], config: SmallAEConfig) -> np.ndarray:
    """The frames training patches are cut from: the images, and their nuisance copies where the auto-encoder trains on them."""
    return load_frames(paths, config.image_size_px, config.nuisance if config.train_on_copies else None, config.seed)


def load_frames(paths: Sequence[str | Path], size_px: int, nuisance: NuisanceConfig | None = None, seed: int = 0) -> np.ndarray:
    """Images at `paths` and their nuisance copies (made at the image's own size) -> (N * (1 + copies), size, size, 3) uint8,
    resized as the runtime resizes frames."""
    nuisance = nuisance or NuisanceConfig(copies=0)
    images = [image for index, path in enumerate(paths) for _, _, image in with_copies([read_image(path)], nuisance, seed, index)]
    return stack_batch(images, (size_px, size_px))


def random_patches(frames: np.ndarray, count: int, rng: np.random.Generator, augment: bool) -> np.ndarray:
    """`count` random 63x63 patches (count, 63, 63, 3) uint8 of `frames`, turned and flipped at random if `augment`."""
    n, height, width, _ = frames.shape
    which = rng.integers(0, n, count)
    rows = rng.integers(0, height - PATCH_PX + 1, count)
    cols = rng.integers(0, width - PATCH_PX + 1, count)
    patches = np.stack([frames[i, r : r + PATCH_PX, c : c + PATCH_PX] for i, r, c in zip(which, rows, cols)])
    if augment:
        turns, flips = rng.integers(0, 4, count), rng.integers(0, 2, count)
        patches = np.stack([np.rot90(p[:, ::-1] if f else p, k) for p, k, f in zip(patches, turns, flips)])
    return np.ascontiguousarray(patches)


def ssim(x: torch.Tensor, y: torch.Tensor, window_px: int = 7, sigma_px: float = 1.5) -> torch.Tensor:
    """Mean structural similarity of (N, C, H, W) images in [0, 1], Gaussian window, per channel."""
    g = gaussian_taps(sigma_px, radius=(window_px - 1) // 2).to(dtype=x.dtype, device=x.device)  # window_px odd
    channels = x.shape[1]
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, window_px, window_px).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))).mean()


def patch_loss(reconstruction: torch.Tensor, x: torch.Tensor, config: SmallAEConfig) -> torch.Tensor:
    """L2 between patch and reconstruction, plus ssim_weight * (1 - SSIM) for loss "ssim"."""
    loss = F.mse_loss(reconstruction, x)
    if config.loss == "ssim":
        loss = loss + config.ssim_weight * (1.0 - ssim(reconstruction, x))
    return loss


@torch.inference_mode()
def latent_codes(autoencoder: SmallAutoEncoder, patches: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, 63, 63, 3) uint8 patches -> (N, 16 * 17 * 17) float32 latent codes, flattened as the support head flattens them."""
    autoencoder.eval()
    codes = [
        autoencoder.encoder(to_unit(torch.from_numpy(patches[start : start + batch_size]))).reshape(-1, int(np.prod(LATENT_SHAPE)))
        for start in range(0, len(patches), batch_size)
    ]
    return torch.cat(codes).numpy().astype(np.float32)


@torch.inference_mode()
def dense_latent_codes(
    autoencoder: SmallAutoEncoder, frames: np.ndarray, count: int, rng: np.random.Generator, batch_size: int = 8,
    window: tuple[int, int] = (0, LATENT_PX),
) -> np.ndarray:
    """`count` codes (count, 16 * side * side) float32 of patches at random 4 px grid positions, read off the frames' dense latent grids.

    Positions are those the dense support head can score: origins a multiple of 4 px, up to the one past the edge.
    `window` (first cell, side): the part of each patch's 17x17 window taken (the whole of it by default).
    """
    autoencoder.eval()
    n, height, width, _ = frames.shape
    first, side = window
    which = rng.integers(0, n, count)
    rows = rng.integers(0, -(-(height - PATCH_PX) // LATENT_STEP_PX) + 1, count) + first
    cols = rng.integers(0, -(-(width - PATCH_PX) // LATENT_STEP_PX) + 1, count) + first
    codes = np.empty((count, LATENT_CHANNELS * side * side), dtype=np.float32)
    dense = DenseGraph(autoencoder)
    for start in range(0, n, batch_size):
        latent = dense(torch.from_numpy(frames[start : start + batch_size]))[1].numpy()
        for k in np.flatnonzero((which >= start) & (which < start + batch_size)):
            r, c = rows[k], cols[k]
            codes[k] = latent[which[k] - start, :, r : r + side, c : c + side].reshape(-1)
    return codes


def fit_small_ae(
    train_paths: Sequence[Path],
    config: SmallAEConfig,
    *,
    progress: Progress = silent_progress,
    device: str = "cpu",
    checkpoint: Path | None = None,
    resume: Path | None = None,
) -> TrainedSmallAE:
    """Train the auto-encoder on random patches of good images, fit the SVM if asked, calibrate every scorer."""
    started = time.perf_counter()
    target = resolve_device(device)
    train_paths, holdout_paths = split_holdout(train_paths, config)
    frames = training_frames(train_paths, config)
    torch.manual_seed(config.seed)
    autoencoder = SmallAutoEncoder().to(target)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=config.lr)
    steps = -(-config.patches_per_epoch // config.batch_size)

    def epoch_steps(epoch: int, rng: np.random.Generator) -> Iterator[float]:
        for _ in range(steps):
            batch = random_patches(frames, config.batch_size, rng, config.augment)
            x = to_unit(torch.from_numpy(batch)).to(target)
            reconstruction, _ = autoencoder(x)
            loss = patch_loss(reconstruction, x, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            yield loss.item()

    state = run_epochs(
        epoch_steps, steps, config.epochs, seed=config.seed, method=METHOD, config=config.to_dict(),
        modules={"autoencoder": autoencoder}, optimizers={"adam": optimizer}, checkpoint=checkpoint, resume=resume,
        progress=progress,
    )
    autoencoder.cpu().eval()
    error = fit_error_settings(autoencoder, frames, config)
    trained_at = time.perf_counter()
    svm = dense_svm = None
    if "support" in config.scorers:
        rng = np.random.default_rng([config.seed, 7919])  # its own stream: the SVM's sample does not depend on the epochs
        codes = latent_codes(autoencoder, random_patches(frames, config.svm_patches, rng, augment=False))
        dense = "dense" in config.inference_modes
        with progress("one-class SVM", 2 if dense else 1) as advance:
            svm = fit_one_class_svm(codes, config.svm_nu)
            advance(1)
            if dense:  # its own stream too: the patch SVM's sample is the one models before dense inference had
                dense_codes = dense_latent_codes(autoencoder, frames, config.svm_patches, np.random.default_rng([config.seed, 7919, 4]), window=DENSE_SVM_WINDOW)
                dense_svm = fit_one_class_svm(dense_codes, config.svm_nu)
                advance(1)
    fitted_at = time.perf_counter()
    trained = TrainedSmallAE(
        config=config, autoencoder=autoencoder, svm=svm, calibrations={}, losses=state.losses,
        train_images=[str(p) for p in train_paths], holdout_images=[str(p) for p in holdout_paths], dense_svm=dense_svm, error=error,
    )
    # each scorer in each mode scored as deployed (the runtime's frames or patches, head and maps) on held-out good images
    manifest, members = to_artifact_parts(trained)
    graphs = trained.graphs
    for mode in config.inference_modes:
        seen = inference_manifest(manifest, mode)
        trained.calibrations[mode] = {}
        for name in config.scorers:
            own = scorer_postprocess(config, mode, name)  # kept beside the calibration: the runtime applies both
            calibration = calibrate_good_images(scorer_manifest(seen, name, own), members, graphs, train_paths, holdout_paths, config, progress)
            trained.calibrations[mode][name] = {**own, **calibration}
    trained.timings_s = {"training": trained_at - started, "svm": fitted_at - trained_at, "calibration": time.perf_counter() - fitted_at}
    return trained


def scorer_postprocess(config: SmallAEConfig, mode: str, name: str) -> dict:
    """The postprocess settings scorer `name` carries in inference `mode` (each scorer its own, so that swapping scorers swaps them).

    Dense support maps are the patches' scores averaged over the pixels each patch covers and not smoothed again, as
    stitched patch scores are in patches mode (one score per patch: the blur of a constant patch map leaves it); every
    other map is smoothed by `blur_sigma_px`. Models before it carry none: the model's blur for every scorer.
    """
    return {"blur_sigma_px": 0.0 if (mode, name) == ("dense", "support") else config.blur_sigma_px}


def scorer_manifest(manifest: dict, name: str, postprocess: dict | None = None) -> dict:
    """`manifest` with scorer `name` as its head (as the runtime's --scorer sees it), and `postprocess` settings of its own."""
    manifest = copy.deepcopy(manifest)
    manifest["head"] = manifest["scorers"][name]["head"]
    manifest["postprocess"].update(manifest["scorers"][name].get("postprocess", {}), **(postprocess or {}))
    return manifest


def mode_sections(cfg: SmallAEConfig, calibrations: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Each inference mode's manifest section (runtime/inference.py): input, tiling, main graph, postprocess, calibrations."""
    size = cfg.image_size_px
    common = {
        "color_order": "RGB",
        "dtype": "uint8",
        "layout": "NHWC",
        # applied inside the exported graph: pixel / 255
        "normalisation": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "inside_graph": True},
    }
    sections = {
        # frames resized to size_px go through the dense graph whole; --tile cuts larger frames into tiles for it instead
        "dense": {
            "input": {"size_px": [size, size], **common},
            "tiling": {"enabled": False, "patches": False, "tile_px": size, "stride_px": size},
            "graph": DENSE_GRAPH,
            "runtime": {"max_batch": DENSE_MAX_BATCH},
            "heads": {"support": {"svm": DENSE_SVM_SECTION}},
        },
        # frames are resized to frame_px, then cut into size_px patches (tiling)
        "patches": {
            "input": {"size_px": [PATCH_PX, PATCH_PX], "frame_px": [size, size], **common},
            "tiling": {"enabled": True, "patches": True, "tile_px": PATCH_PX, "stride_px": cfg.patch_stride_px},
            "graph": GRAPH,
            "runtime": {"max_batch": PATCH_MAX_BATCH},
            "heads": {"support": {"svm": "svm"}},
        },
    }
    return {
        mode: {**sections[mode], "postprocess": {}, "calibrations": calibrations.get(mode, {})} for mode in cfg.inference_modes
    }


def graph_specs_of(cfg: SmallAEConfig) -> dict[str, dict]:
    """The manifest's `graphs`: the dense graph (dynamic height and width in ONNX) and/or the patch graph."""
    size, latent = cfg.image_size_px, dense_latent_px(cfg.image_size_px)
    specs = {
        DENSE_GRAPH: graph_spec(
            DENSE_GRAPH,
            {"frames": (("batch", size, size, 3), "uint8")},
            {"error": (("batch", size, size), "float32"), "latent": (("batch", LATENT_CHANNELS, latent, latent), "float32")},
            dynamic={"frames": {1: "height", 2: "width"}, "error": {1: "height", 2: "width"}, "latent": {2: "latent_height", 3: "latent_width"}},
        ),
        GRAPH: graph_spec(
            GRAPH,
            {"patches": (("batch", PATCH_PX, PATCH_PX, 3), "uint8")},
            {"error": (("batch", PATCH_PX, PATCH_PX), "float32"), "latent": (("batch", *LATENT_SHAPE), "float32")},
        ),
    }
    return {MODE_GRAPHS[mode]: specs[MODE_GRAPHS[mode]].to_dict() for mode in cfg.inference_modes}


def to_artifact_parts(trained: TrainedSmallAE) -> tuple[dict, dict[str, bytes]]:
    """The manifest and members of a freshly trained small-ae (engines are added by export); the top level is the default mode."""
    from safetensors.torch import save

    cfg = trained.config
    state = {name: tensor.detach().contiguous() for name, tensor in trained.autoencoder.state_dict().items()}
    modes = mode_sections(cfg, trained.calibrations)
    top = modes[cfg.inference]
    calibrations = trained.calibrations.get(cfg.inference, {})
    scorers = {}
    for name in cfg.scorers:
        head = {"name": name, "graph": top["graph"], "output": HEAD_OUTPUTS[name], "patch_stride_px": cfg.patch_stride_px}
        scorers[name] = {"head": {**head, **top["heads"].get(name, {})}}
        if name in calibrations:
            scorers[name]["postprocess"] = calibrations[name]
    default = cfg.scorers[0]
    size = cfg.image_size_px
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_by": f"edgead {__version__}",
        "method": METHOD,
        "config": cfg.to_dict(),
        "input": top["input"],
        "tiling": top["tiling"],
        "inference": {"default": cfg.inference, "modes": modes},
        "graphs": graph_specs_of(cfg),
        "head": scorers[default]["head"],
        "scorers": scorers,
        "postprocess": {
            "blur_sigma_px": cfg.blur_sigma_px,
            "score_quantile": cfg.score_quantile,
            "image_score": "max of map" if cfg.score_quantile is None else f"quantile {cfg.score_quantile} of map",
            # the patches' (tiles') maps are smoothed, then accumulated into the frame's map (overlaps averaged). Models before
            # this wrote `smooth: frame`, which no runtime ever read: a smooth-once mode needs a key of its own
            "image_threshold": float("inf"),  # replaced by the default scorer's calibration
            **calibrations.get(default, {}),
        },
        "runtime": top["runtime"],
        # what the graphs' error output is (kit/small_ae.py ErrorSettings); models without it: the per-pixel squared error
        "error_map": trained.error.to_dict(),
        "weights": {"member": WEIGHTS_MEMBER, "format": "safetensors"},
        "training": {
            "images_dir": os.path.commonpath([str(Path(p).resolve().parent) for p in trained.train_images + trained.holdout_images]),
            "train_images": len(trained.train_images),
            "holdout_images": trained.holdout_images,
            "parameters": parameter_count(trained.autoencoder),
            "patches_seen": cfg.epochs * -(-cfg.patches_per_epoch // cfg.batch_size) * cfg.batch_size,
            "patches_per_frame": len(tile_origins(size, size, PATCH_PX, cfg.patch_stride_px)),
            "losses": trained.losses,
            "timings_s": trained.timings_s,
        },
        "engines": [],
    }
    members = {WEIGHTS_MEMBER: save(state)}
    for key, svm, prefix in (("svm", trained.svm, ""), (DENSE_SVM_SECTION, trained.dense_svm, "dense_")):
        if svm is None:
            continue
        manifest[key] = {
            "kernel": "rbf",
            "support_vectors": {"member": prefix + SVM_VECTORS_MEMBER, "dtype": "float32"},
            "dual_coef": {"member": prefix + SVM_COEF_MEMBER, "dtype": "float64"},
            "gamma": svm.gamma,
            "offset": svm.offset,
            "count": int(svm.support_vectors.shape[0]),
            "dim": int(svm.support_vectors.shape[1]),
            "nu": svm.nu,
            "fitted_on": svm.samples,
            "codes": "dense latent grids" if prefix else "patches",
        }
        if prefix:  # the cells of each patch's 17x17 window it was fitted on (the support head reads them so)
            manifest[key]["window"] = {"first_cell": DENSE_SVM_WINDOW[0], "cells": DENSE_SVM_WINDOW[1]}
        members[prefix + SVM_VECTORS_MEMBER] = npy_bytes(svm.support_vectors)
        members[prefix + SVM_COEF_MEMBER] = npy_bytes(svm.dual_coef)
    return manifest, members


def load_autoencoder(artifact: Artifact) -> SmallAutoEncoder:
    """The eager auto-encoder from an artifact's own weights (no pickle)."""
    from safetensors.torch import load

    autoencoder = SmallAutoEncoder()
    autoencoder.load_state_dict(load(artifact.member(artifact.manifest["weights"]["member"])))
    return autoencoder.eval()


class SmallAEDetector:
    """The small patch auto-encoder in the detector registry: `dense` and `patch` graphs, `reconstruction` and `support` heads."""

    name = METHOD
    config_class = SmallAEConfig
    resumable = True

    def fit(
        self, train_paths: Sequence[Path], config: SmallAEConfig, *, weights: Path | None = None, progress: Progress = silent_progress,
        device: str = "cpu", checkpoint: Path | None = None, resume: Path | None = None,
    ) -> TrainedSmallAE:
        if weights is not None:
            from edgead.errors import ConfigError

            raise ConfigError("--weights does not apply to --method small-ae: it trains from scratch; leave it out")
        return fit_small_ae(train_paths, config, progress=progress, device=device, checkpoint=checkpoint, resume=resume)

    def load_graphs(self, artifact: Artifact) -> dict[str, PatchGraph | DenseGraph]:
        """The graphs the manifest lists (models before dense inference: the patch graph alone)."""
        modes = [mode for mode, graph in MODE_GRAPHS.items() if graph in artifact.manifest["graphs"]]
        return module_graphs(load_autoencoder(artifact), modes, ErrorSettings.from_dict(artifact.manifest.get("error_map")))


DETECTOR = SmallAEDetector()
