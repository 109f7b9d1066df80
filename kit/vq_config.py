"""Configuration of the VQ-VAE restoration detector (`edgead train --method vq-restore`), and its two levels' models.

One implementation, two levels: `image` encodes whole frames resized to the input (128 px -> a 16x16
code grid by default, 8 px per code as in the paper; `--image-size 256` gives its 32x32 grid, at
about 4x the cost of the prior and of exact restoration); `patch` encodes 63x63 patches cut from frames at a stride (the small patch
auto-encoder's 17x17x16 latent grid) and is scored through the stride-based patch path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from edgead.config import FIRST_NUISANCE, NO_NUISANCE, NuisanceConfig
from edgead.errors import ConfigError

LEVELS = ("image", "patch")
LATENTS = ("features", "pixels")  # what is quantised: frozen CNN patch features (kit/vq_features.py) or the pixels (a VQ-VAE)
AUGMENTS = ("dihedral", "flips", "none")
MAPS = ("likelihood", "restoration")  # the head's anomaly map (runtime/heads/restoration.py)
DEFECT_KINDS = ("rectangles", "cutpaste", "mixed")  # the eta calibration's defective copies (kit/vq_calibrate.py)
PATCH_PX = 63
PATCH_GRID = 17


@dataclass(frozen=True)
class VQRestoreConfig:
    """How a VQ-VAE + autoregressive prior detector is trained; None means "the level's default"."""

    level: str = "image"
    # what the codes quantise. None: the level's default — image "features" (EfficientNet-Lite0 patch features and a k-means
    # codebook; seed-1 demo data: README, "VQ-VAE restoration"), patch "pixels" (the VQ-VAE). Models without the key: pixels
    latents: str | None = None
    backbone: str = "efficientnet_lite0"  # features: the frozen CNN (PatchCore's), with its ImageNet weights
    # image level: the model input (frames are resized to it; default 256 px for features, 128 for pixels); the patch level
    # takes 63x63 patches as they are
    image_size_px: int | None = None
    # patch level: patches are cut every stride_px pixels
    stride_px: int | None = None
    # image level: input pixels per code, a power of 2. None: features 16 (the stride-8 features average-pooled 2x2: 256 px ->
    # a 16x16 grid), pixels 8 (128 px -> 16x16)
    downsample: int | None = None
    codebook_size: int | None = None  # None: features 64 (k-means centres), pixels 512 (VQ-VAE codes)
    code_dim: int | None = None  # image level 32 (the paper), patch level 16 (the 17x17x16 latent)
    hidden_channels: int = 32
    res_blocks: int = 2
    beta: float = 0.25  # commitment weight
    crop_px: int | None = None  # image level: the VQ-VAE trains on random crops of this size (default: half the input)
    epochs: int = 20  # VQ-VAE epochs (pixels; feature latents train no auto-encoder)
    # None: the level's default — image 30 with feature latents (seed-1 demo data: the prior overfits their codes, 0.2-0.6
    # nats per code on training images after 100 epochs against 2.3-4.0 on good test crops), image 100 with pixels, patch 200
    # (image level, pixels, seed-1 demo data: the prior's cross-entropy falls
    # from 2.6-4.1 nats per code after 20 epochs to 1.5-2.8 after 100, and every map gains: README, "VQ-VAE restoration";
    # patch level, demo brick: 200 gave image AUROC 0.928 against 0.800 with 20)
    prior_epochs: int | None = None
    prior_channels: int = 32
    prior_blocks: int = 2
    learning_rate: float = 1e-3
    augment: str = "dihedral"  # the paper's for textures: 90-degree turns and flips
    holdout_fraction: float = 0.2  # good images held out to calibrate eta and the threshold
    false_alarm_rate: float = 0.01  # per good image: the threshold's target (runtime/calibration.py)
    eta: float | None = None  # likelihood threshold; None: calibrated on held-out images and defective copies of them
    eta_defects: str = "rectangles"  # the copies' defects: the paper's rectangles, cutpaste pieces, or mixed (kit/vq_calibrate.py)
    passes: int = 1  # parallel restoration: prior passes at most (1 measured best on demo brick: README)
    restoration: str = "parallel"  # the model's default at run time
    resample: str = "argmax"  # replacement: the most likely code (the paper's), or a seeded draw among the likely codes
    # the anomaly map: the prior's -log p of each code (one prior pass; no eta, no decoding), or the paper's
    # difference of the restored and plain decodings. None: the level's default — image likelihood (README, "VQ-VAE
    # restoration": ablation on seed-1 demo data), patch restoration (likelihood is not measured there)
    anomaly_map: str | None = None
    # Gaussian smoothing of maps on the code grid (likelihood; restoration of features), px at the input size. None: features 4
    # (PatchCore's at 256 px), pixels 8. Pixel restoration maps are smoothed by bilateral_d instead
    blur_sigma_px: float | None = None
    bilateral_d: int | None = None  # bilateral filter of the map (the paper: 20 px, sigmas 75); 0 turns it off
    bilateral_sigma_color: float = 75.0
    bilateral_sigma_space: float = 75.0
    score_quantile: float | None = None
    batch_size: int = 16
    seed: int = 0
    # augmented copies of the good images (compression, light, blur, noise, shifts): trained on, and calibrated on when held
    # out; the settings its defaults were measured with (2 copies per image), not PatchCore's later 4
    nuisance: NuisanceConfig = dataclasses.field(default_factory=lambda: NuisanceConfig(**FIRST_NUISANCE))

    def __post_init__(self) -> None:
        object.__setattr__(self, "nuisance", NuisanceConfig.of(self.nuisance))
        if self.level not in LEVELS:
            raise ConfigError(f"--level {self.level!r}: choose image or patch")
        if self.latents is None:  # resolved here, like the other level defaults, so the stored config says what was trained
            object.__setattr__(self, "latents", "features" if self.level == "image" else "pixels")
        if self.latents not in LATENTS:
            raise ConfigError(f"--latents {self.latents!r}: choose features or pixels")
        if self.latents == "features" and self.level == "patch":
            raise ConfigError("--latents features applies to --level image (features of whole frames); give --latents pixels with --level patch")
        features = self.latents == "features"
        for name, value in (("downsample", 16 if features else 8), ("codebook_size", 64 if features else 512), ("blur_sigma_px", 4.0 if features else 8.0)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.prior_epochs is None:  # resolved here, so the stored config says what was trained
            object.__setattr__(self, "prior_epochs", 200 if self.level == "patch" else 30 if features else 100)
        if self.anomaly_map is None:
            object.__setattr__(self, "anomaly_map", "likelihood" if self.level == "image" and not features else "restoration")
        if self.level == "image":
            if self.stride_px is not None:
                raise ConfigError("--stride applies to --level patch (patches cut at a stride); the image level resizes whole frames")
            size = self.input_px
            if features and (self.downsample not in (8, 16) or size % 16 or size < 32):
                raise ConfigError(f"image size {size} px with {self.downsample} px per code: feature latents take 8 or 16 px per code "
                                  "(the backbone's stride-8 features, or pooled 2x2) and a size of at least 32 px divisible by 16")
            if self.downsample not in (2, 4, 8, 16) or size % self.downsample or size < 32:
                raise ConfigError(f"image size {size} px with {self.downsample} px per code: pick a size of at least 32 px divisible by 2, 4, 8 or 16")
            if not features and (not self.downsample <= self.train_crop_px <= size or self.train_crop_px % self.downsample):
                raise ConfigError(f"crop {self.train_crop_px} px must be a multiple of {self.downsample} between {self.downsample} and {size}")
        else:
            if self.image_size_px is not None:
                raise ConfigError(f"--image-size does not apply to --level patch: patches are {PATCH_PX} px, cut from frames as they are")
            if not 1 <= self.patch_stride_px <= PATCH_PX:
                raise ConfigError(f"--stride {self.stride_px} px must be between 1 and the patch size {PATCH_PX}")
        checks = [
            (not features or (self.code_dim is None and self.crop_px is None),
             "code_dim and crop_px shape the VQ-VAE of --latents pixels; feature latents take the backbone's channels and whole frames: leave them out"),
            (self.codebook_size >= 2, f"--codebook-size {self.codebook_size} needs at least 2 codes"),
            (self.epochs >= 1 and self.prior_epochs >= 1, "--epochs and --prior-epochs must be at least 1"),
            (self.augment in AUGMENTS, f"augment {self.augment!r}: choose one of {AUGMENTS}"),
            (0 < self.holdout_fraction < 1, f"--holdout {self.holdout_fraction}: eta and the threshold need held-out good images, give a fraction in (0, 1)"),
            (self.eta is None or 0 < self.eta < 1, f"--eta {self.eta} is out of range: the likelihood threshold must be between 0 and 1 (exclusive), e.g. 0.0005"),
            (0 < self.false_alarm_rate < 1, f"--false-alarm-rate {self.false_alarm_rate}: a fraction of good images between 0 and 1, e.g. 0.01"),
            (self.anomaly_map in MAPS, f"--anomaly-map {self.anomaly_map!r}: choose likelihood or restoration"),
            (self.blur_sigma_px >= 0, f"--blur-sigma {self.blur_sigma_px}: a Gaussian sigma in pixels, 0 or more"),
            (self.eta_defects in DEFECT_KINDS, f"--eta-defects {self.eta_defects!r}: choose rectangles, cutpaste or mixed"),
            (self.passes >= 1, f"--passes {self.passes}: parallel restoration needs at least one prior pass"),
            (self.restoration in ("exact", "parallel"), f"restoration {self.restoration!r}: choose exact or parallel"),
            (self.resample in ("sample", "argmax"), f"resample {self.resample!r}: choose sample or argmax"),
            (self.score_quantile is None or 0 < self.score_quantile < 1, f"score quantile must be between 0 and 1, got {self.score_quantile}"),
            (self.batch_size >= 1 and self.learning_rate > 0 and self.beta >= 0, "batch size, learning rate and beta must be positive"),
            (self.hidden_channels >= 8 and self.prior_channels >= 8 and self.prior_blocks >= 1, "hidden and prior channels must be >= 8, prior blocks >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def input_px(self) -> int:
        """Side of the encoder's input: the image size (image level) or the patch size."""
        if self.level == "patch":
            return PATCH_PX
        return self.image_size_px or (256 if self.latents == "features" else 128)

    @property
    def grid(self) -> tuple[int, int]:
        side = self.input_px // self.downsample if self.level == "image" else PATCH_GRID
        return side, side

    @property
    def latent_dim(self) -> int:
        """The codes' vector size (pixel latents; feature latents take the backbone's channels)."""
        return self.code_dim or (32 if self.level == "image" else 16)

    @property
    def train_crop_px(self) -> int:
        return self.crop_px or (self.input_px // 2 if self.level == "image" else PATCH_PX)

    @property
    def patch_stride_px(self) -> int:
        return self.stride_px or 16

    @property
    def bilateral(self) -> dict[str, float]:
        d = self.bilateral_d if self.bilateral_d is not None else (20 if self.level == "image" else 5)
        return {"d": d, "sigma_color": self.bilateral_sigma_color, "sigma_space": self.bilateral_sigma_space}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VQRestoreConfig:
        from edgead.config import config_from_dict

        return config_from_dict(cls, data, "vq-restore", {"nuisance": NO_NUISANCE, "anomaly_map": "restoration", "blur_sigma_px": 0.0, "latents": "pixels"})


def build_autoencoder(config: VQRestoreConfig) -> tuple[nn.Module, nn.Module]:
    """The level's encoder and decoder (pixel latents); everything else (quantiser, prior, restoration) is shared."""
    from edgead.kit.small_ae import SmallDecoder, SmallEncoder
    from edgead.kit.vqvae import image_decoder, image_encoder

    if config.level == "image":
        args = (config.hidden_channels, config.latent_dim, config.downsample, config.res_blocks)
        return image_encoder(*args), image_decoder(*args)
    # patch level: the small patch auto-encoder's own encoder and decoder (kit/small_ae.py), 63 px -> 17x17,
    # widened to hidden_channels and ending in the code dimension; one implementation for both detectors
    hidden = (max(8, config.hidden_channels // 2), config.hidden_channels)
    return SmallEncoder(hidden, config.latent_dim), SmallDecoder(hidden, config.latent_dim)
