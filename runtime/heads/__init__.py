"""Scoring heads: engine outputs of a batch -> anomaly score grids. numpy (CuPy on CUDA), never torch.

One registry maps the manifest's `head.name` to its class; each head lives in its own module,
imported only when a model that uses it is opened.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from edgead.artifact import Artifact
from edgead.errors import ArtifactError
from edgead.graphs import head_section
from edgead.runtime.heads.base import Head

# head name -> (module, class)
HEADS: dict[str, tuple[str, str]] = {
    "knn": ("edgead.runtime.heads.knn", "KnnHead"),
}


def open_head(artifact: Artifact, device: str = "cpu", backends: Mapping[str, Any] | None = None) -> Head:
    """The head the manifest names, given the opened backends of the graphs it calls itself (by graph name)."""
    section = head_section(artifact.manifest, str(artifact.path))
    if section["name"] not in HEADS:
        raise ArtifactError(
            f"{artifact.path}: scoring head {section['name']!r} is not part of this edgead (it has {', '.join(HEADS)}); "
            "upgrade edgead to run this model"
        )
    module_name, class_name = HEADS[section["name"]]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(artifact, section, device, dict(backends or {}))


__all__ = ["HEADS", "Head", "open_head"]
