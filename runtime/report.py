"""A self-contained HTML report: metrics table and, per test image, the image, its heatmap and its mask."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import cv2
import numpy as np

from edgead.runtime.datasets import Sample
from edgead.runtime.visualize import banner, heatmap_overlay, outline_mask

THUMB_PX = 192


def _png_data_uri(rgb: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - imencode of a uint8 RGB array does not fail
        raise RuntimeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


class HtmlReport:
    """Collects one strip per sample (call `add`), then `write(path, metrics, ...)`."""

    def __init__(self, low: float, high: float, max_samples: int = 300) -> None:
        self.low, self.high = low, high
        self.max_samples = max_samples
        self.rows: list[tuple[Sample, float, str]] = []

    def add(self, sample: Sample, image: np.ndarray, score: float, anomaly_map: np.ndarray, mask: np.ndarray | None) -> None:
        if len(self.rows) >= self.max_samples:
            return
        thumb = cv2.resize(image, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA)
        small_map = cv2.resize(anomaly_map, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_LINEAR)
        overlay = banner(heatmap_overlay(thumb, small_map, self.low, self.high), f"{score:.3f}", score > self.high)
        panels = [thumb, overlay]
        if mask is not None:
            small_mask = cv2.resize(mask.astype(np.uint8), (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_NEAREST)
            panels.append(outline_mask(thumb, small_mask.astype(bool)))
        gap = np.full((THUMB_PX, 4, 3), 255, dtype=np.uint8)
        strip = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
        self.rows.append((sample, score, _png_data_uri(strip)))

    def write(self, path: str | os.PathLike, title: str, metrics: dict[str, float], per_type: dict[str, float], notes: list[str]) -> Path:
        path = Path(path)
        metric_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in metrics.items())
        type_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in per_type.items())
        cards = "".join(
            f'<figure><img src="{uri}" alt="{html.escape(s.path.name)}"><figcaption>{html.escape(s.defect_type)}/'
            f"{html.escape(s.path.name)} — score {score:.4f}{' NG' if score > self.high else ' OK'}</figcaption></figure>"
            for s, score, uri in sorted(self.rows, key=lambda r: (r[0].label, r[0].defect_type, r[0].path.name))
        )
        note_items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse;margin:0 2em 1em 0;display:inline-table;vertical-align:top}}
td,th{{border:1px solid #ccc;padding:3px 8px}} figure{{display:inline-block;margin:6px}} figcaption{{font-size:12px}}</style></head>
<body><h1>{html.escape(title)}</h1>
<table><tr><th>metric</th><th>value</th></tr>{metric_rows}</table>
<table><tr><th>defect type</th><th>image AUROC</th></tr>{type_rows}</table>
<ul>{note_items}</ul>
<p>Each strip: the test image, its anomaly heatmap (blue = like the good images, red = at or above the
threshold {self.high:.4f}; banner red = NG) and, where a mask exists, the ground truth outlined in green.</p>
{cards}
</body></html>
"""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
        return path
