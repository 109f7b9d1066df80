"""`edgead predict`: score files and folders into predictions.jsonl, float32 TIFF maps and overlays."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgead.errors import ConfigError, DataError, EdgeADError
from edgead.progress import Progress, silent_progress
from edgead.runtime.images import is_image_path, list_images, read_image, write_image
from edgead.runtime.postprocess import resize_map
from edgead.runtime.predictor import Predictor
from edgead.runtime.visualize import framed, heatmap_overlay, verdict_text

PREDICTIONS = "predictions.jsonl"


@dataclass(frozen=True)
class Job:
    """One image to score and where its outputs go, relative to the output folder (without suffix)."""

    path: Path
    relative: Path


def plan_outputs(inputs: list[Path]) -> list[Job]:
    """Expand files and folders; a folder's tree is mirrored under its own name, a file goes at the top."""
    jobs: list[Job] = []
    for item in inputs:
        if item.is_dir():
            jobs += [Job(p, Path(item.resolve().name) / p.relative_to(item).with_suffix("")) for p in list_images(item)]
        elif item.is_file():
            if not is_image_path(item):
                raise DataError(f"{item} is not an image (accepted: png, jpg, jpeg, bmp, tif, tiff)")
            jobs.append(Job(item, Path(item.stem)))
        else:
            raise DataError(f"input {item} does not exist: give image files or folders of images")
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.relative in seen:
            raise DataError(f"{seen[job.relative]} and {job.path} would write the same map {job.relative}.tiff; rename one or score them separately")
        seen[job.relative] = job.path
    return jobs


def write_map_tiff(path: Path, anomaly_map: np.ndarray) -> None:
    """A float32 single-channel TIFF; raises EdgeADError if OpenCV cannot write it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".tiff", anomaly_map.astype(np.float32))
    if not ok:
        raise EdgeADError(f"could not encode the anomaly map for {path}")
    encoded.tofile(str(path))


def predict_to_folder(
    predictor: Predictor,
    jobs: list[Job],
    out: Path,
    overlays: bool = False,
    batch_size: int = 8,
    progress: Progress = silent_progress,
) -> dict:
    """Score `jobs` in batches; each JSONL line is flushed once its map is on disk.

    An image that cannot be read does not stop the run: its line says {"path", "error"} and the
    summary counts it under "failed" (with the first reason under "first_error").
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    out.mkdir(parents=True, exist_ok=True)
    post = predictor.artifact.manifest["postprocess"]
    low, high = float(post.get("map_low", 0.0)), predictor.threshold
    n_anomalous, failed = 0, []
    with open(out / PREDICTIONS, "w", encoding="utf-8") as log, progress("predict", len(jobs)) as advance:
        for start in range(0, len(jobs), batch_size):
            batch, images = [], []
            for job in jobs[start : start + batch_size]:
                try:
                    images.append(read_image(job.path))
                    batch.append(job)
                except (DataError, OSError) as exc:
                    reason = str(exc) if isinstance(exc, DataError) else f"{exc.strerror or exc}: {job.path}"
                    failed.append(reason)
                    log.write(json.dumps({"path": str(job.path), "error": reason}) + "\n")
                    log.flush()
            for job, image, pred in zip(batch, images, predictor.predict(images)):
                full_map = resize_map(pred.anomaly_map, image.shape[:2])
                map_rel = Path("maps") / job.relative.with_suffix(".tiff")
                write_map_tiff(out / map_rel, full_map)
                record = {"path": str(job.path), "score": pred.score, "anomalous": pred.anomalous, "threshold": high, "map": map_rel.as_posix()}
                if overlays:
                    overlay_rel = Path("overlays") / job.relative.with_suffix(".png")
                    (out / overlay_rel).parent.mkdir(parents=True, exist_ok=True)
                    picture = framed(heatmap_overlay(image, full_map, low, high), verdict_text(pred.score, high, pred.anomalous), pred.anomalous, low, high)
                    write_image(out / overlay_rel, picture)
                    record["overlay"] = overlay_rel.as_posix()
                log.write(json.dumps(record) + "\n")
                log.flush()
                n_anomalous += pred.anomalous
            advance(len(jobs[start : start + batch_size]))
        os.fsync(log.fileno())
    return {"images": len(jobs) - len(failed), "anomalous": n_anomalous, "threshold": high, "failed": len(failed),
            "first_error": failed[0] if failed else None}
