"""Models written by edgead 0.1.0 (format 1, PatchCore) load and score as they did when they were written."""

import numpy as np
import pytest

from edgead.artifact import read_artifact
from edgead.runtime.predictor import Predictor

FIXTURE = __import__("pathlib").Path(__file__).parent / "fixtures" / "v1_patchcore"


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURE / "expected.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def test_v1_patchcore_artifact_scores_identically(expected):
    artifact = read_artifact(FIXTURE / "v1.edgead")
    assert artifact.manifest["upgraded_from"] == 1  # read as format 1, upgraded in memory
    with Predictor(artifact, backend="onnxruntime") as predictor:
        predictions = predictor.predict(list(expected["images"]))
    scores = np.array([p.score for p in predictions], dtype=np.float32)
    np.testing.assert_allclose(scores, expected["scores"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.stack([p.anomaly_map for p in predictions]), expected["maps"], rtol=1e-4, atol=1e-4)
    assert [p.anomalous for p in predictions] == [bool(s > predictor.threshold) for s in expected["scores"]]


SMALL_AE = FIXTURE.parent / "v2_small_ae"


@pytest.mark.parametrize("scorer", ["reconstruction", "support"])
def test_small_ae_artifact_from_before_dense_inference_scores_identically(scorer):
    """A small-ae model of format 2 written before inference modes: stride-based patches, as stored, with either scorer."""
    with np.load(SMALL_AE / "expected.npz", allow_pickle=False) as data:
        expected = {key: data[key] for key in data.files}
    artifact = read_artifact(SMALL_AE / "v2_small_ae.edgead")
    assert "inference" not in artifact.manifest and artifact.manifest["tiling"]["patches"]
    for inference in (None, "patches"):  # the model's own mode, named or not
        with Predictor(artifact, backend="onnxruntime", scorer=scorer, inference=inference) as predictor:
            predictions = predictor.predict(list(expected["images"]))
            assert predictor.main_graph == "patch" and predictor.scoring_head.name == scorer
        np.testing.assert_allclose([p.score for p in predictions], expected[f"{scorer}_scores"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.stack([p.anomaly_map for p in predictions]), expected[f"{scorer}_maps"], rtol=1e-4, atol=1e-5)


def test_small_ae_artifact_from_before_dense_inference_refuses_dense_in_one_line(tmp_path):
    from click.testing import CliRunner

    from edgead.cli import main

    image = tmp_path / "good.png"
    __import__("cv2").imwrite(str(image), np.zeros((96, 96, 3), np.uint8))
    result = CliRunner().invoke(main, ["predict", str(image), "--model", str(SMALL_AE / "v2_small_ae.edgead"), "--inference", "dense", "--out", str(tmp_path / "p"), "-q"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "trained before dense inference" in result.output and "re-train" in result.output


DENSE_AE = FIXTURE.parent / "v3_small_ae_dense"


@pytest.mark.parametrize("inference", ["dense", "patches"])
@pytest.mark.parametrize("scorer", ["reconstruction", "support"])
def test_dense_small_ae_artifact_from_before_inner_windows_scores_identically(inference, scorer):
    """A dense small-ae model written before the dense SVM's inner windows (its SVM on whole 17x17 windows): as stored, both modes."""
    with np.load(DENSE_AE / "expected.npz", allow_pickle=False) as data:
        expected = {key: data[key] for key in data.files}
    artifact = read_artifact(DENSE_AE / "v3_small_ae_dense.edgead")
    assert artifact.manifest["inference"]["default"] == "dense" and artifact.manifest["dense_svm"]["dim"] == 16 * 17 * 17
    with Predictor(artifact, backend="onnxruntime", scorer=scorer, inference=inference) as predictor:
        predictions = predictor.predict(list(expected["images"]))
    key = f"{inference}_{scorer}"
    np.testing.assert_allclose([p.score for p in predictions], expected[f"{key}_scores"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.stack([p.anomaly_map for p in predictions]), expected[f"{key}_maps"], rtol=1e-4, atol=1e-5)
