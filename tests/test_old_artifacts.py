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
