"""The training half of every detector, by name: one registry, so that no stage asks `if method == ...`.

A detector module (kit/<detector>.py) defines `DETECTOR`, an object with:
- `name`, and `config_class`: a frozen dataclass whose fields are the CLI options of `edgead train`;
- `resumable`: whether it trains in epochs that `--resume` can continue;
- `fit(train_paths, config, *, weights=None, progress=..., device="cpu", checkpoint=None, resume=None)`
  (`checkpoint`: where to write the training checkpoint after each epoch; `resume`: one to continue)
  -> a trained detector with
  `config`, `graphs` (eager torch modules by graph name, in eval mode, as listed under the manifest's
  `graphs`), `parity_images` ((N, H, W, 3) uint8 at the input size: good images that engines are checked
  on), `artifact_parts()` -> (manifest, members) without engines, and `summary(manifest)` -> lines
  that `edgead train` prints;
- `load_graphs(artifact)` -> the eager modules rebuilt from the artifact's own config and weights.

Thresholds: `fit` sets the manifest's `postprocess` threshold and calibration with
`edgead.kit.eager.calibrate_good_images` (config fields `false_alarm_rate`, `folds`, `seed`; defaults where
a config lacks them), which scores good images through the runtime's Predictor and the detector's head.
Cross-calibration needs each fold scored by a model built without it: that hook is the head's
`fold_scores` (`refits_per_fold = True`; the kNN head builds fold banks from the other folds' features,
so export and enroll can recalibrate without torch). A head without it (a learned model would have to be
retrained per fold) falls back to the held-out good images (`holdout_fraction`), or, with none held out,
to the training images' own, optimistic scores — recorded in the manifest and warned.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from edgead.errors import ConfigError

# method name -> module defining DETECTOR
DETECTORS: dict[str, str] = {
    "patchcore": "edgead.kit.patchcore",
    "patchwise-ae": "edgead.kit.patchwise_ae",
    "small-ae": "edgead.kit.small_ae_detector",
    "vq-restore": "edgead.kit.vq_restore",
}


def get_detector(method: str) -> Any:
    """The DETECTOR of `method`; a ConfigError lists the known ones."""
    if method not in DETECTORS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(DETECTORS)}")
    return importlib.import_module(DETECTORS[method]).DETECTOR


def build_config(detector: Any, options: dict[str, Any], flags: dict[str, str] | None = None) -> Any:
    """The detector's config from options named after its fields; None means "not given" (the field's default).

    An option the detector does not have is an error, not ignored: `flags` maps field names to the
    CLI spelling for the message.
    """
    fields = {f.name for f in dataclasses.fields(detector.config_class)}
    given = {name: value for name, value in options.items() if value is not None}
    foreign = sorted(name for name in given if name not in fields)
    if foreign:
        spelled = ", ".join((flags or {}).get(name, name) for name in foreign)
        raise ConfigError(f"{spelled} does not apply to --method {detector.name}; leave it out or pick another method")
    return detector.config_class(**given)
