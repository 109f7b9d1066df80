"""Frozen configuration dataclasses; the manifest is their serialised form."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edgead.errors import ConfigError

METHODS = ("patchcore", "patchwise-ae", "small-ae")
SCORERS = ("reconstruction", "support")
INFERENCE_MODES = ("dense", "patches")  # small-ae: whole frames through the convolutions once, or stride-based patches


NUISANCE_KEYS = ("copies", "jpeg", "light", "blur", "noise", "shift", "turns", "bank", "share")


@dataclass(frozen=True)
class NuisanceConfig:
    """What a camera and a line change without making a defect, applied to copies of the good images at training.

    Each copy draws every nuisance that is on at a random strength up to its setting; 0 turns one off
    (runtime/nuisance.py applies them). Models trained before this existed store copies=0: none.
    """

    # the strengths first chosen; 4 copies of which 2 join the bank at a coreset share of their own (`bank`, `share`).
    # Half these strengths kept demo AUROC but set thresholds that left the line video a false-alarm storm (README
    # "Nuisance copies"): the calibration copies must vary at least as much as the camera's frames do
    copies: int = 4  # augmented copies per good image (0: no augmentation at all); all of them are calibration copies
    jpeg: int = 40  # lowest JPEG quality of the recompression (qualities drawn in jpeg..95; 0: off)
    light: float = 0.2  # largest relative shift of brightness, contrast and gamma (0: off)
    blur: float = 0.8  # focus: largest Gaussian blur sigma, px, and as much sharpening (unsharp mask amount) the other way (0: off)
    noise: float = 3.0  # largest sensor-noise standard deviation, grey levels (0: off)
    shift: int = 6  # largest shift, px (0: off)
    turns: bool = False  # 90-degree turns and flips: for textures, which look the same turned
    # memory-bank detectors: the first `bank` copies of each image join the bank, the others only the calibration
    # (models stored before this field: all copies joined the bank)
    bank: int = 2
    # the coreset share of the bank copies' patch features (the images' own keep the model's coreset rule; 0: the model's
    # rule over images and copies together, as before): a few copy rows cover what compression adds, without many
    # relit or refocused rows that would accept defects (models stored before this field: 0)
    share: float = 0.01

    def __post_init__(self) -> None:
        if self.copies < 0 or self.copies > 16:
            raise ConfigError(f"--nuisance copies={self.copies}: give 0 (off) to 16 augmented copies per good image")
        if self.jpeg != 0 and not 5 <= self.jpeg <= 95:
            raise ConfigError(f"--nuisance jpeg={self.jpeg}: the lowest JPEG quality is 5..95, or 0 for no recompression")
        if not 0 <= self.light <= 0.5:
            raise ConfigError(f"--nuisance light={self.light}: a relative brightness/contrast/gamma shift of 0..0.5 (e.g. 0.08)")
        if not 0 <= self.blur <= 5:
            raise ConfigError(f"--nuisance blur={self.blur}: a blur sigma of 0..5 px (e.g. 0.8)")
        if not 0 <= self.noise <= 50:
            raise ConfigError(f"--nuisance noise={self.noise}: a noise standard deviation of 0..50 grey levels (e.g. 3)")
        if self.shift < 0:
            raise ConfigError(f"--nuisance shift={self.shift}: a shift of 0 px or more (e.g. 6)")
        if self.bank < 0:
            raise ConfigError(f"--nuisance bank={self.bank}: give how many of the copies join the bank, 0 (calibration only) or more")
        if not 0 <= self.share <= 1:
            raise ConfigError(f"--nuisance share={self.share}: the coreset fraction of the bank copies' features, 0..1 (e.g. 0.02; 0: the model's own)")

    @property
    def active(self) -> bool:
        return self.copies > 0

    @property
    def bank_copies(self) -> int:
        """How many copies of each image join a memory bank (the rest are scored by the calibration only)."""
        return min(self.bank, self.copies)

    def describe(self, into: str | None = None) -> str:
        """In words; `into`: where the copies go, for a detector without a bank (default: the bank and the calibration)."""
        if not self.active:
            return "none"
        on = [f"JPEG q{self.jpeg}-95" if self.jpeg else "", f"light ±{self.light:g}" if self.light else "",
              f"focus ±{self.blur:g}" if self.blur else "", f"noise <= {self.noise:g}" if self.noise else "",
              f"shift <= {self.shift} px" if self.shift else "", "turns and flips" if self.turns else ""]
        if into is None:
            bank = self.bank_copies
            into = "all in the bank" if bank == self.copies else f"{bank} in the bank" if bank else "none in the bank"
            into += f" at coreset share {self.share:g}" if bank and self.share else ""
            into += ", all in the calibration"
        return f"{self.copies} copies per good image ({into}; {', '.join(x for x in on if x) or 'unchanged'})"

    @classmethod
    def parse(cls, spec: str, base: NuisanceConfig | None = None) -> NuisanceConfig:
        """`--nuisance`: 'off', 'on', or KEY=VALUE,... (e.g. 'copies=4,jpeg=30,turns=1').

        `base` is the method's own default: 'on' and KEY=VALUE start from it where it is on (vq-restore keeps
        its 2 copies when one strength is changed), from the general defaults where it is off (small-ae)."""
        spec = spec.strip()
        start = base if base is not None and base.active else cls()
        if spec in ("off", "none", "0"):
            return cls(copies=0)
        if spec in ("on", "default", ""):
            return start
        given: dict[str, Any] = {}
        for item in spec.split(","):
            key, sep, value = (part.strip() for part in item.partition("="))
            if not sep or key not in NUISANCE_KEYS:
                raise ConfigError(f"--nuisance {spec!r}: give off, on, or KEY=VALUE,... with keys {', '.join(NUISANCE_KEYS)} (e.g. jpeg=30,blur=0)")
            kind = {f.name: f.type for f in dataclasses.fields(cls)}[key]
            try:
                if kind == "bool":
                    if value.lower() not in ("0", "1", "on", "off", "true", "false", "yes", "no"):
                        raise ValueError(value)
                    given[key] = value.lower() in ("1", "on", "true", "yes")
                else:
                    given[key] = int(value) if kind == "int" else float(value)
            except ValueError:
                raise ConfigError(f"--nuisance {key}={value!r} is not a {'whole number' if kind == 'int' else kind}") from None
        return dataclasses.replace(start, **given)

    @classmethod
    def of(cls, value: Any) -> NuisanceConfig:
        """From a stored dict (or an instance); unknown keys are an error."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict) or set(value) - set(NUISANCE_KEYS):
            raise ConfigError(f"the model's nuisance settings {value!r} are not understood; known keys: {', '.join(NUISANCE_KEYS)}")
        # stored before `bank` and `share`: every copy joined the bank, under the model's coreset rule
        return cls(**{"bank": value.get("copies", cls.copies), "share": 0.0, **value})


NO_NUISANCE = {"copies": 0}  # how models stored before the augmentation were trained
# the defaults before `bank` and `share` (and what the patch-wise auto-encoder keeps): all copies in the bank, full strengths
FIRST_NUISANCE = {"copies": 2, "jpeg": 40, "light": 0.2, "blur": 0.8, "noise": 3.0, "shift": 6, "bank": 2, "share": 0.0}


def _nuisance_field(config: Any) -> None:
    """Frozen configs keep a NuisanceConfig in `nuisance`, whether given as one or as its stored dict."""
    object.__setattr__(config, "nuisance", NuisanceConfig.of(config.nuisance))


@dataclass(frozen=True)
class PatchCoreConfig:
    """How a PatchCore-style detector is trained (CLI options of `edgead train` map onto these fields)."""

    backbone: str = "efficientnet_lite0"
    image_size_px: int = 256
    # neighbourhood aggregated around each feature cell ("locally aware" patch features), in cells
    patch_cells: int = 3
    # that average at the feature map's border: zeros counted in (True, as anomalib) or left out (False).
    # Zeros mark border patches as border patches, which they meet again at test time: on the demo data
    # image AUROC 0.79 -> 1.00 (brick), 0.64 -> 0.96 (grass), 0.56 -> 0.91 (gravel) without the mirror padding
    pool_zero_pad: bool = True
    # cut images into tiles of tile_px (image pixels) at stride_px instead of resizing them whole; None = resize
    tile_px: int | None = None
    stride_px: int | None = None
    # input mirrored by this many pixels on each side before the backbone (multiple of 16; 0 = off). Off by
    # default since zero-counted pooling borders do better (0.967 / 0.833 / 0.672 image AUROC with 32 px)
    reflect_pad_px: int = 0
    # channels of the patch feature after fixed average pooling over channels; None keeps them all
    feature_dim: int | None = None
    # which backbone stages make the patch feature, the stride-8 one first (EfficientNet-Lite stage indices, e.g. (2, 3, 4));
    # None: the backbone's own pair (Lite: stages 2 and 4, 40 + 112 ch; WideResNet: layer2 and layer3)
    feature_stages: tuple[int, ...] | None = None
    # coreset: a fraction of all patch features (0 < f <= 1) or an absolute count (> 1)
    coreset_fraction: float | None = 0.1
    coreset_count: int | None = None
    projection_dim: int = 64
    k: int = 1
    # good images kept out of the bank (0: none; cross-calibration scores every image without itself)
    holdout_fraction: float = 0.0
    # the threshold: this share of good images (per image) is expected above it, estimated by k-fold
    # cross-calibration of all good images and an exponential tail (runtime/calibration.py)
    false_alarm_rate: float = 0.01
    folds: int = 5
    blur_sigma_px: float = 4.0
    # patch scores -> map: "bilinear" or "nearest" (each cell's score as a block) before the blur
    map_upsample: str = "bilinear"
    # image score: the map's maximum (None), or this quantile of the map (e.g. 0.99)
    score_quantile: float | None = None
    batch_size: int = 8
    seed: int = 0
    # augmented copies of the good images (compression, light, blur, noise, shifts) join the bank and the calibration
    nuisance: NuisanceConfig = dataclasses.field(default_factory=NuisanceConfig)

    def __post_init__(self) -> None:
        _nuisance_field(self)
        if self.feature_stages is not None:  # a stored model's JSON list, or the CLI's tuple
            object.__setattr__(self, "feature_stages", tuple(int(s) for s in self.feature_stages))
        if self.image_size_px < 32 or self.image_size_px % 16:
            raise ConfigError(
                f"image size {self.image_size_px} px is not usable: pick a multiple of 16 of at least 32 (e.g. 256)"
            )
        if self.patch_cells < 1 or self.patch_cells % 2 == 0:
            raise ConfigError(f"patch_cells must be an odd number >= 1, got {self.patch_cells}")
        if self.reflect_pad_px < 0 or self.reflect_pad_px % 16 or self.reflect_pad_px >= self.image_size_px:
            raise ConfigError(f"reflect padding must be a multiple of 16 px below the image size, got {self.reflect_pad_px}")
        if self.tile_px is None and self.stride_px is not None:
            raise ConfigError("--stride needs --tile: give the tile size in pixels too")
        if self.tile_px is not None and (self.tile_px < 16 or not 1 <= (self.stride_px or self.tile_px) <= self.tile_px):
            raise ConfigError(f"tiles of {self.tile_px} px at stride {self.stride_px} px: the tile must be >= 16 px and the stride 1..tile")
        if (self.coreset_fraction is None) == (self.coreset_count is None):
            raise ConfigError("set exactly one of coreset_fraction and coreset_count")
        if self.coreset_fraction is not None and not 0 < self.coreset_fraction <= 1:
            raise ConfigError(f"coreset fraction must be in (0, 1], got {self.coreset_fraction}")
        if self.coreset_count is not None and self.coreset_count < 1:
            raise ConfigError(f"coreset count must be >= 1, got {self.coreset_count}")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if not 0 <= self.holdout_fraction < 1:
            raise ConfigError(f"holdout fraction must be in [0, 1), got {self.holdout_fraction}")
        if not 0 < self.false_alarm_rate < 1:
            raise ConfigError(f"false-alarm rate must be between 0 and 1 (e.g. 0.01 = 1 good image in 100 flagged), got {self.false_alarm_rate}")
        if self.folds < 2:
            raise ConfigError(f"cross-calibration needs at least 2 folds, got {self.folds}")
        if self.score_quantile is not None and not 0 < self.score_quantile < 1:
            raise ConfigError(f"score quantile must be between 0 and 1 (e.g. 0.99), got {self.score_quantile}")
        if self.blur_sigma_px < 0:
            raise ConfigError(f"blur sigma must be >= 0 px, got {self.blur_sigma_px}")
        if self.map_upsample not in ("bilinear", "nearest"):
            raise ConfigError(f"map upsampling must be 'bilinear' or 'nearest', got {self.map_upsample!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.projection_dim < 1:
            raise ConfigError(f"projection dim must be >= 1, got {self.projection_dim}")

    def coreset_target(self, n_features: int) -> int:
        """Number of bank features to keep out of `n_features`."""
        if self.coreset_count is not None:
            return min(self.coreset_count, n_features)
        return max(1, min(n_features, round(self.coreset_fraction * n_features)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PatchCoreConfig:
        # keys a model written before them lacks: the behaviour it was trained with, not today's default
        return config_from_dict(cls, data, "patchcore", {"pool_zero_pad": False, "nuisance": NO_NUISANCE})


CUTPASTE_SHAPES = ("rectangle", "scar", "mixed")
COMPRESS_INITS = ("auto", "random", "identity")


@dataclass(frozen=True)
class PatchwiseAEConfig(PatchCoreConfig):
    """The patch-wise auto-encoder (2308.00429): PatchCore's features and bank, plus a learned 1x1 compression.

    Training fields come after PatchCore's; the bank, tiling and post-processing fields mean what they mean there.
    """

    # c3: channels of the compressed patch feature (the bank's dim); the encoder's 1x1 layers go c1+c2 -> hidden -> c3.
    # 152 = EfficientNet-Lite0's c1 + c2: on the demo data (seed 1) 64 lost 0.05 image AUROC and 0.06 AUPRO to it, 256 gained nothing
    compressed_dim: int = 152
    # hidden width of the training-only decoder (1x1 conv, ReLU, 1x1 conv to stride x stride x 3 pixels)
    decoder_dim: int = 256
    epochs: int = 10
    # 1e-3 (the default before) fits the pixels better and the kNN worse: on the demo data (seed 1) the less the compression
    # moved from its initialisation, the better the bank (40 epochs < 10 < 3 at 1e-3; 10 at 1e-4 best; README)
    lr: float = 1e-4
    # the backbone is fine-tuned at this learning rate unless frozen
    backbone_lr: float = 1e-4
    freeze_backbone: bool = True
    # loss = alpha * L2(patch-normalised pixels) + (1 - alpha) * L2(raw pixels)
    loss_alpha: float = 0.5
    # synthetic defects: probability per training image, shape, and the largest rectangle as a fraction of the image
    cutpaste_probability: float = 0.5
    cutpaste_shape: str = "mixed"
    cutpaste_area: float = 0.15
    # PatchCore's nuisance copies (4 per image, 2 in the bank at a coreset share of 0.01 of their own), no longer the first
    # defaults (2, both in one coreset with the images: FIRST_NUISANCE, `--nuisance copies=2,bank=2,share=0`). Seed-1 demo
    # data (proxy): as good (mean image AUROC / AUPRO 0.839 / 0.789 both) with a bank 2.5x smaller; seed 0 (CLI): README
    nuisance: NuisanceConfig = dataclasses.field(default_factory=NuisanceConfig)
    # the compression's initialisation: "random" (PyTorch's default), or "identity" (hidden = 2 x c3, weights [I; -I] then
    # [I, -I], so that it starts as PatchCore's feature exactly; needs --compressed-dim equal to the backbone's channels);
    # "auto": identity where the widths allow it, else random (demo data, seed 0: identity 0.894 / 0.793 image AUROC /
    # AUPRO against random's 0.806 / 0.738, and stable across training seeds where random swung tissue by 0.44)
    compress_init: str = "auto"

    def __post_init__(self) -> None:
        # a 6x6 grid of 8 px patches (3x3 cells of the deeper, stride-16 stage), more with a mirrored border
        min_px = max(48, self.reflect_pad_px + 16)
        if self.image_size_px < min_px:
            raise ConfigError(
                f"image size {self.image_size_px} px is too small for the patch grid: the patch-wise auto-encoder "
                f"needs at least {min_px} px (a {min_px // 8}x{min_px // 8} grid of 8 px patches"
                f"{f', {self.reflect_pad_px} px mirrored at each border' if self.reflect_pad_px else ''}); use --image-size 256"
            )
        super().__post_init__()
        if self.compressed_dim < 1 or self.decoder_dim < 1:
            raise ConfigError(f"compressed and decoder dims must be >= 1, got {self.compressed_dim} and {self.decoder_dim}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if not (self.lr > 0 and self.backbone_lr > 0):
            raise ConfigError(f"learning rates must be > 0, got --lr {self.lr} and --backbone-lr {self.backbone_lr}")
        if not 0 <= self.loss_alpha <= 1:
            raise ConfigError(f"--loss-alpha must be in [0, 1], got {self.loss_alpha}")
        if not 0 <= self.cutpaste_probability <= 1:
            raise ConfigError(f"--cutpaste-probability must be in [0, 1], got {self.cutpaste_probability}")
        if self.cutpaste_shape not in CUTPASTE_SHAPES:
            raise ConfigError(f"--cutpaste-shape {self.cutpaste_shape!r}: choose one of {', '.join(CUTPASTE_SHAPES)}")
        if not 0 < self.cutpaste_area <= 0.5:
            raise ConfigError(f"--cutpaste-area must be in (0, 0.5] (a fraction of the image), got {self.cutpaste_area}")
        if self.compress_init not in COMPRESS_INITS:
            raise ConfigError(f"--compress-init {self.compress_init!r}: choose one of {', '.join(COMPRESS_INITS)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PatchwiseAEConfig:
        # models before --compress-init were initialised at random (and their hidden layer is (c + c3) // 2 wide)
        return config_from_dict(cls, data, "patchwise-ae", {"pool_zero_pad": False, "nuisance": NO_NUISANCE, "compress_init": "random"})


@dataclass(frozen=True)
class SmallAEConfig:
    """How the small patch auto-encoder of 2307.02495 is trained (CLI options of `edgead train --method small-ae`)."""

    # frames are resized to this square size, then cut into 63 px patches every patch_stride_px pixels
    image_size_px: int = 256
    patch_stride_px: int = 8
    # "reconstruction", "support", or both comma-separated: the first is what the runtime uses by default
    scorer: str = "reconstruction"
    # the run-time default: "dense" (each frame through the convolutions once; the support scorer reads every
    # patch's code off the frame's latent grid) or "patches" (stride-based patches); both are stored and calibrated
    inference: str = "dense"
    # small on purpose: a demo category trains and evaluates in minutes on two CPU cores. 8192 patches (was 2048): on the
    # seed-1 demo data mean image AUROC 0.844 -> 0.857, AUPRO 0.740 -> 0.758 (low-pass + texture error of weight 1; README)
    epochs: int = 5
    patches_per_epoch: int = 8192
    batch_size: int = 32
    lr: float = 2e-3
    # random flips and 90-degree turns of the training patches (textures look the same turned)
    augment: bool = True
    # "l2", or "ssim": L2 plus ssim_weight * (1 - SSIM) of patch and reconstruction
    loss: str = "l2"
    ssim_weight: float = 0.5
    # one-class SVM (RBF kernel, gamma "scale") on the latent codes of this many random good patches
    svm_nu: float = 0.1
    svm_patches: int = 1000
    holdout_fraction: float = 0.1
    # the threshold's target share of good images flagged, from the held-out images' scores (runtime/calibration.py)
    false_alarm_rate: float = 0.01
    blur_sigma_px: float = 4.0
    # the image score: this quantile of the map (1 or None: the map's maximum); 0.99 for small-ae: on the seed-1 demo data
    # mean image AUROC 0.683 (max) -> 0.857 with the low-pass + texture error (weight 1), 0.754 -> 0.814 with the low-pass alone
    score_quantile: float | None = 0.99
    # the reconstruction error on a low-pass level: the difference between frame and reconstruction is Gaussian-smoothed
    # by this sigma (px) inside the exported graph before it is squared; 0 is the paper's per-pixel squared error
    error_sigma_px: float = 2.0
    # plus texture_weight x the two-sided log deviation of the local error energy (Gaussian of texture_sigma_px) from its
    # level on good frames (kit/small_ae.py ErrorSettings); 0 leaves it out
    texture_sigma_px: float = 8.0
    texture_weight: float = 2.0
    seed: int = 0
    # augmented copies of the good images that training patches are cut from too (--nuisance on). Off by default: on demo
    # brick they cost image AUROC 0.983 -> 0.794 (the auto-encoder learns to rebuild defects too) and the model flagged
    # no good frame of the MJPG video without them (0 of 60; README "Nuisance copies")
    nuisance: NuisanceConfig = dataclasses.field(default_factory=lambda: NuisanceConfig(copies=0))
    # whether the auto-encoder trains on the nuisance copies too (True) or they only set the threshold (False). Trained on
    # them it learns to rebuild defects (the brick figure above); calibration-only copies leave the auto-encoder, and the
    # demo AUROC, as without copies (models stored before this field: True)
    train_on_copies: bool = False

    def __post_init__(self) -> None:
        _nuisance_field(self)
        if not 0 < self.false_alarm_rate < 1:
            raise ConfigError(f"false-alarm rate must be between 0 and 1 (e.g. 0.01 = 1 good image in 100 flagged), got {self.false_alarm_rate}")
        if self.image_size_px < 63:
            raise ConfigError(f"image size {self.image_size_px} px is smaller than one 63 px patch; use at least 63 (e.g. 256)")
        if not 1 <= self.patch_stride_px <= 63:
            raise ConfigError(f"--patch-stride {self.patch_stride_px} px must be between 1 and the 63 px patch, or patches leave gaps")
        unknown = [s for s in self.scorers if s not in SCORERS]
        if not self.scorers or unknown or len(set(self.scorers)) != len(self.scorers):
            raise ConfigError(f"--scorer {self.scorer!r}: give reconstruction, support, or both comma-separated (the first is the default)")
        if self.inference not in INFERENCE_MODES:
            raise ConfigError(f"--inference {self.inference!r}: choose dense or patches")
        if self.inference == "dense" and not self.dense_support:
            raise ConfigError(
                f"--patch-stride {self.patch_stride_px} px: the support scorer's dense inference reads patches off the latent grid, "
                "whose cells are 4 px apart; give a multiple of 4 (e.g. 8), or --inference patches"
            )
        if self.loss not in ("l2", "ssim"):
            raise ConfigError(f"--loss {self.loss!r}: choose l2 or ssim")
        if self.epochs < 1 or self.patches_per_epoch < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs, patches per epoch and batch size must be >= 1, got {self.epochs}, {self.patches_per_epoch}, {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if not 0 < self.svm_nu <= 1:
            raise ConfigError(f"--svm-nu must be in (0, 1], got {self.svm_nu}")
        if self.svm_patches < 2:
            raise ConfigError(f"--svm-patches must be >= 2, got {self.svm_patches}")
        if not 0 <= self.holdout_fraction < 1:
            raise ConfigError(f"holdout fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.score_quantile is not None and not 0 < self.score_quantile <= 1:
            raise ConfigError(f"score quantile must be in (0, 1] (e.g. 0.99; 1 is the map's maximum), got {self.score_quantile}")
        if self.blur_sigma_px < 0:
            raise ConfigError(f"blur sigma must be >= 0 px, got {self.blur_sigma_px}")
        if not 0 <= self.error_sigma_px <= 8:
            raise ConfigError(f"--error-sigma {self.error_sigma_px} px must be between 0 (per-pixel error) and 8 (e.g. 2)")
        if not 0.5 <= self.texture_sigma_px <= 16:
            raise ConfigError(f"--texture-sigma {self.texture_sigma_px} px must be between 0.5 and 16 (e.g. 8): the texture window must fit a 63 px patch")
        if self.texture_weight < 0:
            raise ConfigError(f"--texture-weight {self.texture_weight} must be >= 0 (0 leaves the texture term out)")

    @property
    def scorers(self) -> tuple[str, ...]:
        """The scorers to fit, the runtime's default first."""
        return tuple(s.strip() for s in self.scorer.split(",") if s.strip())

    @property
    def dense_support(self) -> bool:
        """Whether every scorer can run dense: the support scorer's patches must sit on the 4 px latent grid."""
        return "support" not in self.scorers or self.patch_stride_px % 4 == 0

    @property
    def inference_modes(self) -> tuple[str, ...]:
        """The inference modes stored (and calibrated), the run-time default first."""
        modes = INFERENCE_MODES if self.dense_support else ("patches",)
        return (self.inference, *[m for m in modes if m != self.inference])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SmallAEConfig:
        # models before dense inference / nuisance copies / the low-pass error
        return config_from_dict(cls, data, "small-ae", {"inference": "patches", "nuisance": NO_NUISANCE, "error_sigma_px": 0.0, "texture_weight": 0.0,
                                                       "train_on_copies": True})


def config_from_dict(cls: type, data: dict[str, Any], method: str, legacy: dict[str, Any] | None = None) -> Any:
    """A detector config from a model's stored dict: unknown keys are an error; `legacy` fills keys older models lack
    with the behaviour they were trained with (not today's default)."""
    names = {f.name for f in dataclasses.fields(cls)}
    data = {**(legacy or {}), **data}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown {method} config keys {unknown}; known: {sorted(names)}")
    return cls(**data)


def parse_coreset(value: str) -> dict[str, Any]:
    """'0.1' -> a fraction, '5000' -> a count; the two PatchCoreConfig fields as keyword arguments."""
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"--coreset {value!r} is neither a fraction (0.1) nor a count (5000)") from None
    if "." not in value and number.is_integer() and number >= 1:
        return {"coreset_fraction": None, "coreset_count": int(number)}
    if 0 < number <= 1:
        return {"coreset_fraction": number, "coreset_count": None}
    raise ConfigError(f"--coreset {value!r}: give a fraction in (0, 1] such as 0.1, or a whole count such as 5000")
