"""The `edgead` command line: train, eval, predict, export, run, enroll, bench, keygen, sign, verify, doctor, demo-data.

Heavy modules (torch, the kit, the export stage) are imported inside the commands that need them.
User errors print as one line without a traceback and exit with status 2; bugs keep their traceback.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from edgead import __version__
from edgead.errors import ConfigError, EdgeADError

BACKENDS = ("tensorrt", "onnxruntime", "torchscript")


class EdgeADGroup(click.Group):
    """Prints EdgeADError and full disks as one clear message and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeADError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                click.echo(f"error: the disk is full ({exc.filename or 'while writing'}); free space and run again", err=True)
                sys.exit(2)
            if exc.filename:  # a path the user gave or we were told to write: permissions, a file in the way
                click.echo(f"error: {exc.strerror}: {exc.filename}", err=True)
                sys.exit(2)
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except MemoryError:
            click.echo("error: out of memory: this machine cannot hold what the command needs (a model, a batch, a frame); "
                       "free memory, or use smaller batches or a smaller model", err=True)
            sys.exit(2)


class StderrLog(logging.Handler):
    """Warnings of every module as one line on the current stderr: `warning: ...` (looked up at each record)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def _log_to_stderr() -> None:
    root = logging.getLogger()
    if not any(isinstance(handler, StderrLog) for handler in root.handlers):
        root.addHandler(StderrLog(logging.WARNING))


@click.group(cls=EdgeADGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgead")
def main() -> None:
    """Train anomaly detectors on good images, evaluate them, and score new images."""
    _log_to_stderr()  # the runtime's warnings (a slow engine, odd frames, reconnections) reach the user


def _progress(quiet: bool):
    from edgead.progress import bar_progress, silent_progress

    return silent_progress if quiet else bar_progress


@dataclass(frozen=True)
class Loading:
    """How a model file is read and what it is trusted to do: --max-model-mb, --max-manifest-mb, --verify-key, --trust-torchscript."""

    max_model_mb: float | None = None
    max_manifest_mb: float | None = None
    verify_key: str | None = None
    trust_torchscript: bool = False

    def limits(self):
        from edgead.reading import ReadLimits

        return ReadLimits.from_mb(self.max_model_mb, self.max_manifest_mb)

    def read(self, model: str | None):
        from edgead.artifact import read_artifact
        from edgead.workspace import resolve_model

        return read_artifact(resolve_model(model), self.limits(), verify_key=self.verify_key)


def _limit_options(command):
    command = click.option("--max-manifest-mb", type=click.FloatRange(min=0, min_open=True), envvar="EDGEAD_MAX_MANIFEST_MB", default=None,
                           help="Refuse a model whose manifest is larger (default 16). Env EDGEAD_MAX_MANIFEST_MB.")(command)
    return click.option("--max-model-mb", type=click.FloatRange(min=0, min_open=True), envvar="EDGEAD_MAX_MODEL_MB", default=None,
                        help="Refuse a model whose members unpack to more (default 2048). Env EDGEAD_MAX_MODEL_MB.")(command)


def limits_options(command):
    """--max-model-mb and --max-manifest-mb, passed to the command as one `limits` (a ReadLimits)."""

    @functools.wraps(command)
    def wrapped(*args, max_model_mb, max_manifest_mb, **kwargs):
        return command(*args, limits=Loading(max_model_mb, max_manifest_mb).limits(), **kwargs)

    return _limit_options(wrapped)


def loading_options(command):
    """--max-model-mb, --max-manifest-mb, --verify-key and --trust-torchscript, passed to the command as one `loading`."""

    @functools.wraps(command)
    def wrapped(*args, max_model_mb, max_manifest_mb, verify_key, trust_torchscript, **kwargs):
        return command(*args, loading=Loading(max_model_mb, max_manifest_mb, verify_key, trust_torchscript), **kwargs)

    wrapped = click.option("--trust-torchscript", is_flag=True,
                           help="Allow the model's TorchScript engines: they are programs that can read and write your files. Only for models you built.")(wrapped)
    wrapped = click.option("--verify-key", type=click.Path(dir_okay=False), envvar="EDGEAD_VERIFY_KEY", default=None,
                           help="Accept only a model signed by this public key (`edgead keygen`, `edgead sign`); it is then trusted. Env EDGEAD_VERIFY_KEY.")(wrapped)
    return _limit_options(wrapped)


def _open_predictor(model: str | None, backend: str | None, device: str, precision: str | None = None, tile=None, stride=None,
                    streams: int = 1, threshold=None, false_alarm_rate=None, scorer=None,
                    restoration=None, eta=None, passes=None, inference=None, loading: Loading = Loading()):
    """A Predictor for the CLI; every command that uses one names the backend it runs on in its output."""
    from edgead.runtime.inference import with_inference
    from edgead.runtime.predictor import Predictor, tiling_from

    if threshold is not None and false_alarm_rate is not None:
        raise ConfigError("give --threshold or --false-alarm-rate, not both")
    artifact = loading.read(model)
    if artifact.signed_by:
        click.echo(f"note: {artifact.path} is signed by key {artifact.signed_by} (--verify-key): trusted", err=True)
    artifact = with_inference(artifact, inference)  # the mode's own tiling is what --tile/--stride change
    tiling = tiling_from(artifact.manifest, tile, stride)
    predictor = Predictor(artifact, backend=backend, device=device, precision=precision, tiling=tiling or False, streams=streams,
                          threshold=threshold, false_alarm_rate=false_alarm_rate, scorer=scorer,
                          head_options={"restoration": restoration, "eta": eta, "passes": passes},
                          trust_code=loading.trust_torchscript)
    from edgead.runtime.backends.base import slow_engine_warning

    slow = slow_engine_warning(predictor.backend)
    if slow:
        click.echo(f"warning: {slow}", err=True)
    if predictor.threshold_choice.stale:
        click.echo(f"warning: the threshold {predictor.threshold:.4f} was {predictor.threshold_choice.stale}", err=True)
    if predictor.threshold_choice.extrapolated and false_alarm_rate is not None:
        click.echo(f"note: {predictor.threshold_choice.note}", err=True)
    return predictor


model_option = click.option("--model", "model", type=click.Path(dir_okay=False), help="A .edgead file (default: the last one trained here).")
backend_option = click.option("--backend", type=click.Choice(BACKENDS), default=None, help="Inference backend (default: the first installed with an engine in the model: TensorRT, ONNX Runtime; TorchScript only for a trusted model).")
def _device(ctx, param, value):
    from edgead.runtime.devices import parse_device

    return parse_device(value)


device_option = click.option("--device", default="cpu", show_default=True, callback=_device, help="cpu, cuda or cuda:N.")


def tiling_options(command):
    """--tile/--stride (frame pixels), --streams, --threshold and --false-alarm-rate, for every command that scores frames."""
    command = click.option("--false-alarm-rate", type=float, default=None,
                           help="Threshold for this share of good images flagged (e.g. 0.001), from the model's calibration, instead of the model's threshold.")(command)
    command = click.option("--threshold", type=float, default=None, help="Image threshold for this run instead of the model's (scores above it are NG).")(command)
    command = click.option("--streams", type=click.IntRange(min=1), default=1, show_default=True, help="CUDA streams the patch scheduler keeps busy (GPU backends).")(command)
    command = click.option("--stride", type=click.IntRange(min=1), default=None, help="Tile stride in pixels (default: the tile size, or the model's).")(command)
    return click.option("--tile", type=click.IntRange(min=16), default=None, help="Cut frames into tiles of this many pixels instead of resizing them (default: the model's setting).")(command)


scorer_option = click.option("--scorer", type=click.Choice(["reconstruction", "support"]), default=None, help="Scoring head of a model that stores several (small-ae): default the one it was trained with first.")
inference_option = click.option("--inference", type=click.Choice(["dense", "patches"]), default=None,
                                help="small-ae: whole frames through the convolutions once (dense), or stride-based patches (default: the model's, dense).")


def restoration_options(command):
    """--restoration, --eta and --passes: run-time choices of the restoration head (vq-restore models); other heads refuse them."""
    command = click.option("--passes", type=click.IntRange(min=1), default=None, help="Parallel restoration: prior passes at most (default: the model's).")(command)
    command = click.option("--eta", type=float, default=None, help="Restoration: resample codes whose likelihood is below this (0 < eta < 1; default: the model's calibrated eta).")(command)
    return click.option("--restoration", type=click.Choice(["exact", "parallel"]), default=None, help="Restoration: the paper's raster-order resampling, or edgead's bounded parallel passes (default: the model's, parallel).")(command)


precision_option = click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None, help="Engine precision (default: fp16 on CUDA where built, else fp32).")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")


# `edgead train` options -> config field names (the same for every detector that has the field)
TRAIN_FLAGS = {
    "backbone": "--backbone", "image_size_px": "--image-size", "coreset_fraction": "--coreset", "coreset_count": "--coreset",
    "k": "--k", "feature_dim": "--feature-dim", "feature_stages": "--feature-stages", "holdout_fraction": "--holdout", "tile_px": "--tile", "stride_px": "--stride",
    "false_alarm_rate": "--false-alarm-rate", "folds": "--folds",
    "score_quantile": "--score-quantile", "blur_sigma_px": "--blur-sigma", "batch_size": "--batch-size", "seed": "--seed",
    "epochs": "--epochs", "map_upsample": "--map-upsample", "reflect_pad_px": "--reflect-pad", "patch_cells": "--patch-cells",
    "pool_zero_pad": "--pool-border", "nuisance": "--nuisance",
    "compressed_dim": "--compressed-dim", "freeze_backbone": "--freeze-backbone/--fine-tune-backbone",
    "lr": "--lr", "backbone_lr": "--backbone-lr", "loss_alpha": "--loss-alpha", "cutpaste_probability": "--cutpaste-probability",
    "cutpaste_shape": "--cutpaste-shape", "cutpaste_area": "--cutpaste-area", "compress_init": "--compress-init",
    "patch_stride_px": "--patch-stride", "scorer": "--scorer", "inference": "--inference", "loss": "--loss", "augment": "--augment/--no-augment", "train_on_copies": "--train-on-copies/--no-train-on-copies",
    "svm_nu": "--svm-nu", "svm_patches": "--svm-patches", "patches_per_epoch": "--patches-per-epoch", "error_sigma_px": "--error-sigma",
    "texture_sigma_px": "--texture-sigma", "texture_weight": "--texture-weight",
    "level": "--level", "codebook_size": "--codebook-size", "prior_epochs": "--prior-epochs", "eta": "--eta",
    "passes": "--passes", "eta_defects": "--eta-defects", "anomaly_map": "--anomaly-map", "latents": "--latents",
}


def _stages(value: str | None) -> tuple[int, ...] | None:
    """'2,3,4' -> (2, 3, 4): --feature-stages; the backbone checks which stages it has."""
    if value is None:
        return None
    try:
        return tuple(int(s) for s in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of stage numbers such as 2,3,4") from None


def _methods() -> list[str]:
    from edgead.kit.detectors import DETECTORS

    return list(DETECTORS)


@main.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--method", default="patchcore", show_default=True, metavar="|".join(_methods()), help=f"The detector to train: {', '.join(_methods())}.")
@click.option("--out", type=click.Path(dir_okay=False), default="model.edgead", show_default=True, help="Where to write the model.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Backbone weights file (needed for wide_resnet50_2: torchvision's state_dict).")
@click.option("--backbone", type=click.Choice(["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "wide_resnet50_2"]), default=None, help="Pretrained CNN (default efficientnet_lite0).")
@click.option("--image-size", "image_size_px", type=int, default=None, help="Model input size in pixels, square (default 256; with --tile: the tile size, rounded up to a multiple of 16; small-ae: the frame size patches are cut from).")
@click.option("--coreset", default=None, help="Memory bank size: a fraction of all patch features (default 0.1) or a count (5000).")
@click.option("--k", type=int, default=None, help="Nearest neighbours averaged per patch score (default 1).")
@click.option("--feature-dim", type=int, default=None, help="Pool patch features to this many channels (default: all for efficientnet_lite0, 1024 for wide_resnet50_2).")
@click.option("--feature-stages", default=None, metavar="2,4|2,3,4|...", callback=lambda _c, _p, v: _stages(v),
              help="EfficientNet-Lite stages whose outputs make the patch feature, the stride-8 stage 2 first (default 2,4: 40 + 112 ch; "
                   "patchwise-ae: see its README section).")
@click.option("--false-alarm-rate", type=float, default=None,
              help="Share of good images the threshold may flag, per image (default 0.01 = 1 in 100); a rate below 1/N (N good images) is extrapolated.")
@click.option("--folds", type=click.IntRange(min=2), default=None, help="Cross-calibration folds: each good image is scored by a model built without its fold (default 5).")
@click.option("--holdout", "holdout_fraction", type=float, default=None,
              help="Fraction of good images kept out of the bank (default 0: cross-calibration scores every image without itself).")
@click.option("--tile", "tile_px", type=click.IntRange(min=16), default=None, help="Cut images into tiles of this many pixels, each fed to the model at its own resolution (for frames much larger than the model input).")
@click.option("--stride", "stride_px", type=click.IntRange(min=1), default=None, help="Tile stride in pixels (default: the tile size).")
@click.option("--score-quantile", type=float, default=None, help="Image score = this quantile of the anomaly map (e.g. 0.99) instead of its maximum.")
@click.option("--blur-sigma", "blur_sigma_px", type=float, default=None, help="Gaussian smoothing of the anomaly map, in pixels (default 4; vq-restore likelihood maps 8).")
@click.option("--map-upsample", type=click.Choice(["bilinear", "nearest"]), default=None, help="Patch scores to map before the blur (default bilinear).")
@click.option("--reflect-pad", "reflect_pad_px", type=click.IntRange(min=0), default=None, help="Mirror the input by this many pixels per side before the backbone, multiple of 16 (default 0 = off).")
@click.option("--patch-cells", type=click.IntRange(min=1), default=None, help="Neighbourhood averaged around each feature cell, in cells, odd (default 3).")
@click.option("--pool-border", "pool_zero_pad", type=click.Choice(["exclude", "zero"]), default=None, callback=lambda _c, _p, v: None if v is None else v == "zero", help="Neighbourhood average at the feature map's border: count the outside as zeros (default, as anomalib) or leave it out.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per batch (default 8; small-ae: patches per training step, default 32).")
@click.option("--seed", type=int, default=None, help="Random seed (default 0).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs of a learned detector (default: the method's).")
@click.option("--compressed-dim", type=click.IntRange(min=1), default=None, help="patchwise-ae: channels of the compressed patch feature (default 152).")
@click.option("--freeze-backbone/--fine-tune-backbone", "freeze_backbone", default=None, help="patchwise-ae: keep the pretrained backbone fixed (default), or fine-tune it at --backbone-lr.")
@click.option("--lr", type=float, default=None, help="Learning rate: patchwise-ae the compression and decoder layers (default 1e-4); small-ae Adam (default 2e-3).")
@click.option("--backbone-lr", type=float, default=None, help="patchwise-ae: learning rate of the backbone when fine-tuned (default 1e-4).")
@click.option("--loss-alpha", type=float, default=None, help="patchwise-ae: weight of the patch-normalised L2 term; 1 - alpha weighs raw pixels (default 0.5).")
@click.option("--cutpaste-probability", type=float, default=None, help="patchwise-ae: chance that a training image gets a synthetic defect (default 0.5).")
@click.option("--cutpaste-shape", type=click.Choice(["rectangle", "scar", "mixed"]), default=None, help="patchwise-ae: synthetic defect shape (default mixed).")
@click.option("--cutpaste-area", type=float, default=None, help="patchwise-ae: largest synthetic rectangle, as a fraction of the image (default 0.15).")
@click.option("--compress-init", type=click.Choice(["auto", "random", "identity"]), default=None, help="patchwise-ae: initialise the compression as the identity on PatchCore's feature (needs --compressed-dim equal to the backbone's channels) or at random (the paper's); auto (default): identity where the widths allow it.")
@click.option("--patches-per-epoch", type=click.IntRange(min=1), default=None, help="small-ae: random 63 px training patches per epoch (default 2048).")
@click.option("--patch-stride", "patch_stride_px", type=click.IntRange(min=1), default=None, help="small-ae: stride of the 63 px patches at run time, in pixels of the --image-size frame (default 8: 676 patches at 256 px).")
@click.option("--scorer", default=None, help="small-ae: reconstruction, support, or both comma-separated (the first is the default at run time; default reconstruction).")
@click.option("--inference", type=click.Choice(["dense", "patches"]), default=None, help="small-ae: run-time default, whole frames through the convolutions once (dense, the default) or stride-based patches; both are stored.")
@click.option("--loss", type=click.Choice(["l2", "ssim"]), default=None, help="small-ae: l2, or ssim (L2 + 0.5 (1 - SSIM)) (default l2).")
@click.option("--error-sigma", "error_sigma_px", type=float, default=None, help="small-ae: Gaussian sigma (px) the difference between frame and reconstruction is smoothed by before it is squared (default 2; 0: the paper's per-pixel error).")
@click.option("--texture-sigma", "texture_sigma_px", type=float, default=None, help="small-ae: window (Gaussian sigma, px) of the local error energy the texture term compares with good frames' (default 8).")
@click.option("--texture-weight", type=float, default=None, help="small-ae: weight of the texture term, the two-sided log deviation of the local error energy (default 0.5; 0: left out).")
@click.option("--augment/--no-augment", default=None, help="small-ae: random flips and 90-degree turns of training patches (default on).")
@click.option("--train-on-copies/--no-train-on-copies", default=None, help="small-ae: train the auto-encoder on the nuisance copies too (default off: they only set the threshold, from the held-out images' copies).")
@click.option("--svm-nu", type=float, default=None, help="small-ae support scorer: nu of the one-class SVM (default 0.1).")
@click.option("--svm-patches", type=int, default=None, help="small-ae support scorer: good patches the SVM is fitted on (default 1000).")
@click.option("--level", type=click.Choice(["image", "patch"]), default=None, help="vq-restore: codes of whole images, or of 63 px patches cut at --stride (default image).")
@click.option("--latents", type=click.Choice(["features", "pixels"]), default=None, help="vq-restore: what the codes quantise: the frozen --backbone's patch features, by a k-means codebook (default at --level image), or the pixels, by a VQ-VAE (the paper's; --level patch).")
@click.option("--codebook-size", type=int, default=None, help="vq-restore: codes in the codebook (default 64 k-means centres with --latents features, 512 VQ-VAE codes with pixels).")
@click.option("--prior-epochs", type=click.IntRange(min=1), default=None, help="vq-restore: epochs of the autoregressive prior, after the VQ-VAE's --epochs (default 30 with --latents features, 100 with pixels at --level image, 200 at --level patch).")
@click.option("--eta", type=float, default=None, help="vq-restore: likelihood below which codes are resampled (default: calibrated on held-out good images and copies with synthetic defects, see --eta-defects).")
@click.option("--passes", type=click.IntRange(min=1), default=None, help="vq-restore: prior passes of parallel restoration at most (default 1).")
@click.option("--anomaly-map", type=click.Choice(["likelihood", "restoration"]), default=None, help="vq-restore: the map, the prior's -log p of each code (no restoration, no eta; default with --latents pixels at --level image) or the restoration map (default otherwise): the paper's difference of restored and plain decodings (pixels), or each feature's distance to its restored code's centre (features).")
@click.option("--eta-defects", type=click.Choice(["rectangles", "cutpaste", "mixed"]), default=None, help="vq-restore: defects pasted into held-out good images to calibrate eta: the paper's black/grey rectangles, CutPaste pieces of the image itself, or one of each (default rectangles).")
@click.option("--nuisance", default=None, metavar="off|on|KEY=VALUE,...",
              help="Augmented copies of the good images, as a camera and a line change them (default on; small-ae: off): copies=N per image (4), "
                   "jpeg=lowest quality (40), light=brightness/contrast/gamma shift (0.2), blur=focus: blur sigma px, or as much sharpening (0.8), noise=grey levels (3), "
                   "shift=px (6), turns=0|1 (90-degree turns and flips, for textures; default 0); bank=copies of each image in the memory bank (2; the others "
                   "only calibrate), share=coreset fraction of the bank copies' features (0.01; 0: the --coreset rule for all); 0 turns one off, 'off' all. "
                   "vq-restore: copies=2,bank=2,share=0 (the first defaults, which it was measured with). KEY=VALUE changes the method's own defaults.")
@click.option("--device", default="cpu", show_default=True, callback=_device, help="Where training runs: cpu, cuda or cuda:N.")
@click.option("--resume", type=click.Path(dir_okay=False), default=None, help="Continue a stopped run from its checkpoint (OUT.ckpt, written after each epoch).")
@quiet_option
def train(data_dir, method, out, weights, device, resume, quiet, coreset, **options):
    """Train a detector on the good images of DATA_DIR (an MVTec AD category or a folder of good images)."""
    from edgead.config import NuisanceConfig, parse_coreset
    from edgead.kit.detectors import build_config, get_detector
    from edgead.runtime.datasets import open_dataset

    from edgead.kit.training import checkpoint_path_for

    detector = get_detector(method)
    if resume and not detector.resumable:
        raise ConfigError(f"--resume does not apply to --method {method}: it trains in one pass, with nothing to resume")
    if options.get("feature_dim") is None and options.get("backbone") == "wide_resnet50_2":
        options["feature_dim"] = 1024
    if options.get("tile_px") is not None and options.get("image_size_px") is None:
        # tiles go to the model at their own resolution (rounded up to the backbone's 16 px), not enlarged to 256
        options["image_size_px"] = max(32, -(-options["tile_px"] // 16) * 16)
    if coreset is not None:
        options.update(parse_coreset(coreset))
    if options.get("nuisance") is not None:
        own = getattr(detector.config_class(), "nuisance", None)  # the method's default, which the spec changes
        options["nuisance"] = NuisanceConfig.parse(options["nuisance"], own)
    config = build_config(detector, options, TRAIN_FLAGS)
    dataset = open_dataset(data_dir)
    for warning in dataset.warnings:
        click.echo(f"warning: {warning}", err=True)
    from edgead.export.bundle import write_trained
    from edgead.workspace import remember_model

    checkpoint = checkpoint_path_for(out)
    try:
        trained = detector.fit(
            dataset.train, config, weights=Path(weights) if weights else None, progress=_progress(quiet),
            device=device, checkpoint=checkpoint, resume=Path(resume) if resume else None,
        )
    except KeyboardInterrupt:
        if detector.resumable and checkpoint.is_file():
            click.echo(f"interrupted; continue with the same command and --resume {checkpoint}", err=True)
            sys.exit(130)
        raise
    path, manifest = write_trained(trained, Path(out))
    if detector.resumable:
        checkpoint.unlink(missing_ok=True)  # the model is written: the run is finished

    remember_model(path)
    click.echo(f"trained {method} on {len(dataset.train)} good images of {data_dir} ({dataset.layout} layout)")
    for line in trained.summary(manifest):
        click.echo(f"  {line}")
    timings = manifest["training"]["timings_s"]
    click.echo("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    shown = set()
    for engine in manifest["engines"]:
        name = f"{engine['format']}/{engine['precision']}"
        if name in shown:  # one parity report covers every graph of an engine format
            continue
        shown.add(name)
        p = engine["parity"]
        click.echo(
            f"  engine {name}: max output diff {p['max_rel_output_diff']:.2e} (rel), "
            f"max score diff {p['max_rel_score_diff']:.2e} (rel) on {p['images']} good images stored in the model"
        )
    click.echo(f"wrote {path} (the default model for later commands in this folder)")


@main.command("eval")
@click.argument("data_dir", type=click.Path(file_okay=False))
@model_option
@backend_option
@device_option
@precision_option
@tiling_options
@scorer_option
@inference_option
@restoration_options
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write an HTML report with heatmaps here.")
@click.option("--adopt-threshold", is_flag=True, help="Store this data's F1-max threshold in the model (it replaces the false-alarm-rate calibration's).")
@quiet_option
@loading_options
def eval_(data_dir, model, backend, device, precision, tile, stride, streams, threshold, false_alarm_rate, scorer, inference, restoration, eta, passes, as_json, report, adopt_threshold, quiet, loading):
    """Measure the deployed model on the test images of DATA_DIR: image/pixel AUROC, AUPRO, AUPR, F1-max."""
    from edgead.runtime.datasets import open_dataset
    from edgead.runtime.evaluate import evaluate

    dataset = open_dataset(data_dir)
    if adopt_threshold and scorer is not None:
        raise ConfigError("--adopt-threshold stores the threshold of the model's default scorer; leave --scorer out, or re-train with that scorer first")
    with _open_predictor(model, backend, device, precision, tile, stride, streams, threshold, false_alarm_rate, scorer, restoration, eta, passes, inference, loading) as predictor:
        html_report = None
        if report:
            from edgead.runtime.report import HtmlReport

            post = predictor.artifact.manifest["postprocess"]
            html_report = HtmlReport(low=post.get("map_low", 0.0), high=predictor.threshold)
        result = evaluate(predictor, dataset, progress=_progress(quiet or as_json), on_sample=html_report.add if html_report else None)
        backend_name = predictor.describe()
    if as_json:
        click.echo(json.dumps({"dataset": str(data_dir), "backend": backend_name, **result.metrics, "per_type_image_auroc": result.per_type_auroc, "notes": result.notes}, indent=2))
    else:
        click.echo(f"{data_dir}: {len(result.samples)} test images, backend {backend_name}")
        for key, value in result.metrics.items():
            click.echo(f"  {key:24s} {value:.4f}")
        for key, value in result.per_type_auroc.items():
            click.echo(f"  image_auroc[{key}]{'':{max(0, 11 - len(key))}s} {value:.4f}")
        for note in result.notes:
            click.echo(f"  note: {note}")
    if html_report:
        html_report.write(report, f"edgead eval — {data_dir}", result.metrics, result.per_type_auroc, result.notes)
        click.echo(f"report: {report}", err=as_json)
    if adopt_threshold:
        from edgead.runtime.threshold import adopt_threshold as adopt

        value = adopt(predictor.artifact, result.metrics["image_f1_max_threshold"], data_dir, result.metrics["image_f1_max"],
                      engine=predictor.backend.engine)
        click.echo(f"threshold {value:.4f} (F1-max {result.metrics['image_f1_max']:.4f} on {data_dir}) written to {predictor.artifact.path}", err=as_json)
        if predictor.artifact.signed_by:
            click.echo(f"note: {predictor.artifact.path} is no longer signed (the threshold changed it): sign it again with `edgead sign`", err=True)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for predictions.jsonl, maps/ and overlays/.")
@model_option
@backend_option
@device_option
@precision_option
@tiling_options
@scorer_option
@inference_option
@restoration_options
@click.option("--overlays", is_flag=True, help="Also write heatmap overlays as PNG under overlays/.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@quiet_option
@loading_options
def predict(inputs, out, model, backend, device, precision, tile, stride, streams, threshold, false_alarm_rate, scorer, inference, restoration, eta, passes, overlays, batch_size, quiet, loading):
    """Score images (files or folders): a JSONL line and a float32 TIFF map for each."""
    from edgead.runtime.predict import plan_outputs, predict_to_folder

    jobs = plan_outputs([Path(p) for p in inputs])
    with _open_predictor(model, backend, device, precision, tile, stride, streams, threshold, false_alarm_rate, scorer, restoration, eta, passes, inference, loading) as predictor:
        summary = predict_to_folder(predictor, jobs, Path(out), overlays=overlays, batch_size=batch_size, progress=_progress(quiet))
        backend_name = predictor.describe()
    click.echo(f"scored {summary['images']} images: {summary['anomalous']} anomalous (threshold {summary['threshold']:.4f}), backend {backend_name}")
    click.echo(f"wrote {Path(out) / 'predictions.jsonl'}")
    if summary["failed"]:
        from edgead.errors import DataError

        raise DataError(
            f"{summary['failed']} of {len(jobs)} images could not be read and were not scored (each has its reason in "
            f"predictions.jsonl; first: {summary['first_error']})"
        )


def _batch_profile(batch: int | None, batch_range: str | None) -> tuple[int, int, int]:
    if batch is not None and batch_range is not None:
        raise ConfigError("give either --batch N or --batch-range MIN:OPT:MAX, not both")
    if batch is not None:
        if batch < 1:
            raise ConfigError(f"--batch must be >= 1, got {batch}")
        return (batch, batch, batch)
    if batch_range is None:
        return (1, 8, 32)
    try:
        low, opt, high = (int(part) for part in batch_range.split(":"))
    except ValueError:
        raise ConfigError(f"--batch-range {batch_range!r} must look like MIN:OPT:MAX, e.g. 1:8:32") from None
    if not 1 <= low <= opt <= high:
        raise ConfigError(f"--batch-range {batch_range!r} needs 1 <= MIN <= OPT <= MAX")
    return (low, opt, high)


def triton_export_options(command):
    """--max-batch, --instances, --python-only, --model-name: the Triton repository's settings (--format triton only)."""
    command = click.option("--model-name", default=None, help="--format triton: the served model's name (default: the model file's name without .edgead).")(command)
    command = click.option("--no-dynamic-batching", "no_dynamic_batching", is_flag=True, help="--format triton: no dynamic batcher (each request runs alone).")(command)
    command = click.option("--python-only", is_flag=True, help="--format triton: one Python-backend model runs the whole path with edgead's runtime (ONNX Runtime inside), for servers without the ONNX Runtime backend.")(command)
    command = click.option("--instances", type=click.IntRange(min=1), default=None, help="--format triton: model instances per model (default 1).")(command)
    return click.option("--max-batch", type=click.IntRange(min=1), default=None, help="--format triton: max_batch_size of every model, the dynamic batcher's largest batch (default 8).")(command)


@main.command()
@model_option
@click.option("--engine", "precision", type=click.Choice(["fp32", "fp16", "int8"]), required=True, help="Precision of the engines.")
@click.option("--format", "format_name", type=click.Choice(["tensorrt", "onnx", "torchscript", "all", "triton"]), default=None, help="Default: the best this machine can build (TensorRT where present, else ONNX and TorchScript); triton: a Triton Inference Server model repository in --out.")
@click.option("--batch", type=int, default=None, help="Fixed batch size of the TensorRT profile.")
@click.option("--batch-range", default=None, help="TensorRT optimisation profile MIN:OPT:MAX (default 1:8:32).")
@click.option("--calib", "calib_dir", type=click.Path(file_okay=False), default=None, help="Good images for INT8 calibration (default: the training images).")
@click.option("--workspace-mb", type=int, default=1024, show_default=True, help="TensorRT builder workspace.")
@click.option("--check", "check_dir", type=click.Path(file_okay=False), default=None, help="Also compare image AUROC per format on this labelled dataset.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Engine, timing and calibration caches (default ~/.cache/edgead).")
@click.option("--out", type=click.Path(), default=None, help="Write the model with its engines here (default: update --model in place, atomically); --format triton: the repository folder.")
@click.option("--int8-calibrator", is_flag=True, help="TensorRT 10 only: INT8 by TensorRT's entropy calibrator instead of the Q/DQ graph.")
@limits_options
@triton_export_options
def export(model, precision, format_name, batch, batch_range, calib_dir, workspace_mb, check_dir, cache_dir, out, int8_calibrator,
           max_batch, instances, python_only, model_name, no_dynamic_batching, limits):
    """Build engines (TensorRT, ONNX, TorchScript) into the model and check each against the eager model."""
    import os

    from edgead.export.stage import export_model
    from edgead.workspace import resolve_model

    if format_name == "triton":
        foreign = [flag for flag, value in (("--batch", batch), ("--batch-range", batch_range), ("--calib", calib_dir), ("--check", check_dir),
                                            ("--cache-dir", cache_dir), ("--int8-calibrator", int8_calibrator),
                                            ("--workspace-mb", workspace_mb != 1024)) if value]
        if foreign:
            raise ConfigError(f"{', '.join(foreign)} do not apply to --format triton (it packs the engines the model holds); "
                              "build those first with `edgead export --engine ... --format onnx|tensorrt`, then export to Triton")
        return _export_triton(model, precision, out, max_batch, instances, python_only, model_name, no_dynamic_batching, limits)
    given = [flag for flag, value in (("--max-batch", max_batch), ("--instances", instances), ("--python-only", python_only), ("--model-name", model_name),
                                      ("--no-dynamic-batching", no_dynamic_batching)) if value]
    if given:
        raise ConfigError(f"{', '.join(given)} apply to --format triton only; leave them out or add --format triton --out REPO")
    if out and Path(out).is_dir():
        raise ConfigError(f"--out {out} is a folder; give the model file to write, e.g. --out model.edgead")

    if workspace_mb < 16:
        raise ConfigError(f"--workspace-mb {workspace_mb} is too small; give at least 16 (default 1024)")
    cache = Path(cache_dir) if cache_dir else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgead"
    result = export_model(
        resolve_model(model), precision, format_name, Path(out) if out else None, _batch_profile(batch, batch_range),
        workspace_mb, calib_dir, check_dir, cache, "calibrator" if int8_calibrator else "qdq", limits,
    )
    for note in result.notes:
        click.echo(f"note: {note}")
    first = result.engines[0]["parity"]
    click.echo(f"parity against {first['reference']} on {first['images']} good images stored in the model (largest differences, relative):")
    click.echo(f"{'engine':32s} {'device':6s} {'outputs':>10s} {'scores':>10s} {'threshold':>10s}")
    for entry in result.engines:
        p = entry["parity"]
        graph = p.get("graphs", {}).get(entry["graph"], p)
        name = f"{entry['graph']}: {entry['format']}/{entry['precision']}"
        own = f"{entry['threshold']:10.4f}" if "threshold" in entry else f"{'':>10s}"
        click.echo(f"{name:32s} {p['device']:6s} {graph['max_rel_output_diff']:10.2e} {p['max_rel_score_diff']:10.2e} {own}")
    calibrated = [e for e in result.engines if "calibration" in e]
    if calibrated:
        section = calibrated[0]["calibration"]
        click.echo(
            f"thresholds: each engine's own, for a false-alarm rate of {section['false_alarm_rate']:g} ({section['method']}, "
            f"through its own outputs, on {section['images_from']}); the model's FP32 threshold is {result.model_threshold:.4f}"
        )
    if result.aurocs:
        click.echo("image AUROC on " + str(check_dir) + ": " + ", ".join(f"{k} {v:.4f}" for k, v in result.aurocs.items()))
    for problem in result.problems:
        click.echo(f"WARNING: {problem}", err=True)
    click.echo(f"wrote {result.path}")


def _export_triton(model, precision, out, max_batch, instances, python_only, model_name, no_dynamic_batching, limits) -> None:
    """`export --format triton`: the model repository (the other export options were refused by the caller's context)."""
    from edgead.artifact import read_artifact
    from edgead.export.triton import TritonOptions, write_triton_repository
    from edgead.workspace import resolve_model

    if not out:
        raise ConfigError("--format triton needs --out REPO: the folder of the Triton model repository (created if needed)")
    options = TritonOptions(precision, max_batch or 8, instances or 1, python_only, model_name, not no_dynamic_batching)
    result = write_triton_repository(read_artifact(resolve_model(model), limits), Path(out), options)
    for name, kind in result.models.items():
        click.echo(f"  {name:32s} {kind}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"wrote {result.repository}: serve it with `tritonserver --model-repository {result.repository}`, "
               f"then `edgead run ... --triton HOST:8001 --model-name {result.name}`")


@main.command()
@model_option
@backend_option
@device_option
@precision_option
@scorer_option
@inference_option
@restoration_options
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@loading_options
def bench(model, backend, device, precision, scorer, inference, restoration, eta, passes, batch, iterations, warmup, loading):
    """Latency of the deployed path (engine, kNN, maps) on the model's own parity images."""
    from edgead.runtime.latency import measure_latency

    with _open_predictor(model, backend, device, precision, scorer=scorer, restoration=restoration, eta=eta, passes=passes, inference=inference, loading=loading) as predictor:
        stats = measure_latency(predictor, batch, iterations, warmup)
        click.echo(f"backend {predictor.describe()}, batch {batch}, {iterations} iterations after {warmup} warm-up")
        patches = predictor.patches_per_sample() if predictor.patches else 0
    for stage, values in stats.items():
        click.echo(f"  {stage:10s} median {values['median_ms']:8.2f} ms   p95 {values['p95_ms']:8.2f} ms")
    click.echo(f"  throughput {batch * 1000.0 / stats['total']['median_ms']:.1f} images/s")
    if patches:
        click.echo(f"  patches    {patches} per image, {batch * patches * 1000.0 / stats['total']['median_ms']:.0f} patches/s")


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@model_option
@backend_option
@device_option
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the updated model here (default: update --model in place, atomically).")
@click.option("--recalibrate", type=click.Choice(["auto", "all", "new"]), default="auto", show_default=True,
              help="Where the new threshold stands: 'all' = the new images' scores join the old calibration (more of the same "
                   "material); 'new' = the old calibration moved to the new images' level (their median score, each against "
                   "the bank without it), at the model's false-alarm rate and above every new image (new material; at least 10 "
                   "images); 'auto' = 'new' when the new images drifted (their median score above what 90% of the calibration's "
                   "good images scored, as `run` tests drift), else 'all'.")
@quiet_option
@loading_options
def enroll(inputs, model, backend, device, out, recalibrate, quiet, loading):
    """Add new good images (files or folders) to the model's memory bank, on the device, without an engine rebuild."""
    from edgead.runtime.enroll import enroll_images
    from edgead.runtime.predict import plan_outputs

    paths = [job.path for job in plan_outputs([Path(p) for p in inputs])]
    with _open_predictor(model, backend, device, loading=loading) as predictor:
        target = Path(out) if out else predictor.artifact.path
        summary = enroll_images(predictor, paths, target, progress=_progress(quiet), recalibrate=recalibrate)
        backend_name = predictor.describe()
    click.echo(f"enrolled {summary.images} good images into {target} (features by {backend_name})")
    for line in summary.lines():
        click.echo(f"  {line}")
    if predictor.artifact.signed_by:
        click.echo(f"note: {target} is no longer signed (enrolling changed it): sign it again with `edgead sign --key KEY {target}`", err=True)


@main.command()
@click.argument("key", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace KEY and KEY.pub if they exist.")
def keygen(key, force):
    """Make an Ed25519 key pair for signing models: KEY (private, keep it on the build machine) and KEY.pub (for the devices)."""
    from edgead.signing import generate_keypair

    private, public, key_id = generate_keypair(Path(key), force=force)
    click.echo(f"wrote {private} (private: keep it where models are built, readable only by you) and {public} (public, key {key_id})")
    click.echo(f"next: `edgead sign --key {private} model.edgead` after each build; devices run with `--verify-key {public}`")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--key", "key", type=click.Path(dir_okay=False), required=True, help="The private key (`edgead keygen KEY`).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the signed model here (default: sign MODEL in place, atomically).")
@limits_options
def sign(model, key, out, limits):
    """Sign MODEL's manifest (which holds every member's sha256) with an Ed25519 key, so that devices can refuse other models."""
    from edgead.signing import sign_artifact

    target, key_id = sign_artifact(Path(model), Path(key), Path(out) if out else None, limits)
    click.echo(f"signed {target} with key {key_id}; any later change to the model (enroll, export, --adopt-threshold) removes the signature")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--key", "key", type=click.Path(dir_okay=False), required=True, help="The public key (KEY.pub of `edgead keygen KEY`).")
@limits_options
def verify(model, key, limits):
    """Check that MODEL is signed by KEY and that every member matches the signed manifest; exit 2 if not."""
    from edgead.artifact import read_artifact

    artifact = read_artifact(Path(model), limits, verify_key=key)
    click.echo(f"{artifact.path}: signed by key {artifact.signed_by}; all {len(artifact.members)} members match the signed manifest")


@main.command()
@click.argument("uri", required=False)
@click.option("--camera", type=int, default=None, help="Camera index (0 is the first camera).")
@click.option("--video", type=click.Path(dir_okay=False), default=None, help="A video file, scored to its end.")
@click.option("--images", type=click.Path(file_okay=False), default=None, help="A folder of images, scored in sorted order.")
@model_option
@backend_option
@device_option
@precision_option
@tiling_options
@scorer_option
@inference_option
@restoration_options
@click.option("--headless", is_flag=True, help="No window (needed with opencv-python-headless or without a display).")
@click.option("--save-video", type=click.Path(dir_okay=False), default=None, help="Write the annotated frames to this video (.mp4; .avi for MJPG).")
@click.option("--events", type=click.Path(dir_okay=False), default=None, help="Append one JSON line per anomalous frame to this file.")
@click.option("--save-anomalies", type=click.Path(file_okay=False), default=None, help="Save each anomalous frame, annotated, as a PNG in this folder.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after this many frames.")
@click.option("--report-every", "report_every_s", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Seconds between FPS and latency reports on stderr.")
@click.option("--min-box-area", "min_box_area_px", type=click.FloatRange(min=0), default=16, show_default=True, help="Smallest anomalous region that gets a box, in frame pixels.")
@click.option("--drift-window", "drift_frames", type=click.IntRange(min=0), default=100, show_default=True,
              help="Frames whose median score is compared with the good calibration to detect drift (0: off).")
@click.option("--json", "as_json", is_flag=True, help="Print the end-of-run summary as one JSON object.")
@click.option("--triton", "triton_url", default=None, help="Score on this Triton server (HOST:PORT of its gRPC port) instead of in this process.")
@click.option("--model-name", "triton_model", default=None, help="With --triton: the served model (the name `edgead export --format triton` printed).")
@click.pass_context
@loading_options
def run(ctx, uri, camera, video, images, model, backend, device, precision, tile, stride, streams, threshold, false_alarm_rate, scorer, inference, restoration, eta, passes, headless, save_video, events, save_anomalies, max_frames, report_every_s, min_box_area_px, drift_frames, as_json, triton_url, triton_model, loading):
    """Score a live source until it ends or Ctrl-C: --camera N, --video PATH, --images DIR, or a URI (rtsp://, http://, a GStreamer pipeline)."""
    import signal
    from contextlib import ExitStack

    from edgead.runtime.drift import DriftMonitor
    from edgead.runtime.live import run_live
    from edgead.runtime.sinks import AnomalySaver, EventLog, VideoSink
    from edgead.runtime.sources import open_source

    given = [s for s in (uri, camera, video, images) if s is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one source: --camera N, --video PATH, --images DIR or a URI such as rtsp://host/stream")

    def stop(signum, frame):  # `systemctl stop` ends the run like Ctrl-C: files are closed and valid
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with ExitStack() as stack:
        if triton_url or triton_model:
            predictor = stack.enter_context(_open_triton(ctx, triton_url, triton_model, threshold, false_alarm_rate))
        else:
            predictor = stack.enter_context(_open_predictor(model, backend, device, precision, tile, stride, streams, threshold, false_alarm_rate, scorer, restoration, eta, passes, inference, loading))
        source = stack.enter_context(open_source(given[0]))
        sinks = []
        if events:
            sinks.append(stack.enter_context(EventLog(events)))
        if save_video:
            sinks.append(stack.enter_context(VideoSink(save_video, fps=source.fps or 30.0)))
        if save_anomalies:
            sinks.append(stack.enter_context(AnomalySaver(save_anomalies)))
        click.echo(f"scoring {source.name} with {predictor.describe()}; Ctrl-C stops", err=True)
        drift = DriftMonitor.for_predictor(predictor, drift_frames) if drift_frames else None
        if drift_frames and drift is None:
            click.echo("note: no drift watch: the model has no calibration scores (re-train it with this edgead)", err=True)
        summary = run_live(
            predictor, source, sinks, headless=headless, report_every_s=report_every_s, max_frames=max_frames,
            on_stats=lambda stats: click.echo(stats.line(), err=True), min_box_area_px=min_box_area_px, drift=drift,
        )
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
    else:
        for line in summary.lines():
            click.echo(line)
    for label, path in (("events", events), ("video", save_video), ("anomalous frames", save_anomalies)):
        if path:
            click.echo(f"{label}: {path}", err=as_json)


# what the server decides with --triton: the engines, their device and precision, tiling, the head's options
TRITON_SERVER_SIDE = ("model", "backend", "device", "precision", "tile", "stride", "streams", "scorer", "inference", "restoration", "eta", "passes",
                      "trust_torchscript", "verify_key", "max_model_mb", "max_manifest_mb")


def _open_triton(ctx: click.Context, url: str | None, name: str | None, threshold, false_alarm_rate):
    """`run --triton URL --model-name NAME`: a TritonPredictor; options the server decides are refused, not ignored."""
    from click.core import ParameterSource

    from edgead.runtime.triton_client import TritonPredictor

    if not url or not name:
        raise ConfigError("give both --triton HOST:PORT and --model-name NAME to score on a Triton server")
    if threshold is not None and false_alarm_rate is not None:
        raise ConfigError("give --threshold or --false-alarm-rate, not both")
    given = [p for p in TRITON_SERVER_SIDE if ctx.get_parameter_source(p) not in (ParameterSource.DEFAULT, None)]
    if given:
        spelled = ", ".join("--" + p.replace("_", "-") for p in given)
        raise ConfigError(f"{spelled} do not apply with --triton: the server runs the repository's engines as exported; leave them out "
                          "(or export the repository again with what you want)")
    return TritonPredictor(url, name, threshold, false_alarm_rate)


@main.command()
@click.argument("source")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for the PNG frames (created if needed).")
@click.option("--count", type=click.IntRange(min=1), default=100, show_default=True, help="Frames to save.")
@click.option("--every", "every_s", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds between saved frames (source time: the position in a video), to spread them over the run.")
def capture(source, out, count, every_s):
    """Save good frames from SOURCE (a camera index, a video, a URI: what `run` reads) as lossless PNGs for train or enroll."""
    from edgead.runtime.capture import capture_frames
    from edgead.runtime.sources import open_source

    with open_source(source) as opened:
        click.echo(f"capturing {count} frames from {opened.name}" + (f", one every {every_s:g} s" if every_s else "") + "; Ctrl-C stops", err=True)
        summary = capture_frames(opened, Path(out), count, every_s)
    if not summary.saved:
        raise ConfigError(f"{source} gave no frame: nothing was captured")
    sizes = ", ".join(f"{w}x{h}" for h, w in summary.sizes_hw)
    click.echo(f"captured {len(summary.saved)} frames ({sizes} px, as decoded for `edgead run`) of {summary.frames_seen} read, into {out}")
    if summary.stopped_by == "end" and len(summary.saved) < count:
        click.echo(f"note: the source ended before {count} frames", err=True)
    if len(summary.sizes_hw) > 1:
        click.echo("warning: the frames have different sizes: the camera or stream changed resolution during the capture", err=True)
    click.echo(f"next: check they are all good, then `edgead train {out}` (a new model) or `edgead enroll {out}` (add them to the model)")


@main.command()
def doctor():
    """What is installed and usable: torch, ONNX Runtime, TensorRT, cuda-python, GPU."""
    from edgead.doctor import report_lines

    for line in report_lines():
        click.echo(line)


@main.command("demo-data")
@click.argument("out_dir", type=click.Path(file_okay=False), default="demo/data")
@click.option("--category", "categories", multiple=True, help="Only these categories (brick, grass, gravel, tissue).")
@click.option("--train", "n_train", type=click.IntRange(min=1), default=40, show_default=True,
              help="Good training crops per category; the first 40 are always the same, so the rest are unseen good crops of the training area.")
@click.option("--test-good", "n_test_good", type=click.IntRange(min=0), default=10, show_default=True,
              help="Good test images per category (more measure a false-alarm rate finer; the training images stay the same).")
def demo_data(out_dir, categories, n_train, n_test_good):
    """Build the bundled demo dataset (scikit-image CC0 textures with synthetic defects) in MVTec layout."""
    from edgead.kit.demo_data import DEMO_CATEGORIES, make_demo_dataset

    chosen = tuple(categories) or DEMO_CATEGORIES
    unknown = sorted(set(chosen) - set(DEMO_CATEGORIES))
    if unknown:
        raise ConfigError(f"unknown demo categories {unknown}; choose from {', '.join(DEMO_CATEGORIES)}")
    for root in make_demo_dataset(Path(out_dir), categories=chosen, n_train=n_train, n_test_good=n_test_good):
        click.echo(str(root))


if __name__ == "__main__":  # pragma: no cover
    main()
