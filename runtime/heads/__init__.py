"""Scoring heads: engine outputs of a batch -> anomaly score grids. numpy (CuPy on CUDA), never torch.

One registry maps the manifest's `head.name` to its class; each head lives in its own module,
imported only when a model that uses it is opened.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

from edgead.artifact import Artifact
from edgead.errors import ArtifactError, ConfigError
from edgead.graphs import head_section
from edgead.runtime.heads.base import Head

# head name -> (module, class)
HEADS: dict[str, tuple[str, str]] = {
    "knn": ("edgead.runtime.heads.knn", "KnnHead"),
    "reconstruction": ("edgead.runtime.heads.reconstruction", "ReconstructionHead"),
    "support": ("edgead.runtime.heads.support", "SupportHead"),
    "restoration": ("edgead.runtime.heads.restoration", "RestorationHead"),
}


def with_scorer(artifact: Artifact, scorer: str | None) -> Artifact:
    """The artifact as seen with `scorer` as its head (and that scorer's calibration); None or the default: unchanged.

    Models that store several scorers list them under `scorers` (name -> its `head` section and its
    `postprocess` calibration); asking for one the model does not hold is a one-line error.
    """
    manifest = artifact.manifest
    if scorer is None or scorer == head_section(manifest, str(artifact.path))["name"]:
        return artifact
    held = manifest.get("scorers") or {}
    if scorer not in held:
        have = ", ".join(held) or head_section(manifest, str(artifact.path))["name"]
        raise ConfigError(
            f"--scorer {scorer}: {artifact.path} was trained with the scorer(s) {have} only; "
            f"leave --scorer out, or re-train with --scorer {scorer}"
        )
    manifest = copy.deepcopy(manifest)
    manifest["head"] = held[scorer]["head"]
    manifest["postprocess"].update(held[scorer].get("postprocess", {}))
    return dataclasses.replace(artifact, manifest=manifest)


def open_head(artifact: Artifact, device: str = "cpu", backends: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None) -> Head:
    """The head the manifest names, given the opened backends of the graphs it calls itself (by graph name).

    `options`: run-time options by name (None values are "not given"); one the head does not take is an error.
    """
    section = head_section(artifact.manifest, str(artifact.path))
    if section["name"] not in HEADS:
        raise ArtifactError(
            f"{artifact.path}: scoring head {section['name']!r} is not part of this edgead (it has {', '.join(HEADS)}); "
            "upgrade edgead to run this model"
        )
    module_name, class_name = HEADS[section["name"]]
    cls = getattr(importlib.import_module(module_name), class_name)
    given = {name: value for name, value in (options or {}).items() if value is not None}
    foreign = sorted(name for name in given if name not in cls.OPTIONS)
    if foreign:
        spelled = ", ".join("--" + name.replace("_", "-") for name in foreign)
        raise ConfigError(f"{spelled} does not apply to this model ({artifact.manifest.get('method')}, {section['name']} head); leave it out")
    if given:
        return cls(artifact, section, device, dict(backends or {}), given)
    return cls(artifact, section, device, dict(backends or {}))


__all__ = ["HEADS", "Head", "open_head", "with_scorer"]
