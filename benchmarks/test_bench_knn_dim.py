"""The kNN stage at PatchCore's feature dim (152) and the patch-wise auto-encoder's (64): same bank rows, same queries.

Run: .venv/bin/python -m pytest benchmarks/test_bench_knn_dim.py --benchmark-only --benchmark-json=knn_dim.json
"""

import numpy as np
import pytest

from edgead.runtime.memory_bank import MemoryBank

QUERIES = 8 * 32 * 32  # a batch of 8 images at 256 px: 32 x 32 patches each
BANK_ROWS = 3_686  # 10% coreset of 40 demo images
SEED = 0


@pytest.mark.parametrize("dim", [152, 64], ids=["patchcore152", "patchwise64"])
def test_bench_knn_by_dim(benchmark, dim, machine):
    rng = np.random.default_rng(SEED)
    bank = rng.standard_normal((BANK_ROWS, dim)).astype(np.float16)
    queries = rng.standard_normal((QUERIES, dim)).astype(np.float32)
    memory_bank = MemoryBank(bank, k=1)
    benchmark.extra_info.update({**machine, "bank_rows": BANK_ROWS, "dim": dim, "queries": QUERIES, "k": 1, "bank_dtype": "float16", "seed": SEED})
    scores = benchmark(memory_bank.score, queries)
    assert scores.shape == (QUERIES,)
