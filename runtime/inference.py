"""Inference modes of a model that stores several ways to score a frame (small-ae: `dense` frames or stride-based `patches`).

The manifest's top level describes the default mode, so that every stage runs it without knowing about modes.
`inference.modes` holds each mode's own `input`, `tiling`, main `graph`, `postprocess` settings, per-scorer
calibrations and optionally `runtime` settings (engine batch size) and `heads` (per scorer, keys of its head section); the artifact as seen in another mode has those in place of the default's (as `--scorer` swaps heads).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from edgead.artifact import Artifact
from edgead.errors import ArtifactError, ConfigError

MODE_KEYS = ("input", "tiling", "graph", "postprocess", "calibrations")


def stored_modes(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The modes a model holds, its default first; () for a model without modes."""
    info = manifest.get("inference")
    if not info:
        return ()
    return (info["default"], *[m for m in info["modes"] if m != info["default"]])


def inference_manifest(manifest: dict[str, Any], mode: str | None, source: str = "manifest") -> dict[str, Any]:
    """`manifest` as seen in inference `mode` (None or the default: unchanged); a mode the model lacks is a one-line error."""
    info = manifest.get("inference")
    if mode is None or (info and mode == info.get("default")):
        return manifest
    if not info:
        patches = bool((manifest.get("tiling") or {}).get("patches"))
        if patches and mode == "patches":
            return manifest  # a patch model trained before inference modes: stride-based patches are what it does
        what = "was trained before dense inference and scores stride-based patches only" if patches else f"({manifest.get('method')}) has one way to score images"
        raise ConfigError(f"--inference {mode}: {source} {what}; leave --inference out" + (", or re-train it" if patches else ""))
    if mode not in info.get("modes", {}):
        raise ConfigError(f"--inference {mode}: {source} stores the inference mode(s) {', '.join(stored_modes(manifest))} only; leave --inference out, or re-train it")
    section = info["modes"][mode]
    missing = [key for key in MODE_KEYS if key not in section]
    if missing:
        raise ArtifactError(f"{source}: manifest key 'inference.modes.{mode}' lacks {missing}; re-train the model")
    manifest = copy.deepcopy(manifest)
    manifest["input"], manifest["tiling"] = section["input"], section["tiling"]
    if "runtime" in section:
        manifest["runtime"] = {**manifest.get("runtime", {}), **section["runtime"]}
    manifest["postprocess"].update(section["postprocess"])
    calibrations, heads = section["calibrations"], section.get("heads", {})
    for name, scorer in (manifest.get("scorers") or {}).items():
        scorer["head"].update(graph=section["graph"], **heads.get(name, {}))
        scorer["postprocess"] = calibrations.get(name, {})
    manifest["head"] = {**manifest["head"], "graph": section["graph"], **heads.get(manifest["head"]["name"], {})}
    manifest["postprocess"].update(calibrations.get(manifest["head"]["name"], {}))
    manifest["inference"]["default"] = mode
    return manifest


def with_inference(artifact: Artifact, mode: str | None) -> Artifact:
    """The artifact as seen in inference `mode` (None or the default: unchanged)."""
    manifest = inference_manifest(artifact.manifest, mode, str(artifact.path))
    return artifact if manifest is artifact.manifest else dataclasses.replace(artifact, manifest=manifest)  # keeps members and signed_by
