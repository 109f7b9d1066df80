import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgead.errors import ArtifactError, ConfigError
from edgead.runtime.coreset import coverage_radius, greedy_coreset
from edgead.runtime.memory_bank import MemoryBank


def brute_force(bank, queries, k):
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, axis=1), idx


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 60), q=st.integers(1, 30), c=st.integers(1, 9), k=st.integers(1, 5), chunk=st.integers(1, 17), seed=st.integers(0, 10**6))
def test_knn_matches_brute_force(m, q, c, k, chunk, seed):
    k = min(k, m)
    rng = np.random.default_rng(seed)
    bank = rng.standard_normal((m, c)).astype(np.float16)
    queries = rng.standard_normal((q, c)).astype(np.float32)
    dist, _ = MemoryBank(bank, k=k, chunk_rows=chunk).knn(queries)
    ref, _ = brute_force(bank.astype(np.float32), queries, k)
    np.testing.assert_allclose(dist, ref, rtol=1e-4, atol=1e-3)


def test_score_is_mean_of_k_nearest():
    bank = np.array([[0.0], [1.0], [3.0]], dtype=np.float16)
    mb = MemoryBank(bank, k=2)
    np.testing.assert_allclose(mb.score(np.array([[0.0], [2.0]], dtype=np.float32)), [0.5, 1.0])
    np.testing.assert_allclose(MemoryBank(bank, k=1).score(np.array([[2.4]], dtype=np.float32)), [0.6], rtol=1e-3)


def test_bank_is_fp16():
    mb = MemoryBank(np.ones((4, 3), dtype=np.float32))
    assert mb.features.dtype == np.float16 and mb.count == 4 and mb.dim == 3


def test_bad_bank_and_queries():
    with pytest.raises(ArtifactError):
        MemoryBank(np.zeros((0, 3)))
    with pytest.raises(ArtifactError, match="NaN"):
        MemoryBank(np.array([[np.nan, 1.0]]))
    with pytest.raises(ConfigError, match="k=5"):
        MemoryBank(np.zeros((2, 3)), k=5)
    with pytest.raises(ConfigError, match="queries"):
        MemoryBank(np.zeros((2, 3))).knn(np.zeros((2, 4)))


@pytest.mark.parametrize("target", [1, 7, 50, 200])
def test_coreset_covers_within_reported_radius(target):
    rng = np.random.default_rng(target)
    features = np.concatenate([rng.standard_normal((150, 96)), 5 + rng.standard_normal((50, 96))]).astype(np.float32)
    coreset = greedy_coreset(features, target, projection_dim=16, seed=1)
    assert len(set(coreset.indices.tolist())) == target  # no feature is picked twice
    d, _ = brute_force(features[coreset.indices], features, 1)
    assert d.max() <= coreset.radius * (1 + 1e-5) + 1e-6
    assert d.max() >= coreset.radius * (1 - 1e-5) - 1e-6  # the radius is tight, not a loose bound
    if target == 200:
        assert coreset.radius == pytest.approx(0.0, abs=1e-3)


def test_coreset_radius_shrinks_and_beats_random():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((2000, 32)).astype(np.float32) * rng.uniform(0.1, 3, size=(2000, 1)).astype(np.float32)
    radii = [greedy_coreset(features, t, projection_dim=32).radius for t in (10, 50, 200)]
    assert radii[0] > radii[1] > radii[2]
    random_pick = rng.choice(2000, 200, replace=False)
    assert radii[2] < coverage_radius(features, features[random_pick])


def test_coreset_with_duplicates_terminates_and_covers():
    features = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)
    coreset = greedy_coreset(features, 5)
    assert coreset.radius == 0.0
    assert len(set(coreset.indices.tolist())) == 5


def test_coreset_progress_counts_every_step():
    seen = []
    greedy_coreset(np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32), 123, progress=seen.append)
    assert sum(seen) == 123


def test_coreset_bad_target():
    with pytest.raises(ConfigError):
        greedy_coreset(np.zeros((5, 2), dtype=np.float32), 6)
