import shutil
import subprocess
import sys

import numpy as np
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
