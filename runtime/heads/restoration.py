"""The restoration head (VQ-VAE + autoregressive prior, image or patch level): codes -> restored codes -> decoded difference.

The main graph (`encoder`) runs through the Predictor on the prepared frames and gives each frame's
code grid. This head calls the other two graphs itself: the `prior` to find and resample unlikely
codes (exactly, in raster order, or in a few parallel passes), and the `decoder` on the original and
the restored grids. The map is the squared difference of the two decodings (summed over RGB, at the
engine input size), smoothed with a bilateral filter as in the paper; a frame whose codes were all
likely is not decoded at all — its map is exactly zero.

`restoration.map` "likelihood" (edgead's default since issue 17) scores without restoring: the map is
the prior's negative log-likelihood of each code, -log p(z_mn | z_<mn), on the code grid (one prior
pass, no decoding, no eta); the Predictor upsamples it and smooths it (`postprocess.blur_sigma_px`).
Models without the key restore, as they were trained to.

`restoration.latents` "features" (kit/vq_features.py): the codes quantise CNN patch features, and the
encoder also gives each feature's distance to every codeword (`distances`, (N, h, w, K)). There is no
decoder: a code decodes to its codeword, so the restoration map is, on the code grid, each feature's
distance to the codeword of its restored code (its own code's where nothing was replaced), upsampled and
smoothed by the Predictor like the likelihood map. Models without the key quantise pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from edgead.artifact import Artifact, require_keys
from edgead.errors import ArtifactError, ConfigError
from edgead.runtime.heads.base import Head
from edgead.runtime.restoration import RESAMPLE, Restored, code_log_likelihood, restore_exact, restore_parallel

MODES = ("exact", "parallel")
MAPS = ("restoration", "likelihood")
LATENTS = ("pixels", "features")
GRAPHS = {"pixels": ("encoder", "prior", "decoder"), "features": ("encoder", "prior")}
SECTION_KEYS = {
    "restoration": dict,
    "restoration.grid": list,
    "restoration.codebook_size": int,
    "restoration.eta": (int, float),
    "restoration.passes": int,
    "restoration.mode": str,
    "restoration.resample": str,
    "restoration.seed": int,
    "restoration.chunk": int,
    "restoration.bilateral": dict,
}


def check_eta(eta: float, where: str = "--eta") -> float:
    """eta is a probability threshold: strictly between 0 and 1."""
    if not isinstance(eta, (int, float)) or not 0.0 < float(eta) < 1.0:
        raise ConfigError(f"{where} {eta!r} is out of range: the likelihood threshold must be between 0 and 1 (exclusive), e.g. 0.0005")
    return float(eta)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"--restoration {mode!r}: choose exact or parallel")
    return mode


class RestorationHead(Head):
    """Codes (N, h, w) -> squared difference of restored and plain decodings, (N, H, W) at the engine input size.

    Options (run time): `restoration` exact|parallel, `eta` (0 < eta < 1), `passes` (parallel).
    """

    name = "restoration"
    OPTIONS = ("restoration", "eta", "passes")

    def __init__(self, artifact: Artifact, section: dict[str, Any], device: str, backends: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> None:
        super().__init__(artifact, section, device, backends, options)
        manifest = artifact.manifest
        require_keys(manifest, SECTION_KEYS, str(artifact.path))
        info = manifest["restoration"]
        self.latents = info.get("latents", "pixels")  # models before feature latents quantise pixels
        if self.latents not in LATENTS:
            raise ArtifactError(f"{artifact.path}: manifest key 'restoration.latents' is {self.latents!r}, not one of {LATENTS}")
        present = set(manifest.get("graphs", {}))
        missing = [g for g in GRAPHS[self.latents] if g not in present]
        if missing:
            raise ArtifactError(f"{artifact.path} has no {' or '.join(repr(g) for g in missing)} graph; the restoration head needs "
                                f"{', '.join(GRAPHS[self.latents])}: re-train the model")
        self.grid = tuple(int(x) for x in info["grid"])
        self.codebook_size = int(info["codebook_size"])
        options = self.options
        self.mode = check_mode(options.get("restoration") or info["mode"])
        self.eta = check_eta(options["eta"] if options.get("eta") is not None else info["eta"], "--eta" if options.get("eta") is not None else "manifest restoration.eta")
        if self.mode == "exact" and options.get("passes") is not None:
            raise ConfigError("--passes applies to --restoration parallel; exact restoration runs a prior pass per replaced code, leave --passes out")
        self.passes = int(options.get("passes") or info["passes"])
        if self.passes < 1:
            raise ConfigError(f"--passes {self.passes}: parallel restoration needs at least one prior pass")
        self.resample = info["resample"]
        if self.resample not in RESAMPLE:
            raise ArtifactError(f"{artifact.path}: manifest key 'restoration.resample' is {self.resample!r}, not one of {RESAMPLE}")
        self.seed = int(info["seed"])
        self.chunk = max(1, int(info["chunk"]))
        self.bilateral = dict(info["bilateral"])
        self.map = info.get("map", "restoration")  # models before the likelihood map restore
        if self.map not in MAPS:
            raise ArtifactError(f"{artifact.path}: manifest key 'restoration.map' is {self.map!r}, not one of {MAPS}")
        given = [f"--{name}" for name in self.OPTIONS if options.get(name) is not None]
        if self.map == "likelihood" and given:
            raise ConfigError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to restoration maps; this model scores codes by their likelihood "
                              "(no restoration): leave them out, or train with --anomaly-map restoration")
        self.output = section.get("output", "codes")
        self.prior = self.backends["prior"]
        self.decoder = self.backends.get("decoder")  # feature latents have none
        self.last: Restored | None = None  # the last batch's restoration, for reports and tests

    def prior_log_probs(self, codes: np.ndarray) -> np.ndarray:
        """(n, h, w) codes -> (n, h, w, K) log-probabilities from the prior engine, in chunks."""
        parts = [np.asarray(self.prior.infer(codes[s : s + self.chunk])) for s in range(0, len(codes), self.chunk)]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if out.shape != (*codes.shape, self.codebook_size):
            raise ArtifactError(f"{self.artifact.path}: the prior engine returned {out.shape}, expected {(*codes.shape, self.codebook_size)}")
        return out.astype(np.float32, copy=False)

    def check_codes(self, codes: np.ndarray) -> None:
        if codes.ndim != 3 or tuple(codes.shape[1:]) != self.grid:
            raise ConfigError(f"code grid {tuple(codes.shape[1:])} is not the {self.grid} grid the prior was trained for; use the model's input size")
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ConfigError(f"codes must lie in [0, {self.codebook_size}), got {codes.min()}..{codes.max()}")

    def restore(self, codes: np.ndarray) -> Restored:
        """(N, h, w) int64 codes -> the restoration in this head's mode."""
        codes = np.asarray(codes, dtype=np.int64)
        self.check_codes(codes)
        if self.mode == "exact":
            return restore_exact(codes, self.prior_log_probs, self.eta, self.seed, self.resample)
        return restore_parallel(codes, self.prior_log_probs, self.eta, self.passes, self.seed, self.resample)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, h, w) codes -> (n, 3, H, W) decodings, in chunks."""
        if self.decoder is None:
            raise ConfigError(f"{self.artifact.path} quantises CNN features (--latents features): its codes decode to feature vectors, not "
                              "images, and it has no decoder graph; score it with its own map, or train with --latents pixels for decodings")
        return np.concatenate([np.asarray(self.decoder.infer(codes[s : s + self.chunk])) for s in range(0, len(codes), self.chunk)])

    def negative_log_likelihood(self, codes: np.ndarray) -> np.ndarray:
        """(N, h, w) codes -> (N, h, w) float32 -log p(z_mn | z_<mn) under the prior, one pass."""
        self.check_codes(codes)
        log_probs = self.prior_log_probs(codes)
        return -code_log_likelihood(log_probs, codes).astype(np.float32)

    def score(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        codes = np.asarray(outputs[self.output], dtype=np.int64)
        if self.map == "likelihood":
            return self.negative_log_likelihood(codes)
        restored = self.restore(codes)
        self.last = restored
        if self.latents == "features":
            return self.feature_distances(outputs, restored.codes)
        changed = np.flatnonzero(restored.changed.reshape(len(codes), -1).any(axis=1))
        height, width = self.artifact.manifest["input"]["size_px"]
        maps = np.zeros((len(codes), height, width), dtype=np.float32)
        if changed.size:
            decoded = self.decode(np.concatenate([codes[changed], restored.codes[changed]]))
            plain, fixed = decoded[: changed.size], decoded[changed.size :]
            difference = ((fixed.astype(np.float32) - plain.astype(np.float32)) ** 2).sum(axis=1)
            for i, index in enumerate(changed):
                maps[index] = self.smooth(difference[i])
        return maps

    def feature_distances(self, outputs: Mapping[str, np.ndarray], codes: np.ndarray) -> np.ndarray:
        """Each feature's distance to the codeword of its (restored) code: (N, h, w) float32 from `distances` (N, h, w, K)."""
        if "distances" not in outputs:
            raise ArtifactError(f"{self.artifact.path}: the encoder of feature latents gave no 'distances' output; re-export or re-train the model")
        distances = np.asarray(outputs["distances"], dtype=np.float32)
        if distances.shape != (*codes.shape, self.codebook_size):
            raise ArtifactError(f"{self.artifact.path}: the encoder's distances are {distances.shape}, expected {(*codes.shape, self.codebook_size)}")
        return np.take_along_axis(distances, codes[..., None], axis=-1)[..., 0]

    def smooth(self, difference: np.ndarray) -> np.ndarray:
        """(H, W) squared difference -> bilateral-filtered (the paper's (d, colour sigma, space sigma)); d = 0 turns it off."""
        d = int(self.bilateral.get("d", 0))
        if d <= 0:
            return difference
        return cv2.bilateralFilter(difference.astype(np.float32), d, float(self.bilateral["sigma_color"]), float(self.bilateral["sigma_space"]), borderType=cv2.BORDER_REFLECT)

    def describe(self) -> str:
        if self.map == "likelihood":
            return f"code likelihood (-log p of each code under the prior, {self.grid[0]}x{self.grid[1]} codes of {self.codebook_size}, no restoration)"
        how = "exact, raster order" if self.mode == "exact" else f"parallel, at most {self.passes} prior pass{'es' if self.passes > 1 else ''}"
        what = ", feature distance to the restored codeword" if self.latents == "features" else ""
        return f"restoration ({how}, eta {self.eta:g}, {self.grid[0]}x{self.grid[1]} codes of {self.codebook_size}{what})"
