"""The streamed coreset: bounded chunks, a budget spent across chunks, and a radius every feature lies within."""

import numpy as np
import pytest

from edgead.errors import ConfigError
from edgead.runtime.coreset import StreamingCoreset, chunked_coreset, coverage_radius, greedy_coreset


def clustered(n: int, dim: int = 24, seed: int = 0) -> np.ndarray:
    """Features in a few clusters of different spread, like patches of a few textures."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, dim)).astype(np.float32) * 6
    which = rng.integers(0, 6, n)
    spread = np.array([0.3, 0.5, 1.0, 1.0, 2.0, 3.0], dtype=np.float32)[which, None]
    return (centres[which] + rng.standard_normal((n, dim)).astype(np.float32) * spread).astype(np.float32)


@pytest.mark.parametrize("chunk_rows,window", [(500, 0), (500, 2), (777, 3), (4000, 2)])
def test_every_feature_lies_within_the_reported_radius(chunk_rows, window):
    features = clustered(3000)
    coreset = chunked_coreset(features, 300, projection_dim=16, chunk_rows=chunk_rows, window=window)
    assert len(coreset.indices) == 300
    assert len(set(coreset.indices.tolist())) == 300  # no feature is picked twice
    true_radius = coverage_radius(features, features[coreset.indices])
    assert true_radius <= coreset.radius * (1 + 1e-5) + 1e-6


def test_radius_close_to_the_exact_greedy():
    features = clustered(6000, seed=3)
    exact = greedy_coreset(features, 600, projection_dim=16)
    streamed = chunked_coreset(features, 600, projection_dim=16, chunk_rows=1500)
    assert streamed.radius <= 1.25 * exact.radius  # the benchmark holds the real features to 10%


def test_batches_of_any_size_give_the_same_bank():
    features = clustered(2500)
    whole = chunked_coreset(features, 250, projection_dim=16, chunk_rows=600)
    sampler = StreamingCoreset(0.1, features.shape[1], 16, chunk_rows=600, max_count=250, exact_rows=0)
    for start, stop in [(0, 7), (7, 700), (700, 701), (701, 1900), (1900, 2500)]:
        sampler.add(features[start:stop])
    streamed = sampler.finish()
    np.testing.assert_array_equal(streamed.indices, whole.indices)
    np.testing.assert_array_equal(streamed.features, features[whole.indices])
    assert streamed.radius == whole.radius and streamed.seen == 2500


def test_a_short_stream_gets_the_exact_greedy():
    features = clustered(1200)
    sampler = StreamingCoreset(0.1, features.shape[1], 16, seed=4, chunk_rows=300, exact_rows=2000)
    sampler.add(features[:500])
    sampler.add(features[500:])
    streamed = sampler.finish()
    exact = greedy_coreset(features, 120, projection_dim=16, seed=4)
    np.testing.assert_array_equal(streamed.indices, exact.indices)
    assert streamed.radius == pytest.approx(exact.radius, rel=1e-6)


def test_redundant_chunks_keep_fewer_rows():
    """Ten copies of one chunk's data: after the first, the copies are covered and spend little of the budget."""
    base = clustered(1000, seed=5)
    varied = clustered(1000, seed=6) * 3
    stream = np.concatenate([base] * 9 + [varied])
    coreset = chunked_coreset(stream, 1000, projection_dim=16, chunk_rows=1000, window=2)
    from_varied = int((coreset.indices >= 9000).sum())
    assert from_varied > 200  # far more than its 10% share of 100
    assert coverage_radius(stream, stream[coreset.indices]) <= coreset.radius * (1 + 1e-5)


def test_count_is_never_exceeded_and_fraction_is_met():
    features = clustered(5000)
    sampler = StreamingCoreset(0.2, features.shape[1], 16, chunk_rows=700, exact_rows=0, max_count=600)
    sampler.add(features)
    assert sampler.finish().features.shape[0] == 600
    assert len(chunked_coreset(features, 777, projection_dim=16, chunk_rows=700).indices) == 777


def test_empty_stream_and_bad_arguments():
    with pytest.raises(ConfigError):
        StreamingCoreset(0.1, 8).finish()
    with pytest.raises(ConfigError):
        StreamingCoreset(0.0, 8)
    with pytest.raises(ConfigError):
        StreamingCoreset(0.1, 8).add(np.zeros((3, 9), dtype=np.float32))
    with pytest.raises(ConfigError):
        chunked_coreset(np.zeros((5, 2), dtype=np.float32), 6)
