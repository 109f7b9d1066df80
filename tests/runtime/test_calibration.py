"""Thresholds at a false-alarm rate: the empirical quantile inside the data, an exponential tail beyond it."""

import numpy as np
import pytest

from edgead.errors import ConfigError
from edgead.runtime.calibration import Calibration, ExponentialTail, choose_threshold, postprocess_section
from edgead.runtime.crossval import fold_ids


def test_inside_the_data_at_most_the_asked_share_of_good_scores_lies_above():
    scores = np.random.default_rng(0).normal(30.0, 2.0, 200)
    calibration = Calibration.fit(scores, 5, "test")
    for rate in (0.5, 0.3, 0.2):  # at or above the tail's share (40 of 200): the empirical quantile
        choice = calibration.threshold(rate)
        assert np.mean(scores > choice.value) <= rate
        assert np.mean(scores >= choice.value) > rate - 1 / 200  # and not far less: it is the quantile
        assert not choice.extrapolated


def test_exponential_tail_recovers_a_rare_rate_it_was_never_shown():
    # 400 good scores from a known law: P(score > t) = exp(-(t - 20) / 1.5)
    rng = np.random.default_rng(1)
    scores = 20.0 + rng.exponential(1.5, 400)
    choice = Calibration.fit(scores, 5, "test").threshold(1e-4)
    true = 20.0 + 1.5 * np.log(1e4)
    assert choice.extrapolated and "below 1/400" in choice.note
    assert abs(choice.value - true) < 0.2 * (true - 20.0)
    # the law's own sample, far larger: the threshold's measured rate is near the target
    fresh = 20.0 + rng.exponential(1.5, 200_000)
    assert 0.3e-4 < np.mean(fresh > choice.value) < 3e-4


def test_thresholds_rise_as_the_rate_falls_and_the_tail_is_continuous():
    scores = np.random.default_rng(2).gamma(9.0, 3.0, 60)
    calibration = Calibration.fit(scores, 5, "test")
    values = [calibration.threshold(r).value for r in (0.3, 0.1, 0.03, 0.01, 0.001)]
    assert values == sorted(values)
    tail = calibration.tail
    assert tail.rate(tail.threshold(0.01)) == pytest.approx(0.01)
    assert calibration.false_alarm_rate(values[-1]) == pytest.approx(0.001)


def test_manifest_round_trip_and_bad_rates():
    calibration = Calibration.fit([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, "eager/fp32")
    section = calibration.to_manifest(calibration.threshold(0.01))
    again = Calibration.from_manifest(section)
    assert again.scores == calibration.scores and again.tail == calibration.tail
    assert section["method"] == "3-fold cross-calibration" and section["extrapolated"]
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match="false-alarm rate"):
            calibration.threshold(bad)
    with pytest.raises(ConfigError, match="at least 2"):
        Calibration.fit([1.0], 3, "x")
    assert ExponentialTail.fit(np.arange(10.0)).exceedances == 5


def test_the_runtime_uses_its_engines_own_threshold_unless_the_session_asks():
    post = postprocess_section(np.linspace(10, 20, 50), 0.1, 5, "eager/fp32", 1.0)
    engine_section = postprocess_section(np.linspace(12, 22, 50), 0.1, 5, "onnxruntime/int8", 1.0)["calibration"]
    engine = {"member": "m.onnx", "threshold": engine_section["threshold"], "calibration": engine_section}
    assert choose_threshold(post, None)[0].value == post["image_threshold"]
    assert choose_threshold(post, engine)[0].value == engine["threshold"] > post["image_threshold"]
    assert choose_threshold(post, engine, threshold=15.0)[0].value == 15.0
    by_rate = choose_threshold(post, engine, false_alarm_rate=0.5)[0]
    assert by_rate.rate == 0.5 and 16.0 < by_rate.value < 18.0  # on the engine's own scores, 12-22
    with pytest.raises(ConfigError, match="--threshold"):
        choose_threshold({"image_threshold": 3.0}, None, false_alarm_rate=0.1)


def test_folds_partition_the_images_evenly():
    ids = fold_ids(23, 5, seed=0)
    counts = np.bincount(ids)
    assert len(counts) == 5 and counts.max() - counts.min() <= 1
    assert (fold_ids(23, 5, seed=0) == ids).all() and not (fold_ids(23, 5, seed=1) == ids).all()
    assert fold_ids(3, 5, seed=0).max() == 2  # never more folds than images


def test_fold_banks_hold_nothing_of_their_own_fold_and_the_model_s_share_of_the_rest(tiny_trained):
    """Each fold's bank is made without it: no row of its images, and the coreset fraction of the other folds' rows."""
    from edgead.artifact import read_artifact
    from edgead.progress import silent_progress
    from edgead.runtime.heads.knn import KnnHead

    _, path = tiny_trained
    artifact = read_artifact(path)
    head = KnnHead(artifact, artifact.manifest["head"], "cpu", {})
    rng = np.random.default_rng(0)
    dim = head.bank.dim
    # image i: 2 tiles of 8 x 8 features, all near the point i * 100 on the first axis (images far apart)
    reference = []
    for i in range(10):
        features = rng.standard_normal((2, dim, 8, 8)).astype(np.float32)
        features[:, 0] += 100.0 * i
        reference.append(features)
    ids = fold_ids(10, 5, 0)
    banks = head._fold_banks(reference, ids, 5, None, 0, silent_progress)
    fraction = artifact.manifest["memory_bank"]["coreset"]["fraction"]
    for fold, bank in enumerate(banks):
        images = np.rint(bank.features[:, 0].astype(np.float32) / 100.0).astype(int)
        assert not set(images) & set(np.flatnonzero(ids == fold)), f"fold {fold}'s bank holds its own images"
        assert set(images) == set(np.flatnonzero(ids != fold))  # every other image keeps some rows
        others = int((ids != fold).sum()) * 128
        assert abs(bank.count - fraction * others) <= 5

