"""The patch-wise auto-encoder (Cui, Liu, Lian, ICIP 2023, arXiv 2308.00429): learned, compressed patch features.

Encoder: PatchCore's feature model (backbone stages fused, reflect padding), then two 1x1 convolutions with a
ReLU between them that compress c1 + c2 channels to c3. The paper puts a ReLU after the second one too; here
that output ReLU died during training (on demo gravel 59 of 64 channels were zero everywhere and 3674 of the
3686 bank rows were all-zero vectors), so the compressed feature is linear: no channel can die. Decoder (training only): 1x1 conv, ReLU, 1x1 conv to
stride x stride x 3 values, so that every feature vector reconstructs its own image patch and no other.
It trains on good images with CutPaste defects pasted in, under the paper's hybrid loss; then the
compressed features of the good images go through the coreset into the memory bank and the `knn`
head scores exactly as for PatchCore. The exported `features` graph is the encoder alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgead.artifact import Artifact
from edgead.config import PatchwiseAEConfig
from edgead.errors import ConfigError
from edgead.graphs import MAIN_GRAPH
from edgead.kit.cutpaste import CutPaste
from edgead.kit.eager import calibrate_good_images
from edgead.kit.features import PatchFeatureModel
from edgead.kit.patchcore import TrainedPatchCore, build_feature_model, fit_bank_of, split_holdout, tiling_of, to_artifact_parts
from edgead.kit.training import resolve_device, run_epochs
from edgead.progress import Progress, silent_progress
from edgead.runtime.images import read_image
from edgead.runtime.nuisance import augment, copy_rng
from edgead.runtime.predictor import prepare_batch

METHOD = "patchwise-ae"
# patch-normalised loss: variance floor in normalised pixel units, so that flat patches (quantisation noise) are not blown up
NORM_EPS = 1e-3


class PatchwiseEncoder(nn.Module):
    """uint8 RGB images (N, H, W, 3) -> compressed patch features (N, c3, H/8, W/8) float32: the exported graph."""

    def __init__(self, features: PatchFeatureModel, compressed_dim: int, init: str = "random") -> None:
        super().__init__()
        self.features = features
        c = features.out_channels
        if init == "auto":  # identity where the widths allow it
            init = "identity" if compressed_dim == c else "random"
        if init == "identity" and compressed_dim != c:
            raise ConfigError(f"--compress-init identity needs --compressed-dim {c} (the backbone's channels), got {compressed_dim}")
        hidden = 2 * c if init == "identity" else (c + compressed_dim) // 2
        self.compress = nn.Sequential(nn.Conv2d(c, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, compressed_dim, 1))
        if init == "identity":
            # relu(x) - relu(-x) = x: the compression starts as PatchCore's feature, and training moves it from there
            eye = torch.eye(c)[:, :, None, None]
            with torch.no_grad():
                self.compress[0].weight.copy_(torch.cat([eye, -eye]))
                self.compress[2].weight.copy_(torch.cat([eye, -eye], dim=1))
                self.compress[0].bias.zero_()
                self.compress[2].bias.zero_()
        self.out_channels = compressed_dim
        self.stride_px = features.stride_px

    @property
    def backbone(self) -> nn.Module:
        return self.features.backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.compress(self.features(images))

    def normalised(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> the pixels the backbone sees, (N, 3, H, W) float: what the decoder reconstructs."""
        x = images.to(self.features.mean_255.dtype).permute(0, 3, 1, 2)
        return (x - self.features.mean_255) / self.features.std_255

    def train(self, mode: bool = True) -> PatchwiseEncoder:
        # the backbone's BatchNorm keeps its ImageNet statistics: batches of a few images would only add noise to them
        super().train(mode)
        self.features.backbone.eval()
        return self


class PatchDecoder(nn.Module):
    """Compressed features (N, c3, h, w) -> pixels (N, 3, h*s, w*s): vector (i, j) decodes patch (i, j) alone."""

    def __init__(self, compressed_dim: int, hidden: int, stride_px: int) -> None:
        super().__init__()
        self.stride_px = stride_px
        self.net = nn.Sequential(nn.Conv2d(compressed_dim, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 3 * stride_px * stride_px, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # 1x1 convolutions never mix cells, and pixel_shuffle puts cell (i, j)'s s*s*3 values on patch (i, j)
        return F.pixel_shuffle(self.net(features), self.stride_px)


def patches(images: torch.Tensor, stride_px: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N, H/s, W/s, 3*s*s): the pixels of each patch, one row per feature cell."""
    n, c, height, width = images.shape
    s = stride_px
    x = images.reshape(n, c, height // s, s, width // s, s)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(n, height // s, width // s, c * s * s)


def hybrid_loss(reconstruction: torch.Tensor, target: torch.Tensor, stride_px: int, alpha: float) -> torch.Tensor:
    """alpha * L2 between patch-normalised pixels + (1 - alpha) * L2 between raw pixels (the paper's eq. 3), as means."""
    rec, tgt = patches(reconstruction, stride_px), patches(target, stride_px)
    raw = F.mse_loss(rec, tgt)
    if alpha == 0:
        return raw

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(dim=-1, keepdim=True)) / torch.sqrt(x.var(dim=-1, keepdim=True) + NORM_EPS)

    return alpha * F.mse_loss(norm(rec), norm(tgt)) + (1 - alpha) * raw


def build_encoder(config: PatchwiseAEConfig, weights: Path | None = None, pretrained: bool = True) -> PatchwiseEncoder:
    return PatchwiseEncoder(build_feature_model(config, weights=weights, pretrained=pretrained), config.compressed_dim, config.compress_init).eval()


@dataclass
class TrainedPatchwiseAE(TrainedPatchCore):
    """PatchCore's trained parts with the compressing encoder as the model, and the training losses per epoch."""

    losses: list[float] = field(default_factory=list)

    def artifact_parts(self) -> tuple[dict, dict[str, bytes]]:
        manifest, members = to_artifact_parts(self, method=METHOD)
        manifest["features"].update(compressed_from=self.model.features.out_channels, decoder="training only, not stored")
        manifest["training"].update(
            epoch_losses=self.losses,
            backbone="frozen" if self.config.freeze_backbone else "fine-tuned",
            # channels that do not vary over the bank carry nothing to tell patches apart: a sign of a collapsed encoder
            constant_bank_channels=int((np.ptp(self.bank.astype(np.float32), axis=0) == 0).sum()) if len(self.bank) else 0,
        )
        return manifest, members

    def summary(self, manifest: dict) -> list[str]:
        losses = ", ".join(f"{x:.4f}" for x in self.losses)
        features = manifest["features"]
        return [
            f"encoder: {features['compressed_from']} -> {features['channels']} channels per {features['stride_px']} px patch, "
            f"backbone {manifest['training']['backbone']}; loss per epoch {losses}",
            *([f"warning: {manifest['training']['constant_bank_channels']} of {features['channels']} channels are constant over the bank; "
               "try a lower --lr"] if manifest["training"]["constant_bank_channels"] else []),
            *super().summary(manifest),
        ]


def fit_patchwise_ae(
    train_paths: Sequence[Path],
    config: PatchwiseAEConfig,
    *,
    weights: Path | None = None,
    progress: Progress = silent_progress,
    device: str = "cpu",
    checkpoint: Path | None = None,
    resume: Path | None = None,
) -> TrainedPatchwiseAE:
    """Train the auto-encoder on good images with CutPaste defects, then build the bank and calibrate as PatchCore does."""
    where = resolve_device(device)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    encoder = build_encoder(config, weights=weights).to(where)
    decoder = PatchDecoder(config.compressed_dim, config.decoder_dim, encoder.stride_px).to(where)
    bank_paths, holdout_paths = split_holdout(train_paths, config)  # held-out images stay unseen by training too
    losses = train_autoencoder(encoder, decoder, bank_paths, config, where, progress, checkpoint, resume)
    trained_at = time.perf_counter()
    encoder.eval()
    fitted = fit_bank_of(encoder, bank_paths, config, progress)
    encoder.cpu()  # the artifact's weights and the calibration's eager backend are on the CPU
    subsampled = time.perf_counter()
    trained = TrainedPatchwiseAE(
        config=config,
        model=encoder,
        bank=fitted.features.astype(np.float16),
        calibration={},
        coreset_radius=fitted.radius,
        n_patch_features=fitted.seen,
        copies_seen=fitted.copies_seen,
        copies_kept=fitted.copies_kept,
        grid=fitted.grid,
        bank_images=[str(p) for p in bank_paths],
        holdout_images=[str(p) for p in holdout_paths],
        losses=losses,
    )
    manifest, members = trained.artifact_parts()
    trained.calibration = calibrate_good_images(manifest, members, trained.graphs, bank_paths, holdout_paths, config, progress)
    trained.timings_s = {
        "training": trained_at - started,
        "features": subsampled - trained_at - fitted.coreset_s,
        "coreset": fitted.coreset_s,
        "calibration": time.perf_counter() - subsampled,
    }
    return trained


def train_autoencoder(
    encoder: PatchwiseEncoder,
    decoder: PatchDecoder,
    paths: Sequence[Path],
    config: PatchwiseAEConfig,
    device: torch.device,
    progress: Progress,
    checkpoint: Path | None,
    resume: Path | None,
) -> list[float]:
    """`config.epochs` epochs of the hybrid loss over CutPaste-augmented good images; the loss of each epoch."""
    if config.freeze_backbone:
        encoder.backbone.requires_grad_(False)
        groups = [{"params": [*encoder.compress.parameters(), *decoder.parameters()], "lr": config.lr}]
    else:
        groups = [
            {"params": [*encoder.compress.parameters(), *decoder.parameters()], "lr": config.lr},
            {"params": list(encoder.backbone.parameters()), "lr": config.backbone_lr},
        ]
    optimizer = torch.optim.Adam(groups)
    cutpaste = CutPaste(config.cutpaste_probability, config.cutpaste_shape, config.cutpaste_area)
    size = (config.image_size_px, config.image_size_px)
    tiling = tiling_of(config)
    paths = list(paths)
    # a tile larger than the images is a one-line error now, not after the first epoch's progress line
    prepare_batch([read_image(paths[0])], size, tiling)

    def step(epoch: int, rng: np.random.Generator):
        order = rng.permutation(len(paths))
        for start in range(0, len(paths), config.batch_size):
            images = [_version(read_image(paths[i]), int(i), config, rng) for i in order[start : start + config.batch_size]]
            inputs = prepare_batch(images, size, tiling).images  # tiles, when the model is tiled
            augmented = np.stack([cutpaste(image, rng)[0] for image in inputs])
            x = torch.from_numpy(augmented).to(device)
            loss = hybrid_loss(decoder(encoder(x)), encoder.normalised(x), encoder.stride_px, config.loss_alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            yield loss.item()

    # how many epochs to run is not part of what a checkpoint was trained with: a run may be resumed for longer
    settings = {k: v for k, v in config.to_dict().items() if k != "epochs"}
    state = run_epochs(
        step, math.ceil(len(paths) / config.batch_size), config.epochs, seed=config.seed, method=METHOD, config=settings,
        modules={"encoder": encoder, "decoder": decoder}, optimizers={"adam": optimizer}, checkpoint=checkpoint,
        resume=resume, progress=progress,
    )
    encoder.requires_grad_(False)
    return state.losses


def _version(image: np.ndarray, index: int, config: PatchwiseAEConfig, rng: np.random.Generator) -> np.ndarray:
    """The image or one of its nuisance copies (the calibration's too), drawn at random: each epoch sees one version of each image."""
    if not config.nuisance.active:
        return image  # no draw: the epochs' random stream stays that of a model trained without copies
    version = int(rng.integers(0, 1 + config.nuisance.copies))
    return image if version == 0 else augment(image, config.nuisance, copy_rng(config.seed, index, version - 1))


def load_encoder(artifact: Artifact) -> PatchwiseEncoder:
    """Rebuild the eager encoder from an artifact's own config and weights (no hub, no pickle)."""
    from safetensors.torch import load

    config = PatchwiseAEConfig.from_dict(artifact.manifest["config"])
    encoder = build_encoder(config, pretrained=False)
    encoder.load_state_dict(load(artifact.member(artifact.manifest["weights"]["member"])))
    return encoder.eval()


class PatchwiseAEDetector:
    """The patch-wise auto-encoder in the detector registry: one `features` graph (the encoder), the `knn` head."""

    name = METHOD
    config_class = PatchwiseAEConfig
    resumable = True

    def fit(
        self, train_paths: Sequence[Path], config: PatchwiseAEConfig, *, weights: Path | None = None, progress: Progress = silent_progress,
        device: str = "cpu", checkpoint: Path | None = None, resume: Path | None = None,
    ) -> TrainedPatchwiseAE:
        return fit_patchwise_ae(train_paths, config, weights=weights, progress=progress, device=device, checkpoint=checkpoint, resume=resume)

    def load_graphs(self, artifact: Artifact) -> dict[str, PatchwiseEncoder]:
        return {MAIN_GRAPH: load_encoder(artifact)}


DETECTOR = PatchwiseAEDetector()
