"""Write a freshly trained detector as a .edgead with the engines this machine can build and their parity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgead.artifact import npy_bytes, write_artifact
from edgead.export.engines import FORMATS, ExportOptions, ModelSource, add_engine, in_memory
from edgead.export.parity import parity_report
from edgead.graphs import graph_specs

# built at train time so that eval and predict run on the deployed path at once
TRAIN_TIME_FORMATS = ("onnx", "torchscript")
PARITY_MEMBER = "parity_images.npy"


def write_trained(trained: Any, out: Path, formats: Sequence[str] = TRAIN_TIME_FORMATS) -> tuple[Path, dict[str, Any]]:
    """Manifest + members + FP32 engines of every graph (parity-checked on held-out good images), written atomically.

    `trained` is what a detector's fit returned (kit/detectors.py). Its parity images travel inside
    the artifact (parity_images.npy) so that engines built later, on another machine, are checked on
    the same images.
    """
    manifest, members = trained.artifact_parts()
    images = trained.parity_images
    members[PARITY_MEMBER] = npy_bytes(images)
    manifest["parity_images"] = {"member": PARITY_MEMBER, "count": int(images.shape[0])}
    specs = graph_specs(manifest)
    for name in formats:
        entries = [
            add_engine(manifest, members, FORMATS[name], ModelSource(specs[graph], module), ExportOptions("fp32"))
            for graph, module in trained.graphs.items()
        ]
        parity = parity_report(in_memory(manifest, members), trained.graphs, images, FORMATS[name].backend, "fp32")
        for entry in entries:
            entry["parity"] = parity
    return write_artifact(out, manifest, members), manifest
