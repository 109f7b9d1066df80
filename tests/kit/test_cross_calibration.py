"""Training-time thresholds: every good image scored by a model built without its fold, through the runtime's head."""

import logging

import numpy as np

from edgead.artifact import read_artifact
from edgead.kit.eager import calibrate_good_images, score_good_images
from edgead.runtime.calibration import describe, postprocess_section
from edgead.runtime.heads.knn import KnnHead


def test_every_good_image_is_scored_by_a_bank_built_without_it(tiny_trained):
    fitted, path = tiny_trained
    post = read_artifact(path).manifest["postprocess"]
    section = post["calibration"]
    n_bank = len(fitted.bank_images)
    versions = 1 + fitted.config.nuisance.copies  # every image and its nuisance copies are scored
    assert section["images"] == (n_bank + len(fitted.holdout_images)) * versions and section["folds"] == 5
    assert section["method"] == "5-fold cross-calibration" and section["false_alarm_rate"] == 0.01
    assert post["image_threshold"] == section["threshold"]
    manifest, members = fitted.artifact_parts()
    in_sample, _ = score_good_images(manifest, members, fitted.graphs, fitted.bank_images)
    cross = np.array(section["scores"][:n_bank])
    # an image's own patches are in the deployed bank but not in its fold's: cross-calibrated scores are higher
    assert np.mean(cross > in_sample) >= 0.8 and cross.mean() > in_sample.mean() + 0.5


def test_a_head_that_cannot_refit_falls_back_to_held_out_images_then_in_sample(tiny_trained, monkeypatch, caplog):
    monkeypatch.setattr(KnnHead, "refits_per_fold", False)
    fitted, _ = tiny_trained
    manifest, members = fitted.artifact_parts()
    held = calibrate_good_images(manifest, members, fitted.graphs, fitted.bank_images, fitted.holdout_images, fitted.config)
    assert held["calibration"]["method"] == "held-out images"
    versions = 1 + fitted.config.nuisance.copies
    assert held["calibration"]["images"] == len(fitted.holdout_images) * versions and held["holdout_images"] == len(fitted.holdout_images)
    with caplog.at_level(logging.WARNING):
        own = calibrate_good_images(manifest, members, fitted.graphs, fitted.bank_images, [], fitted.config)
    assert own["calibration"]["method"].startswith("training images, in-sample")
    assert "optimistic" in caplog.text and "optimistic" in describe(own)[0]


def test_holdout_zero_does_not_claim_held_out_images():
    post = postprocess_section(np.linspace(10, 20, 30), 0.01, 5, "eager/fp32", 1.0, holdout_images=0)
    (line, note) = describe(post)
    assert "held out" not in line and "held-out" not in line
    assert "5-fold cross-calibration of 30 good images" in line and "below 1/30" in note


def test_nuisance_copies_are_scored_by_fold_banks_that_hold_neither_them_nor_their_image(tiny_trained):
    from edgead.artifact import Artifact
    from edgead.kit.eager import eager_backends
    from edgead.runtime.images import read_image
    from edgead.runtime.nuisance import copies
    from edgead.runtime.predictor import Predictor

    fitted, path = tiny_trained
    assert (fitted.config.nuisance.copies, fitted.config.nuisance.bank_copies) == (4, 2)  # the defaults: 2 of 4 in the bank
    post = read_artifact(path).manifest["postprocess"]
    assert post["calibration"]["nuisance"]["copies"] == 4 and "and their 4 nuisance copies each" in describe(post)[0]
    n_bank = len(fitted.bank_images)
    cross = np.array(post["calibration"]["scores"][: 5 * n_bank]).reshape(5, n_bank)[:3]  # images, first and second copies
    manifest, members = fitted.artifact_parts()
    artifact = Artifact(path, manifest, members)
    with Predictor(artifact, eager_backends(artifact, fitted.graphs), threshold=float("inf")) as predictor:
        # the deployed bank holds the bank copies: in-sample, such a copy scores low; cross-calibrated, its fold's bank held neither it nor its image
        in_sample = np.array([[p.score for p in predictor.predict(copies(read_image(path), fitted.config.nuisance, fitted.config.seed, i))[:2]]
                              for i, path in enumerate(fitted.bank_images)]).T
    assert np.mean(cross[1:] > in_sample) >= 0.8 and cross[1:].mean() > in_sample.mean() + 0.5
    assert not np.allclose(cross[0], cross[1])
