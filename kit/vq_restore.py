"""VQ-VAE restoration detector: discrete codes, a PixelSNAIL prior over their grids, restoration of unlikely codes.

The codes quantise frozen CNN patch features with a k-means codebook (`--latents features`, the image
level's default: kit/vq_features.py) or the pixels, through a VQ-VAE (`--latents pixels`, the paper's).
Training (pixels): the VQ-VAE on random crops (image level) or patches (patch level) of good images, then
the prior on the code grids of the good images under the paper's augmentations (90-degree turns,
flips), both in the shared epoch loop (`--epochs` VQ-VAE epochs, then `--prior-epochs`; `--resume`
continues either stage). With the paper's restoration map (`--anomaly-map restoration`) eta is then
calibrated on held-out good images and copies of them with small synthetic defects (`--eta-defects`);
the likelihood map needs none. The threshold comes from the held-out good images, through the runtime.
Feature latents fit the codebook on the features of the good images under the same turns, then the prior.
Three graphs are exported: encoder (images -> codes), prior (codes -> log-probabilities), decoder
(codes -> images); the runtime's `restoration` head orchestrates them. Feature latents export no decoder:
their encoder also gives each feature's distance to every codeword, and a restored code is scored by its
centre's distance to the feature.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgead import __version__
from edgead.artifact import Artifact
from edgead.graphs import FORMAT_VERSION, graph_spec
from edgead.kit.pixelsnail import PixelSnailPrior, PriorGraph
from edgead.kit.vq_config import PATCH_PX, VQRestoreConfig, build_autoencoder
from edgead.kit.vq_features import FeatureEncoderGraph, FeatureQuantizer, fit_codebook
from edgead.kit.vqvae import VQVAE, DecoderGraph, EncoderGraph, VectorQuantizer, to_unit
from edgead.progress import Progress, silent_progress
from edgead.runtime.images import read_image
from edgead.runtime.nuisance import copies as nuisance_copies
from edgead.runtime.preprocess import stack_batch
from edgead.runtime.tiling import cut_tiles

METHOD = "vq-restore"
WEIGHTS_MEMBER = "weights.safetensors"
PARITY_IMAGES = 8
SAMPLES_PER_IMAGE = 4  # crops (VQ-VAE) or code grids (prior) drawn per training image and epoch
PATCH_GRIDS_PER_IMAGE = 64  # patch level: patches per training image (and turn) kept for the prior


@dataclass
class TrainedVQRestore:
    config: VQRestoreConfig
    vqvae: VQVAE | FeatureQuantizer  # what makes the codes: the VQ-VAE (pixels) or the feature quantizer
    prior: PixelSnailPrior
    parity: np.ndarray
    fit_images: list[str] = field(default_factory=list)
    holdout_images: list[str] = field(default_factory=list)
    codebook: dict = field(default_factory=dict)
    restoration: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    losses: dict = field(default_factory=dict)
    timings_s: dict = field(default_factory=dict)

    @property
    def graphs(self) -> dict[str, torch.nn.Module]:
        return graphs_of(self.vqvae, self.prior)

    @property
    def parity_images(self) -> np.ndarray:
        return self.parity

    def artifact_parts(self) -> tuple[dict, dict[str, bytes]]:
        return to_artifact_parts(self)

    def summary(self, manifest: dict) -> list[str]:
        book, rest, post = manifest["codebook"], manifest["restoration"], manifest["postprocess"]
        cal = rest.get("eta_calibration", {})
        prior_loss = f"prior cross-entropy {self.losses.get('prior', float('nan')):.4f} nats per code"
        if self.config.latents == "features":
            lines = [
                f"codebook: {book['used']} of {book['size']} k-means centres used on the training images (perplexity {book['perplexity']:.1f}), "
                f"over {self.config.backbone} patch features",
                f"code grid {rest['grid'][0]}x{rest['grid'][1]} ({self.config.downsample} px per code); {prior_loss}",
            ]
        else:
            lines = [
                f"codebook: {book['used']} of {book['size']} codes used on the training images (perplexity {book['perplexity']:.1f}; "
                f"{book['restarts']} restarts of unused codes while training)",
                f"code grid {rest['grid'][0]}x{rest['grid'][1]} ({self.config.level} level); VQ-VAE loss {self.losses.get('vqvae', float('nan')):.5f}, {prior_loss}",
            ]
        lines.append(f"nuisance copies: {self.config.nuisance.describe()}")
        if self.config.anomaly_map == "likelihood":
            lines.append(f"anomaly map: -log p of each code under the prior, smoothed {self.config.blur_sigma_px:g} px (no restoration, no eta)")
        elif cal:
            lines.append(
                f"eta {rest['eta']:g}, chosen on {cal['good']} held-out good images and {cal['masked']} masked copies ({cal.get('defects', 'rectangles')}) "
                f"(image AUROC {cal['image_auroc']:.3f}, pixel AUROC {cal['pixel_auroc']:.3f})"
            )
        else:
            lines.append(f"eta {rest['eta']:g} (given)")
        from edgead.runtime.calibration import describe

        how = "likelihood map" if rest.get("map") == "likelihood" else f"{rest['mode']} restoration"
        return lines + [f"{line} ({how})" if i == 0 else line for i, line in enumerate(describe(post))]


def graphs_of(vqvae: VQVAE | FeatureQuantizer, prior: PixelSnailPrior) -> dict[str, torch.nn.Module]:
    """The exported graphs, sharing the trained modules, in eval mode: encoder, prior, and (pixel latents) decoder."""
    if isinstance(vqvae, FeatureQuantizer):
        return {"encoder": FeatureEncoderGraph(vqvae).eval(), "prior": PriorGraph(prior).eval()}
    return {"encoder": EncoderGraph(vqvae).eval(), "prior": PriorGraph(prior).eval(), "decoder": DecoderGraph(vqvae).eval()}


def build_models(config: VQRestoreConfig, pretrained: bool = True) -> tuple[VQVAE | FeatureQuantizer, PixelSnailPrior]:
    """The code model and the prior; `pretrained` False: the backbone of feature latents without its ImageNet weights (to load a model's)."""
    # the code model first, then the prior: pixel models draw their initial weights in the order they always did
    if config.latents == "features":
        from edgead.config import PatchCoreConfig
        from edgead.kit.patchcore import build_feature_model

        # PatchCore's patch features, with its defaults (3x3 neighbourhood, zeros counted at the border)
        features = build_feature_model(PatchCoreConfig(backbone=config.backbone, image_size_px=config.input_px), pretrained=pretrained)
        codes = FeatureQuantizer(features, config.codebook_size, config.downsample // 8).eval()
    else:
        encoder, decoder = build_autoencoder(config)
        codes = VQVAE(encoder, VectorQuantizer(config.codebook_size, config.latent_dim), decoder)
    return codes, PixelSnailPrior(config.codebook_size, config.grid, channels=config.prior_channels, blocks=config.prior_blocks)


def turn(images: np.ndarray, k: int) -> np.ndarray:
    """(N, H, W, ...) -> the k-th of the 8 turns and flips (k < 4: rotations; k >= 4: mirrored, then rotated)."""
    out = images[:, :, ::-1] if k >= 4 else images
    return np.ascontiguousarray(np.rot90(out, k % 4, axes=(1, 2)))


def turns_of(config: VQRestoreConfig) -> tuple[int, ...]:
    return {"dihedral": tuple(range(8)), "flips": (0, 4), "none": (0,)}[config.augment]


def load_training_images(paths: Sequence[str | Path], config: VQRestoreConfig, copies_only: bool = False) -> list[np.ndarray]:
    """Image level: (H, W, 3) uint8 at the input size, as the runtime resizes frames; patch level: frames as they are.

    `copies_only`: the images' nuisance copies (config.nuisance, made at the image's own size) instead of the images.
    """
    images = [read_image(p) for p in paths]
    if copies_only:
        images = [copy for index, image in enumerate(images) for copy in nuisance_copies(image, config.nuisance, config.seed, index)]
        if not images:
            return []
    if config.level == "image":
        return list(stack_batch(images, (config.input_px, config.input_px)))
    return images


def random_crops(images: list[np.ndarray], count: int, size: int, turns: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """`count` random (size, size) crops, each turned or flipped at random: (count, size, size, 3) uint8."""
    crops = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        image = images[int(rng.integers(len(images)))]
        top = int(rng.integers(image.shape[0] - size + 1))
        left = int(rng.integers(image.shape[1] - size + 1))
        crops[i] = turn(image[None, top : top + size, left : left + size], int(rng.choice(turns)))[0]
    return crops


def grid_inputs(images: list[np.ndarray], config: VQRestoreConfig, rng: np.random.Generator) -> np.ndarray:
    """What the prior learns from, before encoding: every training image under every turn (image level),
    or patches cut at the stride from every image, a sample of them per image and turn (patch level)."""
    turns = turns_of(config)
    if config.level == "image":
        stack = np.stack(images)
        return np.concatenate([turn(stack, k) for k in turns])
    chunks = []
    for image in images:
        patches, _ = cut_tiles(image, PATCH_PX, config.patch_stride_px)
        for k in turns:
            pick = rng.choice(len(patches), size=min(PATCH_GRIDS_PER_IMAGE, len(patches)), replace=False)
            chunks.append(turn(patches[np.sort(pick)], k))
    return np.concatenate(chunks)


@torch.inference_mode()
def encode_all(vqvae: VQVAE | FeatureQuantizer, images: np.ndarray, device: torch.device, batch: int = 32) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, h, w) int64 codes, the VQ-VAE (or the feature quantizer) in eval mode."""
    vqvae.eval()
    if isinstance(vqvae, FeatureQuantizer):
        return np.concatenate([vqvae.encode_images(torch.from_numpy(images[s : s + batch]).to(device)).cpu().numpy() for s in range(0, len(images), batch)])
    out = [vqvae.encode(to_unit(torch.from_numpy(images[s : s + batch]).to(device))).cpu().numpy() for s in range(0, len(images), batch)]
    return np.concatenate(out)


def codebook_usage(codes: np.ndarray, size: int) -> dict[str, float]:
    """How many codes the grids use, and the perplexity exp(entropy) of their frequencies."""
    counts = np.bincount(codes.ravel(), minlength=size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return {"used": int((counts > 0).sum()), "perplexity": float(np.exp(-(p * np.log(p)).sum()))}


def parity_inputs(holdout: list[np.ndarray], config: VQRestoreConfig) -> np.ndarray:
    """Up to PARITY_IMAGES inputs of the encoder: held-out images (image level) or patches of them (patch level)."""
    if config.level == "image":
        return np.ascontiguousarray(np.stack(holdout[:PARITY_IMAGES]))
    patches = [cut_tiles(image, PATCH_PX, PATCH_PX)[0][0] for image in holdout[:PARITY_IMAGES]]
    return np.ascontiguousarray(np.stack(patches))


def fit_vq_restore(
    train_paths: Sequence[Path], config: VQRestoreConfig, progress: Progress = silent_progress, device: str = "cpu",
    checkpoint: Path | None = None, resume: Path | None = None,
) -> TrainedVQRestore:
    """Train the VQ-VAE (or fit the feature codebook), then the prior, then calibrate eta and the threshold (kit/vq_calibrate.py)."""
    from edgead.kit.patchcore import split_holdout
    from edgead.kit.training import resolve_device, run_epochs
    from edgead.kit.vq_calibrate import calibrate_detector

    torch.manual_seed(config.seed)
    started = time.perf_counter()
    where = resolve_device(device)
    fit_paths, holdout_paths = split_holdout(train_paths, config)
    fit_images = load_training_images(fit_paths, config)
    holdout_images = load_training_images(holdout_paths, config)
    n_fit = len(fit_images)  # an epoch's steps count the images, not their copies: copies widen what is seen, not for how long
    fit_images += load_training_images(fit_paths, config, copies_only=True)
    vqvae, prior = build_models(config)
    vqvae.to(where)
    prior.to(where)
    features = config.latents == "features"
    optimizers = {"prior": torch.optim.Adam(prior.parameters(), lr=config.learning_rate)}
    if not features:
        optimizers["vqvae"] = torch.optim.Adam(vqvae.parameters(), lr=config.learning_rate)
    steps = max(1, math.ceil(n_fit * SAMPLES_PER_IMAGE / config.batch_size))
    turns = turns_of(config)
    grids: dict[str, np.ndarray] = {}
    losses: dict[str, list[float]] = {"vqvae": [], "prior": []}
    if features:  # the codebook: k-means on the features of every image under every turn; nothing else is trained but the prior
        with progress("codebook (k-means on patch features)", 1) as advance:
            grids["codes"] = torch.from_numpy(fit_codebook(vqvae, grid_inputs(fit_images, config, np.random.default_rng(config.seed)), config.seed))
            advance(1)
        vq_epochs, modules = 0, {"prior": prior}  # the codebook is refitted identically after --resume
    else:
        vq_epochs, modules = config.epochs, {"vqvae": vqvae, "prior": prior}

    def vq_step(rng: np.random.Generator):
        vqvae.train()
        for _ in range(steps):
            x = to_unit(torch.from_numpy(random_crops(fit_images, config.batch_size, config.train_crop_px, turns, rng)).to(where))
            reconstruction, _, commitment = vqvae(x)
            loss = F.mse_loss(reconstruction, x) + config.beta * commitment
            optimizers["vqvae"].zero_grad(set_to_none=True)
            loss.backward()
            optimizers["vqvae"].step()
            losses["vqvae"].append(loss.item())
            yield losses["vqvae"][-1]

    def prior_step(rng: np.random.Generator):
        if "codes" not in grids:  # recomputed identically after --resume: the VQ-VAE is final by now
            grids["codes"] = torch.from_numpy(encode_all(vqvae, grid_inputs(fit_images, config, np.random.default_rng(config.seed)), where))
        codes = grids["codes"]
        prior.train()
        for _ in range(steps):
            batch = codes[torch.from_numpy(rng.integers(0, len(codes), config.batch_size))].to(where)
            loss = F.cross_entropy(prior(batch), batch)
            optimizers["prior"].zero_grad(set_to_none=True)
            loss.backward()
            optimizers["prior"].step()
            losses["prior"].append(loss.item())
            yield losses["prior"][-1]

    def step(epoch: int, rng: np.random.Generator):
        return vq_step(rng) if epoch < vq_epochs else prior_step(rng)

    run_epochs(
        step, steps, vq_epochs + config.prior_epochs, seed=config.seed, method=METHOD, config=config.to_dict(),
        modules=modules, optimizers=optimizers, checkpoint=checkpoint, resume=resume, progress=progress,
    )
    trained_at = time.perf_counter()
    vqvae.cpu().eval()
    prior.cpu().eval()
    if features:  # the codes of the images as they are (turn 0 comes first in grid_inputs)
        usage = codebook_usage(grids["codes"][: len(fit_images)].numpy(), config.codebook_size)
    else:
        usage = codebook_usage(encode_all(vqvae, np.stack(fit_images) if config.level == "image" else grid_inputs(fit_images, config, np.random.default_rng(config.seed)), torch.device("cpu")), config.codebook_size)
    trained = TrainedVQRestore(
        config=config, vqvae=vqvae, prior=prior, parity=parity_inputs(holdout_images, config),
        fit_images=[str(p) for p in fit_paths], holdout_images=[str(p) for p in holdout_paths],
        codebook={"size": config.codebook_size, "dim": vqvae.codebook.shape[1] if features else config.latent_dim, **usage,
                  "restarts": 0 if features else int(vqvae.quantizer.restarts)},
        losses={name: float(np.mean(values[-steps:])) if values else float("nan") for name, values in losses.items()},
    )
    calibrate_detector(trained, holdout_images, progress)
    trained.timings_s = {"train": trained_at - started, "calibration": time.perf_counter() - trained_at}
    return trained


def to_artifact_parts(trained: TrainedVQRestore) -> tuple[dict, dict[str, bytes]]:
    """The manifest and members (weights) of a trained detector; engines are added by export."""
    from safetensors.torch import save

    cfg = trained.config
    size, (h, w), k = cfg.input_px, cfg.grid, cfg.codebook_size
    state = {f"vqvae.{n}": t.detach().contiguous() for n, t in trained.vqvae.state_dict().items()}
    state.update({f"prior.{n}": t.detach().contiguous() for n, t in trained.prior.state_dict().items()})
    patch = cfg.level == "patch"
    restoration = {
        "level": cfg.level, "grid": [h, w], "codebook_size": k, "eta": cfg.eta if cfg.eta is not None else 5e-4,
        "passes": cfg.passes, "mode": cfg.restoration, "resample": cfg.resample, "seed": cfg.seed,
        "chunk": 64 if patch else 8, "bilateral": cfg.bilateral, "map": cfg.anomaly_map, "latents": cfg.latents, **trained.restoration,
    }
    graphs = {"prior": graph_spec("prior", {"codes": (("batch", h, w), "int64")}, {"log_probs": (("batch", h, w, k), "float32")}).to_dict()}
    images_in = {"images": (("batch", size, size, 3), "uint8")}
    if cfg.latents == "features":  # no decoder: a code decodes to its centre, and the encoder gives every centre's distance
        graphs["encoder"] = graph_spec("encoder", images_in, {"codes": (("batch", h, w), "int64"), "distances": (("batch", h, w, k), "float32")}).to_dict()
    else:
        graphs["encoder"] = graph_spec("encoder", images_in, {"codes": (("batch", h, w), "int64")}).to_dict()
        graphs["decoder"] = graph_spec("decoder", {"codes": (("batch", h, w), "int64")}, {"images": (("batch", 3, size, size), "float32")}).to_dict()
    images = trained.fit_images + trained.holdout_images
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_by": f"edgead {__version__}",
        "method": METHOD,
        "config": cfg.to_dict(),
        "input": {
            "size_px": [size, size], "color_order": "RGB", "dtype": "uint8", "layout": "NHWC",
            "normalisation": {"scale": 1.0 / 255.0, "inside_graph": True},
        },
        # patch level: 63 px patches at the stride, not resized, maps stitched with overlaps averaged
        "tiling": {"enabled": patch, "tile_px": size, "stride_px": cfg.patch_stride_px if patch else size},
        "graphs": {name: graphs[name] for name in ("encoder", "prior", "decoder") if name in graphs},
        "head": {"name": "restoration", "graph": "encoder", "output": "codes"},
        "restoration": restoration,
        "codebook": trained.codebook,
        "runtime": {"max_batch": 64 if patch else 8},
        "postprocess": {
            # maps on the code grid (likelihood; restoration of features) are upsampled and smoothed here; pixel restoration
            # maps by the head's bilateral filter
            "blur_sigma_px": cfg.blur_sigma_px if cfg.anomaly_map == "likelihood" or cfg.latents == "features" else 0.0,
            "score_quantile": cfg.score_quantile,
            "image_score": "max of map" if cfg.score_quantile is None else f"quantile {cfg.score_quantile} of map",
            **trained.calibration,
        },
        "weights": {"member": WEIGHTS_MEMBER, "format": "safetensors"},
        "training": {
            "images_dir": os.path.commonpath([str(Path(p).resolve().parent) for p in images]) if images else "",
            "fit_images": len(trained.fit_images),
            "holdout_images": trained.holdout_images,
            "losses": trained.losses,
            "timings_s": trained.timings_s,
        },
        "engines": [],
    }
    return manifest, {WEIGHTS_MEMBER: save(state)}


def load_models(artifact: Artifact) -> tuple[VQVAE | FeatureQuantizer, PixelSnailPrior]:
    """Rebuild the VQ-VAE and the prior from an artifact's own config and weights (no pickle)."""
    from safetensors.torch import load

    config = VQRestoreConfig.from_dict(artifact.manifest["config"])
    vqvae, prior = build_models(config, pretrained=False)
    state = load(artifact.member(artifact.manifest["weights"]["member"]))
    vqvae.load_state_dict({n[6:]: t for n, t in state.items() if n.startswith("vqvae.")})
    prior.load_state_dict({n[6:]: t for n, t in state.items() if n.startswith("prior.")})
    return vqvae.eval(), prior.eval()


class VQRestoreDetector:
    """The VQ-VAE restoration detector in the registry: encoder, prior and decoder graphs, the `restoration` head."""

    name = METHOD
    config_class = VQRestoreConfig
    resumable = True

    def fit(
        self, train_paths: Sequence[Path], config: VQRestoreConfig, *, weights: Path | None = None, progress: Progress = silent_progress,
        device: str = "cpu", checkpoint: Path | None = None, resume: Path | None = None,
    ) -> TrainedVQRestore:
        if weights is not None:
            from edgead.errors import ConfigError

            raise ConfigError("--weights does not apply to --method vq-restore: it trains from scratch")
        return fit_vq_restore(train_paths, config, progress, device, checkpoint, resume)

    def load_graphs(self, artifact: Artifact) -> dict[str, torch.nn.Module]:
        return graphs_of(*load_models(artifact))


DETECTOR = VQRestoreDetector()
