"""The line as a new user meets it: PatchCore with its defaults, an MJPG video of the demo's test crops (another part of
the photo than training, good and defective mixed), `edgead run --video ... --headless --events`: good frames stay good."""

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgead.cli import main
from edgead.kit.demo_data import make_demo_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from line_video import flagged_shares, write_line_video  # noqa: E402


@pytest.mark.slow
def test_an_mjpg_video_of_good_and_defective_crops_flags_the_defects_and_not_the_good_frames(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (root,) = make_demo_dataset(tmp_path / "data", categories=("brick",), n_test_good=20)
    runner = CliRunner()
    trained = runner.invoke(main, ["train", str(root), "--out", "brick.edgead", "-q"])
    assert trained.exit_code == 0, trained.output
    assert "nuisance copies: 4 copies per good image (2 in the bank" in trained.output
    labels = write_line_video(root, tmp_path / "line.avi")
    events = tmp_path / "events.jsonl"
    ran = runner.invoke(main, ["run", "--video", str(tmp_path / "line.avi"), "--model", "brick.edgead", "--headless",
                               "--events", str(events), "--backend", "onnxruntime", "--report-every", "0"])
    assert ran.exit_code == 0, ran.output
    shares = flagged_shares(labels, events)
    assert (shares["good_frames"], shares["defective_frames"]) == (20, 18)
    assert shares["good_flagged"] <= 0.10 * shares["good_frames"], shares  # at the default false-alarm rate, 0.01
    assert shares["defective_flagged"] >= 0.85 * shares["defective_frames"], shares
    assert "false_alarm_storm" not in shares["drift_events"]
    flagged = shares["good_flagged"] + shares["defective_flagged"]
    assert f"({flagged / len(labels):.1%} flagged), drift filling" in ran.output  # the summary says the share (38 frames < a window)
