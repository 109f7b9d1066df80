"""A self-contained HTML report: metrics table and, per test image, the image, its heatmap and its mask."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import cv2
import numpy as np

from edgead.runtime.datasets import Sample
from edgead.runtime.visualize import banner, colour_bar, heatmap_overlay, outline_mask, verdict_text

THUMB_PX = 192

# one line per metric, for a reader who does not know them
METRIC_HELP = {
    "image_auroc": "How well image scores rank defective above good images: 1 = every defective image scores above every good one, 0.5 = chance.",
    "image_f1_max": "The best F1 (harmonic mean of precision and recall on defective images) over every possible threshold.",
    "image_f1_max_threshold": "The threshold that gives that best F1 on this data.",
    "image_f1_at_threshold": "F1 at the threshold the model uses: what this data would see on the line.",
    "threshold": "Image threshold in use: a score above it is NG.",
    "false_alarm_rate": "Share of good test images judged NG at the threshold (each stops the line for nothing).",
    "false_alarm_rate_target": "The false-alarm rate the threshold was calibrated for, on good training images.",
    "miss_rate": "Share of defective test images judged OK at the threshold (each would ship).",
    "pixel_auroc": "How well pixel scores rank defect pixels above good pixels (all images pooled).",
    "pixel_aupr": "Area under the precision-recall curve of pixels: stricter than pixel AUROC when defects are small.",
    "aupro_0.3": "Mean overlap of each defect region with the pixels above a threshold, averaged up to a 30% false-positive rate (1 = every region found).",
}


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
        anomalous = score > self.high
        overlay = banner(heatmap_overlay(thumb, small_map, self.low, self.high), verdict_text(score, self.high, anomalous), anomalous)
        panels = [thumb]
        if mask is not None:
            small_mask = cv2.resize(mask.astype(np.uint8), (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_NEAREST)
            panels.append(outline_mask(thumb, small_mask.astype(bool)))
        blank = np.full((overlay.shape[0] - THUMB_PX, THUMB_PX, 3), 255, dtype=np.uint8)  # level with the banner
        panels = [np.concatenate([blank, panels[0]]), overlay] + [np.concatenate([blank, p]) for p in panels[1:]]
        gap = np.full((overlay.shape[0], 4, 3), 255, dtype=np.uint8)
        strip = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
        self.rows.append((sample, score, _png_data_uri(strip)))

    def _wrong(self, sample: Sample, score: float) -> str | None:
        anomalous = score > self.high
        if anomalous and sample.label == 0:
            return "false alarm"
        if not anomalous and sample.label == 1:
            return "missed defect"
        return None

    def _card(self, sample: Sample, score: float, uri: str) -> str:
        wrong = self._wrong(sample, score)
        verdict = "NG" if score > self.high else "OK"
        caption = f"{html.escape(sample.defect_type)}/{html.escape(sample.path.name)} — score {score:.4f} {verdict}"
        if wrong:
            caption = f"<b>{wrong}</b>: {caption}"
        return f'<figure{" class=wrong" if wrong else ""}><img src="{uri}" alt="{html.escape(sample.path.name)}"><figcaption>{caption}</figcaption></figure>'

    def write(self, path: str | os.PathLike, title: str, metrics: dict[str, float], per_type: dict[str, float], notes: list[str]) -> Path:
        path = Path(path)
        metric_rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td><td class=help>{html.escape(METRIC_HELP.get(k, ''))}</td></tr>" for k, v in metrics.items()
        )
        type_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in per_type.items())
        rows = sorted(self.rows, key=lambda r: (self._wrong(r[0], r[1]) is None, r[0].label, r[0].defect_type, r[0].path.name))
        cards = "".join(self._card(sample, score, uri) for sample, score, uri in rows)
        false_alarms = sum(self._wrong(s, score) == "false alarm" for s, score, _ in self.rows)
        misses = sum(self._wrong(s, score) == "missed defect" for s, score, _ in self.rows)
        note_items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        bar = _png_data_uri(colour_bar(512, self.low, self.high, 28))
        page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse;margin:0 2em 1em 0;display:inline-table;vertical-align:top}}
td,th{{border:1px solid #ccc;padding:3px 8px}} td.help{{font-size:12px;color:#444;max-width:40em}}
figure{{display:inline-block;margin:6px;padding:3px;border:3px solid transparent}} figcaption{{font-size:12px}}
figure.wrong{{border-color:#c81e1e;background:#fdecec}} .wrong figcaption b{{color:#c81e1e}}</style></head>
<body><h1>{html.escape(title)}</h1>
<table><tr><th>metric</th><th>value</th><th>what it says</th></tr>{metric_rows}</table>
<table><tr><th>defect type</th><th>image AUROC</th></tr>{type_rows}</table>
<ul>{note_items}</ul>
<p><b>{false_alarms} false alarm(s)</b> (good images judged NG) and <b>{misses} missed defect(s)</b> (defective images
judged OK) at the threshold {self.high:.4f}; they are framed in red and shown first.</p>
<p>Each strip: the test image, its anomaly heatmap with the verdict above it, and, where a mask exists, the ground
truth outlined in green. The heatmap's colours (below) are tied to the threshold: uncoloured is a typical good
pixel, blue to yellow rises towards the threshold, and red is above it — an image is NG when its score, by default
its hottest pixel, is above the threshold.</p>
<p><img src="{bar}" alt="colour scale"></p>
{cards}
</body></html>
"""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
        return path
