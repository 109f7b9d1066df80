import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgead.artifact import read_artifact
from edgead.cli import main
from edgead.runtime.images import read_image
from edgead.runtime.predictor import Predictor


def test_enroll_lowers_scores_of_enrolled_material(tiny_trained, tiny_data_root, tmp_path):
    _, path = tiny_trained
    model = shutil.copy(path, tmp_path / "m.edgead")
    new_good = sorted((tiny_data_root / "test" / "good").iterdir())
    images = [read_image(p) for p in new_good]
    calibrated_before = len(read_artifact(model).manifest["postprocess"]["calibration"]["scores"])
    with Predictor(read_artifact(model)) as before:
        scores_before = [p.score for p in before.predict(images)]
        engines_before = {e["member"]: e["sha256"] for e in before.artifact.manifest["engines"]}
    result = CliRunner().invoke(main, ["enroll", str(tiny_data_root / "test" / "good"), "--model", str(model), "-q"])
    assert result.exit_code == 0, result.output
    art = read_artifact(model)
    with Predictor(art) as after:
        scores_after = [p.score for p in after.predict(images)]
    # the enrolled images' own patches are now (mostly) in the bank: their scores drop
    assert np.mean(scores_after) < np.mean(scores_before)
    assert art.manifest["enrolled"][-1]["images"] == len(new_good)
    assert art.manifest["memory_bank"]["count"] == art.load_npy("memory_bank.npy").shape[0]
    assert {e["member"]: e["sha256"] for e in art.manifest["engines"]} == engines_before  # no engine rebuild
    # recalibrated: the new images' cross-calibrated scores join the calibration, the threshold is set again from it
    post = art.manifest["postprocess"]
    assert len(post["calibration"]["scores"]) == calibrated_before + len(new_good)
    assert post["image_threshold"] == post["calibration"]["threshold"]
    # said in words: how many new patch features joined, how many old ones were dropped, and the threshold's move
    assert "differ enough from the bank to join it" in result.output and "were dropped" in result.output
    assert "threshold" in result.output and "stands on" in result.output


def test_enroll_runs_with_torch_blocked(tiny_trained, tiny_data_root, tmp_path):
    _, path = tiny_trained
    model = shutil.copy(path, tmp_path / "m.edgead")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from edgead.cli import main\n"
        f"main(['enroll', {str(tiny_data_root / 'test' / 'good')!r}, '--model', {str(model)!r}, '-q'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "enrolled 4 good images" in done.stdout


def test_enroll_keeps_the_coreset_rule_of_the_images_and_the_copies_rows_apart(tiny_trained, tiny_data_root, tmp_path):
    # the bank copies went through a coreset of their own share at training: enroll applies the model's rule to the images'
    # features only (counted with the copies', the new images would keep several times the training images' share)
    from edgead.runtime.coreset import coreset_target

    _, path = tiny_trained
    model = shutil.copy(path, tmp_path / "m.edgead")
    info = read_artifact(model).manifest["memory_bank"]
    copies = info["nuisance_copies"]
    assert copies["seen"] == 2 * (info["patch_features_seen"] - copies["seen"])  # the defaults' 2 bank copies per image
    assert 0 < copies["kept"] < info["count"]
    result = CliRunner().invoke(main, ["enroll", str(tiny_data_root / "test" / "good"), "--model", str(model), "-q"])
    assert result.exit_code == 0, result.output
    after = read_artifact(model).manifest["memory_bank"]
    new_features = after["patch_features_seen"] - info["patch_features_seen"]
    images_seen = info["patch_features_seen"] - copies["seen"] + new_features
    assert after["count"] == coreset_target(info["coreset"], images_seen) + copies["kept"]
    assert after["nuisance_copies"] == copies
    assert f"plus {copies['kept']} rows for their nuisance copies" in result.output


def _new_material(tiny_data_root, out, count, noise=0.0):
    """`count` good images of 'new material': the test crops turned and flipped, with sensor noise of `noise` grey levels."""
    from edgead.runtime.images import write_image

    rng = np.random.default_rng(0)
    crops = [read_image(p) for p in sorted((tiny_data_root / "test" / "good").iterdir())]
    out.mkdir()
    for i in range(count):
        image = np.rot90(crops[i % len(crops)], i // len(crops)).astype(np.float32)
        image = np.clip(image + rng.normal(0, noise, image.shape), 0, 255) if noise else image
        write_image(out / f"{i:02d}.png", np.ascontiguousarray(image.astype(np.uint8)))
    return out


def test_enroll_recalibrate_new_moves_the_old_calibration_to_the_new_level(tiny_trained, tiny_data_root, tmp_path):
    from edgead.runtime.calibration import Calibration

    _, path = tiny_trained
    model = shutil.copy(path, tmp_path / "m.edgead")
    before = read_artifact(model).manifest["postprocess"]["calibration"]
    new = _new_material(tiny_data_root, tmp_path / "new", 12, noise=6.0)
    result = CliRunner().invoke(main, ["enroll", str(new), "--model", str(model), "--recalibrate", "new", "-q"])
    assert result.exit_code == 0, result.output
    manifest = read_artifact(model).manifest
    post, section = manifest["postprocess"], manifest["postprocess"]["calibration"]
    shifted = section["shifted"]
    new_scores = np.asarray(shifted["new_scores"])
    assert len(new_scores) == 12 and shifted["by"] == pytest.approx(np.median(new_scores) - np.median(before["scores"]))
    assert np.allclose(section["scores"], np.asarray(before["scores"]) + shifted["by"], atol=1e-5)  # the old shape, moved
    expected = Calibration.fit(section["scores"], 5, "x").threshold(before["false_alarm_rate"]).value
    assert post["image_threshold"] == pytest.approx(max(expected, new_scores.max()), abs=1e-5)
    assert post["image_threshold"] >= new_scores.max()  # no new good image flagged
    assert manifest["enrolled"][-1]["recalibrated"] == "new"
    assert "recalibrated for the new material (--recalibrate new" in result.output and "to the new material's level" in result.output


def test_enroll_recalibrate_new_refuses_too_few_images(tiny_trained, tiny_data_root, tmp_path):
    _, path = tiny_trained
    model = shutil.copy(path, tmp_path / "m.edgead")
    unchanged = read_artifact(model).manifest
    result = CliRunner().invoke(main, ["enroll", str(tiny_data_root / "test" / "good"), "--model", str(model), "--recalibrate", "new"])
    assert result.exit_code != 0
    assert "needs at least 10 of them" in result.output and "got 4" in result.output and "--recalibrate all" in result.output
    assert read_artifact(model).manifest == unchanged  # nothing written


def test_enroll_auto_recalibrates_for_drifted_material_only(tiny_trained, tiny_data_root, tmp_path):
    _, path = tiny_trained
    runs = {}
    for name, count, noise in (("drifted", 12, 25.0), ("few", 4, 25.0), ("same", 12, 0.0)):
        model = shutil.copy(path, tmp_path / f"{name}.edgead")
        new = _new_material(tiny_data_root, tmp_path / name, count, noise)
        result = CliRunner().invoke(main, ["enroll", str(new), "--model", str(model), "-q"])
        assert result.exit_code == 0, result.output
        runs[name] = (read_artifact(model).manifest, result.output)
    # noisy frames drift (their median above the calibration's 0.9 quantile, as run tests it): the threshold moves to them
    manifest, output = runs["drifted"]
    assert manifest["enrolled"][-1]["recalibrated"] == "new" and "shifted" in manifest["postprocess"]["calibration"]
    assert ", drift (--recalibrate all" in output
    # too few of them to set the threshold at their level: joined to the old calibration, and said so
    manifest, output = runs["few"]
    assert manifest["enrolled"][-1]["recalibrated"] == "all" and "are too few" in output
    # crops like the training ones are more of the same: their scores join the old calibration, as before --recalibrate
    manifest, output = runs["same"]
    assert manifest["enrolled"][-1]["recalibrated"] == "all" and "more of the same" in output
