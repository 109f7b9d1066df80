import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgead.errors import ArtifactError, BackendError, ConfigError, DependencyError
from edgead.runtime import memory_bank
from edgead.runtime.coreset import coverage_radius, greedy_coreset
from edgead.runtime.knn_gpu import GpuKnn, import_cupy
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


@pytest.mark.parametrize("k", [1, 3, 12])  # 12: past the repeated-argmin limit, argpartition
@pytest.mark.parametrize("chunk_rows", [1, 64, 8192])
def test_knn_indices_and_distances_match_brute_force(k, chunk_rows):
    rng = np.random.default_rng(k + chunk_rows)
    bank = rng.standard_normal((300, 24)).astype(np.float16)
    queries = rng.standard_normal((257, 24)).astype(np.float32)
    dist, idx = MemoryBank(bank, k=k, chunk_rows=chunk_rows).knn(queries)
    ref_d, ref_i = brute_force(bank.astype(np.float32), queries, k)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(idx, ref_i)  # random data: no near ties


def test_many_query_blocks_and_no_fp32_copy(monkeypatch):
    rng = np.random.default_rng(3)
    bank = rng.standard_normal((100, 16)).astype(np.float16)
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    expected = MemoryBank(bank, k=2, chunk_rows=30).knn(queries)
    monkeypatch.setattr(memory_bank, "BLOCK_FLOATS", 70)  # blocks of 2 queries
    monkeypatch.setattr(memory_bank, "FP32_COPY_BYTES", 0)  # chunks upcast per call
    mb = MemoryBank(bank, k=2, chunk_rows=30)
    assert mb._ranking_bank is None
    for got, want in zip(mb.knn(queries), expected):
        np.testing.assert_array_equal(got, want)


def test_query_equal_to_a_bank_row_is_at_distance_zero():
    bank = np.random.default_rng(0).standard_normal((500, 152)).astype(np.float16) * 4
    dist, idx = MemoryBank(bank, k=1).knn(bank[::7])
    assert np.all(dist == 0.0)
    np.testing.assert_array_equal(idx[:, 0], np.arange(0, 500, 7))


def test_gpu_code_path_on_numpy_matches_cpu():
    """The GPU class run with numpy as its array module: the device path's own code, checked where no GPU is."""
    rng = np.random.default_rng(5)
    bank = MemoryBank(rng.standard_normal((700, 32)).astype(np.float16), k=3, chunk_rows=256)
    queries = rng.standard_normal((400, 32)).astype(np.float32)
    dist, idx = GpuKnn(bank.features, bank._norms, 256, xp=np).knn(queries, 3)
    order = np.argsort(dist, axis=1, kind="stable")
    want_d, want_i = bank.knn(queries)
    np.testing.assert_array_equal(np.take_along_axis(dist, order, 1), want_d)
    np.testing.assert_array_equal(np.take_along_axis(idx, order, 1), want_i)


def test_cuda_without_cupy_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(DependencyError, match="pip install cupy-cuda12x"):
        MemoryBank(np.ones((4, 3)), device="cuda")


def test_cuda_without_gpu_is_a_backend_error(monkeypatch):
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 0, CUDARuntimeError=RuntimeError)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime)))
    with pytest.raises(BackendError, match="no CUDA GPU"):
        MemoryBank(np.ones((4, 3)), device="cuda")


def test_bad_device_and_k():
    with pytest.raises(ConfigError, match="'tpu'"):
        MemoryBank(np.ones((4, 3)), device="tpu")
    with pytest.raises(ConfigError, match="k=0"):
        MemoryBank(np.ones((4, 3))).knn(np.ones((1, 3)), k=0)
    with pytest.raises(ConfigError, match="chunk_rows=0"):
        MemoryBank(np.ones((4, 3)), chunk_rows=0)


def cupy_or_skip():
    try:
        return import_cupy()
    except (DependencyError, BackendError) as error:
        pytest.skip(f"no CuPy GPU here: {error}")


@pytest.mark.gpu
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("chunk_rows", [1000, 8192])
def test_gpu_matches_cpu(k, chunk_rows):
    cupy_or_skip()
    rng = np.random.default_rng(k)
    bank = rng.standard_normal((3686, 152)).astype(np.float16)
    queries = rng.standard_normal((2048, 152)).astype(np.float32)
    cpu_d, cpu_i = MemoryBank(bank, k=k, chunk_rows=chunk_rows).knn(queries)
    gpu_bank = MemoryBank(bank, k=k, chunk_rows=chunk_rows, device="cuda")
    gpu_d, gpu_i = gpu_bank.knn(queries)
    assert gpu_d.dtype == np.float32 and isinstance(gpu_i, np.ndarray)
    np.testing.assert_allclose(gpu_d, cpu_d, rtol=1e-5, atol=1e-5)
    assert (gpu_i == cpu_i).mean() > 0.999  # fp32 products summed in another order may swap near ties
    np.testing.assert_allclose(gpu_bank.score(queries), cpu_d.mean(axis=1) if k > 1 else cpu_d[:, 0], rtol=1e-5)


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
