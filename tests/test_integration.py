"""Train a tiny model on synthetic data, then exercise eval and predict through the runtime and the CLI."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgead.artifact import read_artifact
from edgead.cli import main
from edgead.kit.patchcore import load_feature_model
from edgead.runtime.datasets import open_dataset
from edgead.runtime.images import read_image
from edgead.runtime.predictor import Predictor
from edgead.runtime.preprocess import stack_batch

SIZE = 128


@pytest.fixture(scope="module")
def data_root(tiny_data_root):
    return tiny_data_root


@pytest.fixture(scope="module")
def trained(tiny_trained):
    return tiny_trained


def test_defects_score_above_good(trained, data_root):
    _, path = trained
    dataset = open_dataset(data_root)
    with Predictor(read_artifact(path)) as predictor:
        preds = predictor.predict([read_image(s.path) for s in dataset.test])
    good = [p.score for p, s in zip(preds, dataset.test) if s.label == 0]
    bad = [p.score for p, s in zip(preds, dataset.test) if s.label == 1]
    assert np.mean(bad) > np.mean(good)
    assert np.median(bad) > np.median(good)


def test_artifact_records_what_the_runtime_needs(trained):
    fitted, path = trained
    manifest = read_artifact(path).manifest
    assert manifest["memory_bank"]["count"] == fitted.bank.shape[0]
    assert manifest["memory_bank"]["dtype"] == "float16"
    assert manifest["features"]["grid"] == [SIZE // 8, SIZE // 8]
    assert {(e["backend"], e["precision"]) for e in manifest["engines"]} == {("onnxruntime", "fp32"), ("torchscript", "fp32")}
    for engine in manifest["engines"]:
        assert engine["parity"]["max_rel_output_diff"] < 1e-4
        assert engine["parity"]["max_rel_score_diff"] < 1e-4
    assert manifest["postprocess"]["image_threshold"] >= manifest["postprocess"]["image_score_max"]


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript"])
def test_runtime_matches_training_code(trained, data_root, backend):
    fitted, path = trained
    artifact = read_artifact(path)
    images = stack_batch([read_image(s.path) for s in open_dataset(data_root).test[:4]], (SIZE, SIZE))
    eager = load_feature_model(artifact)
    with torch.inference_mode():
        expected = eager(torch.from_numpy(images)).numpy()
        original = fitted.model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(expected, original, rtol=0, atol=1e-6)  # weights round-trip exactly
    with Predictor(artifact, backend=backend, trust_code=backend == "torchscript") as predictor:  # our own model
        got = predictor.backend.infer(images)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_cli_eval_and_predict(trained, data_root, tmp_path, monkeypatch):
    _, path = trained
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["eval", str(data_root), "--model", str(path), "--json", "--report", "r.html"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    for key in ("image_auroc", "pixel_auroc", "aupro_0.3", "pixel_aupr", "image_f1_max"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["image_auroc"] > 0.75 and metrics["pixel_auroc"] > 0.9
    assert set(metrics["per_type_image_auroc"]) == {"scratch", "spot", "cutpaste"}
    assert "<img" in (tmp_path / "r.html").read_text()

    test_dir = data_root / "test"
    result = runner.invoke(main, ["predict", str(test_dir), "--model", str(path), "--out", "out", "--overlays", "-q"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == len(open_dataset(data_root).test)
    for line in lines:
        assert {"path", "score", "anomalous", "map"} <= set(line)
        tiff = cv2.imread(str(tmp_path / "out" / line["map"]), cv2.IMREAD_UNCHANGED)
        assert tiff.dtype == np.float32 and tiff.shape == read_image(line["path"]).shape[:2]
        assert (tmp_path / "out" / line["overlay"]).is_file()
    assert lines[0]["map"].startswith("maps/test/")


def test_predict_runs_with_torch_blocked(trained, data_root, tmp_path):
    _, path = trained
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from edgead.cli import main\n"
        f"main(['predict', {str(data_root / 'test' / 'good')!r}, '--model', {str(path)!r}, '--out', {str(tmp_path)!r}, '-q'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 4


def test_cli_errors_are_one_line(data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGEAD_MODEL", raising=False)
    runner = CliRunner()
    result = runner.invoke(main, ["eval", str(data_root)])
    assert result.exit_code == 2
    assert "edgead train" in result.stderr and "Traceback" not in result.output
    result = runner.invoke(main, ["train", str(tmp_path)])
    assert result.exit_code == 2 and "no training image" in result.stderr
    (tmp_path / "bad.edgead").write_bytes(b"junk")
    result = runner.invoke(main, ["predict", str(data_root / "test" / "good"), "--model", "bad.edgead", "--out", "o"])
    assert result.exit_code == 2 and "corrupt" in result.stderr


def test_onnxruntime_io_binding_matches_plain_run(trained):
    _, path = trained
    artifact = read_artifact(path)
    images = artifact.load_npy("parity_images.npy")
    with Predictor(artifact, backend="onnxruntime") as predictor:
        plain = predictor.backend.infer(images)
        (bound,) = predictor.backend.infer_bound(images, "cpu")  # the CUDA path's binding calls, on the CPU device
    np.testing.assert_array_equal(plain, bound)


def test_eval_adopt_threshold_writes_the_f1_max_threshold(trained, data_root, tmp_path):
    import shutil

    _, path = trained
    model = shutil.copy(path, tmp_path / "m.edgead")
    before = read_artifact(model).manifest["postprocess"]["image_threshold"]
    result = CliRunner().invoke(main, ["eval", str(data_root), "--model", str(model), "--json", "--adopt-threshold"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    post = read_artifact(model).manifest["postprocess"]
    assert post["holdout_threshold"] == before and post["threshold_source"]["rule"] == "f1_max"
    again = json.loads(CliRunner().invoke(main, ["eval", str(data_root), "--model", str(model), "--json"]).stdout)
    # with the adopted threshold the runtime's own verdicts reach the F1-max of the same data
    assert again["image_f1_at_threshold"] == pytest.approx(metrics["image_f1_max"])


def test_quantile_image_score_is_used_everywhere(data_root, tmp_path):
    from edgead.config import PatchCoreConfig
    from edgead.export.bundle import write_trained
    from edgead.kit.patchcore import fit_patchcore

    config = PatchCoreConfig(image_size_px=SIZE, coreset_fraction=0.25, holdout_fraction=0.25, score_quantile=0.99)
    fitted = fit_patchcore(open_dataset(data_root).train, config)
    path, manifest = write_trained(fitted, tmp_path / "q.edgead")
    assert manifest["postprocess"]["score_quantile"] == 0.99
    images = [read_image(s.path) for s in open_dataset(data_root).test[:3]]
    with Predictor(read_artifact(path)) as predictor:
        for pred in predictor.predict(images):
            assert pred.score == pytest.approx(float(np.quantile(pred.anomaly_map, 0.99)), rel=1e-6)
            assert pred.score < float(pred.anomaly_map.max())


def test_threshold_override_changes_verdicts_not_scores(trained, data_root, tmp_path):
    _, path = trained
    runner = CliRunner()
    outs = {}
    for name, extra in (("model", []), ("low", ["--threshold", "0"])):
        result = runner.invoke(main, ["predict", str(data_root / "test" / "good"), "--model", str(path), "--out", str(tmp_path / name), "-q", *extra])
        assert result.exit_code == 0, result.output
        outs[name] = [json.loads(x) for x in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
    assert [r["score"] for r in outs["model"]] == [r["score"] for r in outs["low"]]
    assert all(r["anomalous"] and r["threshold"] == 0 for r in outs["low"])
