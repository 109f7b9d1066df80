"""The kNN memory bank on the CPU against faiss-cpu's exact IndexFlatL2, on the same bank and queries.

Run: .venv/bin/python -m pytest benchmarks/test_bench_knn.py --benchmark-only --benchmark-json=knn.json
(the plain agreement test runs without --benchmark-only: .venv/bin/python -m pytest benchmarks/test_bench_knn.py)
"""

import os

import numpy as np
import pytest

from edgead.runtime.memory_bank import MemoryBank

faiss = pytest.importorskip("faiss")

DIM = 152  # EfficientNet-Lite0 patch features
QUERIES = 8 * 32 * 32  # a batch of 8 images at 256 px: 32 x 32 patches each
BANK_ROWS = (10_000, 3_686)
SEED = 0


def blas_threads() -> int:
    """Threads numpy's BLAS uses: threadpoolctl where installed, else the usual variables, else the CPUs we may use."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
            if os.environ.get(name):
                return int(os.environ[name])
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    numpy_pools = [p for p in pools if "numpy" in p["filepath"] or "scipy_openblas" in p["filepath"]]
    return (numpy_pools or pools)[0]["num_threads"]


THREADS = blas_threads()


def make_case(bank_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """An fp16 bank (M, 152) and fp32 queries (8192, 152): half near bank rows (good patches), half not (defects)."""
    rng = np.random.default_rng(SEED)
    bank = rng.standard_normal((bank_rows, DIM)).astype(np.float16)
    near = bank[rng.integers(bank_rows, size=QUERIES // 2)].astype(np.float32) + 0.1 * rng.standard_normal((QUERIES // 2, DIM))
    far = rng.standard_normal((QUERIES - QUERIES // 2, DIM))
    return bank, np.concatenate([near, far]).astype(np.float32)


@pytest.fixture(scope="module", params=BANK_ROWS, ids=lambda m: f"bank{m}")
def case(request):
    bank, queries = make_case(request.param)
    faiss.omp_set_num_threads(THREADS)
    index = faiss.IndexFlatL2(DIM)
    index.add(bank.astype(np.float32))  # the same fp16 values, widened: faiss searches fp32
    return bank, queries, index


def extra_info(bank, queries, k, engine, machine) -> dict:
    return {**machine, "engine": engine, "bank_rows": bank.shape[0], "dim": DIM, "queries": queries.shape[0], "k": k,
            "threads": THREADS, "bank_dtype": "float16", "seed": SEED}


@pytest.mark.parametrize("k", [1, 3])
def test_same_neighbours_as_faiss(case, k):
    """Indices equal except near ties (then both are equally near); faiss's squared distances within fp32 rounding."""
    bank, queries, index = case
    ours_d, ours_i = MemoryBank(bank, k=k).knn(queries)
    faiss_d2, faiss_i = index.search(queries, k)
    np.testing.assert_allclose(ours_d**2, faiss_d2, rtol=1e-4, atol=1e-3)  # faiss returns squared L2
    bank64, queries64 = bank.astype(np.float64), queries.astype(np.float64)
    rows, cols = np.nonzero(ours_i != faiss_i)
    d2_ours = ((queries64[rows] - bank64[ours_i[rows, cols]]) ** 2).sum(1)
    d2_faiss = ((queries64[rows] - bank64[faiss_i[rows, cols]]) ** 2).sum(1)
    np.testing.assert_allclose(d2_ours, d2_faiss, rtol=1e-4, atol=1e-3)
    assert len(rows) <= 1e-3 * ours_i.size


@pytest.mark.parametrize("k", [1, 3])
def test_bench_knn_edgead(benchmark, case, k, machine):
    bank, queries, _ = case
    memory_bank = MemoryBank(bank, k=k)
    benchmark.group = f"knn bank{bank.shape[0]} k{k}"
    benchmark.extra_info.update(extra_info(bank, queries, k, "edgead.MemoryBank", machine))
    benchmark.pedantic(memory_bank.knn, args=(queries,), rounds=10, warmup_rounds=1)


@pytest.mark.parametrize("k", [1, 3])
def test_bench_knn_faiss(benchmark, case, k, machine):
    bank, queries, index = case
    benchmark.group = f"knn bank{bank.shape[0]} k{k}"
    benchmark.extra_info.update(extra_info(bank, queries, k, "faiss.IndexFlatL2", machine))
    benchmark.pedantic(index.search, args=(queries, k), rounds=10, warmup_rounds=1)
