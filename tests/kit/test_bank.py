"""Streaming extraction: features go to the coreset batch by batch, and the bank is the one in-memory extraction gives."""

import numpy as np
import pytest

from edgead.config import PatchCoreConfig
from edgead.kit.bank import fit_bank
from edgead.kit.patchcore import _feature_batches, build_feature_model, extract_features
from edgead.progress import silent_progress
from edgead.runtime.coreset import chunked_coreset, greedy_coreset
from edgead.runtime.datasets import open_dataset


@pytest.fixture(scope="module")
def setting(tiny_data_root):
    config = PatchCoreConfig(image_size_px=64, batch_size=3, coreset_fraction=0.2)
    model = build_feature_model(config, pretrained=False)
    return config, model, list(open_dataset(tiny_data_root).train)


def streamed(config, model, paths, **kwargs):
    batches = ((len(b.images), f) for b, f in _feature_batches(model, paths, config, silent_progress, "features"))
    return fit_bank(batches, len(paths), config.coreset_fraction, config.coreset_count, config.projection_dim, config.seed, **kwargs)


def in_memory(config, model, paths):
    features = extract_features(model, paths, config, silent_progress, "features")
    return features.transpose(0, 2, 3, 1).reshape(-1, features.shape[1])


def test_streamed_bank_equals_in_memory_chunked(setting):
    config, model, paths = setting
    flat = in_memory(config, model, paths)
    target = config.coreset_target(flat.shape[0])
    expected = chunked_coreset(flat, target, config.projection_dim, config.seed, chunk_rows=100, exact_rows=0)
    bank = streamed(config, model, paths, chunk_rows=100, exact_rows=0)
    np.testing.assert_array_equal(bank.features, flat[expected.indices])
    assert bank.radius == expected.radius and bank.seen == flat.shape[0] and bank.grid == (8, 8)


def test_streamed_bank_equals_in_memory_exact_when_small(setting):
    config, model, paths = setting
    flat = in_memory(config, model, paths)
    expected = greedy_coreset(flat, config.coreset_target(flat.shape[0]), config.projection_dim, config.seed)
    bank = streamed(config, model, paths)
    np.testing.assert_array_equal(bank.features, flat[expected.indices])
    assert bank.radius == pytest.approx(expected.radius, rel=1e-6)


def test_count_target_is_met(setting):
    config, model, paths = setting
    config = PatchCoreConfig(image_size_px=64, batch_size=3, coreset_fraction=None, coreset_count=37)
    assert streamed(config, model, paths, chunk_rows=100, exact_rows=0).features.shape[0] == 37
