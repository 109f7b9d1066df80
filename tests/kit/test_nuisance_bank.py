"""Which copies the memory bank holds (`--nuisance bank=N,share=F`), and fold banks that hold the same."""

import numpy as np

from edgead.config import NuisanceConfig, PatchCoreConfig
from edgead.kit.patchcore import bank_of_versions
from edgead.runtime.crossval import version_fold_scores
from edgead.runtime.predictor import Batch


def _per_image(n_images=4, versions=4, seed=0):
    rng = np.random.default_rng(seed)
    return [[(Batch(np.empty(0, np.uint8)), rng.normal(size=(1, 8, 6, 6)).astype(np.float32) + v) for v in range(versions)]
            for _ in range(n_images)]


def test_bank_copies_go_through_a_coreset_of_their_own_share_and_calibration_copies_stay_out():
    per_image = _per_image()  # 4 images, 3 copies each, 36 patch features per version
    shared = PatchCoreConfig(coreset_fraction=0.25, nuisance=NuisanceConfig(copies=3, bank=2, share=0.125))
    fitted = bank_of_versions(per_image, shared, "cpu")
    assert fitted.features.shape[0] == 36 + 36 and fitted.seen == 4 * 36 * 3  # 25% of 144 own rows, 12.5% of 288 copy rows
    assert fitted.features[:36].mean() < 0.5 < fitted.features[36:].mean()  # the copies' rows come from versions 1 and 2 ...
    assert fitted.features.mean() < 2.5  # ... never from the calibration copy (version 3, offset +3)
    together = PatchCoreConfig(coreset_fraction=0.25, nuisance=NuisanceConfig(copies=3, bank=2, share=0))
    assert bank_of_versions(per_image, together, "cpu").features.shape[0] == 108  # one coreset of images and bank copies


class _RecordingHead:
    def __init__(self):
        self.calls = []

    def fold_scores(self, reference, score, folds, seed, queries, progress, cache, **copies):
        self.calls.append((reference, copies))
        return np.zeros(len(queries))


def test_fold_banks_hold_the_bank_copies_and_every_copy_is_scored():
    reference = [[{"features": np.full((1, 2, 3, 3), float(v))} for v in range(4)] for _ in range(5)]  # image, 3 copies
    head = _RecordingHead()
    scores = version_fold_scores(head, None, reference, 5, 0, bank_versions=2)
    assert len(scores) == 5 * 4 and len(head.calls) == 4  # every version of every image scored
    merged, copies = head.calls[0]
    assert merged[0]["features"].shape[0] == 2 and set(np.unique(merged[0]["features"])) == {0.0, 1.0} and not copies
    head = _RecordingHead()
    version_fold_scores(head, None, reference, 5, 0, bank_versions=3, copy_share=0.1)
    merged, copies = head.calls[0]
    assert merged[0]["features"].shape[0] == 1 and copies["copy_fraction"] == 0.1
    assert set(np.unique(copies["copies"][0]["features"])) == {1.0, 2.0}  # the bank copies apart, never the third copy
