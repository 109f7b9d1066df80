"""Latency of the deployed path per stage, on images carried by the artifact itself."""

from __future__ import annotations

import time

import numpy as np

from edgead.errors import ArtifactError
from edgead.runtime.predictor import Predictor


def measure_latency(predictor: Predictor, batch: int, iterations: int, warmup: int = 5) -> dict[str, dict[str, float]]:
    """Median and p95 milliseconds of inference, the scoring head, maps and their total, for batches of `batch`."""
    info = predictor.artifact.manifest.get("parity_images")
    if not info:
        raise ArtifactError("the model carries no sample images to time with; re-train it with this edgead")
    samples = predictor.artifact.load_npy(info["member"])
    images = np.ascontiguousarray(samples[np.arange(batch) % samples.shape[0]])
    times: dict[str, list[float]] = {"inference": [], "head": [], "maps": [], "total": []}
    for step in range(warmup + iterations):
        t0 = time.perf_counter()
        inputs, batch = predictor.sample_batch(images)  # patch models: cutting the frames into patches is part of inference
        outputs = predictor.infer(inputs)
        t1 = time.perf_counter()
        grids = predictor.head(outputs)
        t2 = time.perf_counter()
        predictor.maps(grids, batch)
        t3 = time.perf_counter()
        if step >= warmup:
            for key, value in (("inference", t1 - t0), ("head", t2 - t1), ("maps", t3 - t2), ("total", t3 - t0)):
                times[key].append(value * 1000.0)
    return {k: {"median_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95))} for k, v in times.items()}
