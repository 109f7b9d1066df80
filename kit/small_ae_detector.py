"""The small patch auto-encoder as a detector (`edgead train --method small-ae`): training, scorers, artifact.

Good images are resized to `image_size_px`; the auto-encoder learns to reconstruct random 63x63 patches of
them (flips and 90-degree turns as augmentation, L2 or L2 + SSIM loss) in the shared training loop. At run
time every frame is cut into patches at `patch_stride_px`; the exported `patch` graph returns each patch's
squared error map and latent code. Two scorers can be stored: `reconstruction` (the error map) and
`support` (a one-class SVM on the latent codes of good patches). Each is calibrated on held-out good images.
"""

from __future__ import annotations

import copy
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
from edgead.kit.small_ae import LATENT_SHAPE, PATCH_PX, PatchGraph, SmallAutoEncoder, parameter_count, to_unit
from edgead.kit.svm import FittedSVM, fit_one_class_svm
from edgead.kit.training import resolve_device, run_epochs
from edgead.progress import Progress, silent_progress
from edgead.runtime.images import read_image
from edgead.runtime.nuisance import with_copies
from edgead.runtime.calibration import describe
from edgead.runtime.preprocess import stack_batch
from edgead.runtime.tiling import tile_origins

METHOD = "small-ae"
GRAPH = "patch"
WEIGHTS_MEMBER = "weights.safetensors"
SVM_VECTORS_MEMBER = "svm_support_vectors.npy"
SVM_COEF_MEMBER = "svm_dual_coef.npy"
PARITY_IMAGES = 3  # frames (each ~700 patches at the default stride) stored to check engines on
HEAD_OUTPUTS = {"reconstruction": "error", "support": "latent"}


@dataclass
class TrainedSmallAE:
    """What training produced: the auto-encoder, the SVM (if the support scorer was asked for), calibrations."""

    config: SmallAEConfig
    autoencoder: SmallAutoEncoder
    svm: FittedSVM | None
    calibrations: dict[str, dict[str, float]]
    losses: list[float]
    train_images: list[str] = field(default_factory=list)
    holdout_images: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def graphs(self) -> dict[str, PatchGraph]:
        return {GRAPH: PatchGraph(self.autoencoder).eval()}

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
            f"nuisance copies: {self.config.nuisance.describe()}",
        ]
        if self.svm is not None:
            lines.append(
                f"support scorer: one-class SVM, {self.svm.support_vectors.shape[0]} support vectors of {self.svm.samples} "
                f"latent codes (nu {self.svm.nu}, gamma {self.svm.gamma:.3g})"
            )
        for name in self.config.scorers:
            default = " (default)" if name == self.config.scorers[0] else ""
            lines += [f"[{name}]{default} {line}" for line in describe(self.calibrations[name])]
        return lines


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
    coords = torch.arange(window_px, dtype=x.dtype, device=x.device) - (window_px - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma_px**2))
    g = g / g.sum()
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
    frames = load_frames(train_paths, config.image_size_px, config.nuisance, config.seed)  # training patches come from copies too
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
    trained_at = time.perf_counter()
    svm = None
    if "support" in config.scorers:
        rng = np.random.default_rng([config.seed, 7919])  # its own stream: the SVM's sample does not depend on the epochs
        codes = latent_codes(autoencoder, random_patches(frames, config.svm_patches, rng, augment=False))
        with progress("one-class SVM", 1) as advance:
            svm = fit_one_class_svm(codes, config.svm_nu)
            advance(1)
    fitted_at = time.perf_counter()
    trained = TrainedSmallAE(
        config=config, autoencoder=autoencoder, svm=svm, calibrations={}, losses=state.losses,
        train_images=[str(p) for p in train_paths], holdout_images=[str(p) for p in holdout_paths],
    )
    # each scorer scored as deployed (the runtime's patches, head and maps) on held-out good images
    manifest, members = to_artifact_parts(trained)
    for name in config.scorers:
        trained.calibrations[name] = calibrate_good_images(
            scorer_manifest(manifest, name), members, trained.graphs, train_paths, holdout_paths, config, progress
        )
    trained.timings_s = {"training": trained_at - started, "svm": fitted_at - trained_at, "calibration": time.perf_counter() - fitted_at}
    return trained


def scorer_manifest(manifest: dict, name: str) -> dict:
    """`manifest` with scorer `name` as its head (as the runtime's --scorer sees it)."""
    manifest = copy.deepcopy(manifest)
    manifest["head"] = manifest["scorers"][name]["head"]
    manifest["postprocess"].update(manifest["scorers"][name].get("postprocess", {}))
    return manifest


def to_artifact_parts(trained: TrainedSmallAE) -> tuple[dict, dict[str, bytes]]:
    """The manifest and members of a freshly trained small-ae (engines are added by export)."""
    from safetensors.torch import save

    cfg = trained.config
    state = {name: tensor.detach().contiguous() for name, tensor in trained.autoencoder.state_dict().items()}
    scorers = {}
    for name in cfg.scorers:
        scorers[name] = {"head": {"name": name, "graph": GRAPH, "output": HEAD_OUTPUTS[name]}}
        if name in trained.calibrations:
            scorers[name]["postprocess"] = trained.calibrations[name]
    default = cfg.scorers[0]
    size = cfg.image_size_px
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_by": f"edgead {__version__}",
        "method": METHOD,
        "config": cfg.to_dict(),
        "input": {
            "size_px": [PATCH_PX, PATCH_PX],
            # frames are resized to frame_px, then cut into size_px patches (tiling below)
            "frame_px": [size, size],
            "color_order": "RGB",
            "dtype": "uint8",
            "layout": "NHWC",
            # applied inside the exported graph: pixel / 255
            "normalisation": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "inside_graph": True},
        },
        "tiling": {"enabled": True, "patches": True, "tile_px": PATCH_PX, "stride_px": cfg.patch_stride_px},
        "graphs": {
            GRAPH: graph_spec(
                GRAPH,
                {"patches": (("batch", PATCH_PX, PATCH_PX, 3), "uint8")},
                {"error": (("batch", PATCH_PX, PATCH_PX), "float32"), "latent": (("batch", *LATENT_SHAPE), "float32")},
            ).to_dict()
        },
        "head": scorers[default]["head"],
        "scorers": scorers,
        "postprocess": {
            "blur_sigma_px": cfg.blur_sigma_px,
            "score_quantile": cfg.score_quantile,
            "image_score": "max of map" if cfg.score_quantile is None else f"quantile {cfg.score_quantile} of map",
            # the patches' maps are accumulated into the frame's map (overlaps averaged), then smoothed once
            "smooth": "frame",
            "image_threshold": float("inf"),  # replaced by the default scorer's calibration
            **trained.calibrations.get(default, {}),
        },
        "runtime": {"max_batch": 256},  # patches are small: large engine batches
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
    if trained.svm is not None:
        svm = trained.svm
        manifest["svm"] = {
            "kernel": "rbf",
            "support_vectors": {"member": SVM_VECTORS_MEMBER, "dtype": "float32"},
            "dual_coef": {"member": SVM_COEF_MEMBER, "dtype": "float64"},
            "gamma": svm.gamma,
            "offset": svm.offset,
            "count": int(svm.support_vectors.shape[0]),
            "dim": int(svm.support_vectors.shape[1]),
            "nu": svm.nu,
            "fitted_on": svm.samples,
        }
        members[SVM_VECTORS_MEMBER] = npy_bytes(svm.support_vectors)
        members[SVM_COEF_MEMBER] = npy_bytes(svm.dual_coef)
    return manifest, members


def load_autoencoder(artifact: Artifact) -> SmallAutoEncoder:
    """The eager auto-encoder from an artifact's own weights (no pickle)."""
    from safetensors.torch import load

    autoencoder = SmallAutoEncoder()
    autoencoder.load_state_dict(load(artifact.member(artifact.manifest["weights"]["member"])))
    return autoencoder.eval()


class SmallAEDetector:
    """The small patch auto-encoder in the detector registry: one `patch` graph, `reconstruction` and `support` heads."""

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

    def load_graphs(self, artifact: Artifact) -> dict[str, PatchGraph]:
        return {GRAPH: PatchGraph(load_autoencoder(artifact)).eval()}


DETECTOR = SmallAEDetector()
