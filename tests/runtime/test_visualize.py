"""One colour scale tied to the threshold: red means above it, everywhere; banners and colour bars hide no pixel."""

from pathlib import Path

import numpy as np

from edgead.runtime.datasets import Sample
from edgead.runtime.report import HtmlReport
from edgead.runtime.visualize import LUT, colour_bar, colourise, framed, heatmap_overlay, banner, normalise_map


def _red(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(int)
    return (rgb[..., 0] > 120) & (rgb[..., 0] > rgb[..., 1] + 80)


def test_red_means_at_or_above_the_threshold():
    levels = np.linspace(0, 1.5, 3001)
    red = _red(colourise(levels))
    assert not red[levels < 1.0].any()
    assert red[levels >= 1.0].all()
    assert not _red(LUT[: int(np.ceil(255 / 1.5))]).any()


def test_a_map_just_below_the_threshold_shows_no_red_and_just_above_does():
    image = np.full((32, 32, 3), 128, np.uint8)
    below = np.full((32, 32), 9.99, np.float32)
    assert not _red(heatmap_overlay(image, below, 0.0, 10.0)).any()
    above = below.copy()
    above[8:16, 8:16] = 10.5
    red = _red(heatmap_overlay(image, above, 0.0, 10.0))
    assert red[8:16, 8:16].all() and red.sum() == 64


def test_typical_good_pixels_stay_nearly_uncoloured():
    image = np.full((8, 8, 3), 100, np.uint8)
    out = heatmap_overlay(image, np.zeros((8, 8), np.float32), 0.0, 10.0)
    assert np.abs(out.astype(int) - 100).max() <= 2
    assert normalise_map(np.array([20.0]), 0.0, 10.0)[0] == 1.5


def test_banner_and_colour_bar_sit_outside_the_image():
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    with_banner = banner(image, "OK 1 <= 2", False)
    bar_px = with_banner.shape[0] - 64
    assert bar_px > 0 and np.array_equal(with_banner[bar_px:], image)
    full = framed(image, "NG 3 > 2", True, 0.0, 2.0)
    assert np.array_equal(full[bar_px : bar_px + 64], image)
    assert full.shape[0] == bar_px + 64 + colour_bar(80, 0.0, 2.0).shape[0]


def test_report_explains_metrics_shows_the_scale_and_marks_wrong_verdicts(tmp_path):
    report = HtmlReport(low=0.0, high=1.0)
    image = np.full((40, 40, 3), 90, np.uint8)
    cases = [(Sample(Path("good/a.png"), 0, "good", None), 2.0), (Sample(Path("good/b.png"), 0, "good", None), 0.5),
             (Sample(Path("scratch/c.png"), 1, "scratch", None), 0.2), (Sample(Path("scratch/d.png"), 1, "scratch", None), 3.0)]
    for sample, score in cases:
        report.add(sample, image, score, np.full((40, 40), score, np.float32), None)
    page = report.write(tmp_path / "r.html", "t", {"image_auroc": 0.5, "false_alarm_rate": 0.5}, {}, []).read_text()
    assert "How well image scores rank defective above good images" in page
    assert "Share of good test images judged NG" in page
    assert "1 false alarm(s)" in page and "1 missed defect(s)" in page
    assert page.count('class=wrong') == 2 and "<b>false alarm</b>: good/a.png" in page and "<b>missed defect</b>: scratch/c.png" in page
    assert 'alt="colour scale"' in page
