"""Coreset at line scale: the streamed chunked greedy against the exact greedy, time, peak memory and coverage radius.

Run: .venv/bin/python -m pytest benchmarks/test_bench_coreset.py --benchmark-only --benchmark-json=coreset.json
Peak memory is what numpy allocated during the call (tracemalloc), not the process's resident size:
the features arrive in batches as extraction would give them, so the input is not counted for the
streamed sampler; the exact greedy needs all of them in one array, and that array is counted.
EDGEAD_BENCH_EXACT_500K=1 adds the exact greedy at 500,000 rows (many minutes on 2 cores); at 100,000 it always runs.
"""

import os
import time
import tracemalloc

import numpy as np
import pytest

from edgead.config import PatchCoreConfig
from edgead.kit.patchcore import build_feature_model, extract_features
from edgead.progress import silent_progress
from edgead.runtime.coreset import CHUNK_ROWS, StreamingCoreset, chunked_coreset, coverage_radius, greedy_coreset
from edgead.runtime.datasets import open_dataset

ROWS, DIM, FRACTION, BATCH = 500_000, 152, 0.1, 8192


def feature_batches(rows: int = ROWS, seed: int = 0):
    """(BATCH, DIM) float32 batches of clustered features, made one at a time (like a backbone's output)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, DIM)).astype(np.float32) * 3
    for start in range(0, rows, BATCH):
        n = min(BATCH, rows - start)
        yield centres[rng.integers(64, size=n)] + rng.standard_normal((n, DIM), dtype=np.float32)


def measured(fn):
    """fn's result, seconds and peak numpy/Python allocation in bytes."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = fn()
        return result, time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def streamed(rows: int):
    sampler = StreamingCoreset(FRACTION, DIM)
    for batch in feature_batches(rows):
        sampler.add(batch)
    return sampler.finish()


@pytest.mark.parametrize("rows", [100_000, ROWS])
def test_coreset_streamed_vs_exact(benchmark, machine, rows):
    """rows x 152 -> 10%: the streamed sampler (at 500,000 rows: < 60 s and < 2 GB) beside the exact greedy in one run.

    The exact greedy at 500,000 rows takes many minutes on 2 cores: it runs with EDGEAD_BENCH_EXACT_500K=1.
    """
    bank, seconds, peak = measured(lambda: streamed(rows))
    target = round(FRACTION * rows)
    assert bank.features.shape == (target, DIM) and bank.seen == rows  # the whole budget is spent
    info = {"rows": rows, "dim": DIM, "bank": target, "streamed_s": seconds, "streamed_peak_mb": peak / 2**20, "streamed_radius": bank.radius}
    if rows < ROWS or os.environ.get("EDGEAD_BENCH_EXACT_500K") == "1":
        features = np.concatenate(list(feature_batches(rows)))
        exact, exact_s, exact_peak = measured(lambda: greedy_coreset(features, target))
        exact_peak += features.nbytes  # the exact greedy needs the whole array, built before the call
        info.update(exact_s=exact_s, exact_peak_mb=exact_peak / 2**20, exact_radius=exact.radius,
                    time_ratio=exact_s / seconds, radius_ratio=bank.radius / exact.radius)
        del features
    benchmark.extra_info.update(machine, **info)
    print("\n" + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()))
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # the figures are in extra_info: one run each
    if rows == ROWS:
        assert seconds < 60 and peak < 2 * 2**30


@pytest.fixture(scope="module", params=["brick", "grass", "gravel"])
def demo_features(request, tmp_path_factory):
    """Real patch features: a demo category's good images through EfficientNet-Lite0, 256 px (40 x 32 x 32 x 152)."""
    from edgead.kit.demo_data import make_demo_dataset

    (root,) = make_demo_dataset(tmp_path_factory.mktemp(request.param), categories=(request.param,), size_px=256)
    config = PatchCoreConfig()
    features = extract_features(build_feature_model(config), open_dataset(root).train, config, silent_progress, "features")
    return np.ascontiguousarray(features.transpose(0, 2, 3, 1).reshape(-1, features.shape[1]))


def test_coverage_radius_against_exact_greedy(benchmark, machine, demo_features):
    """Real features, 10%: the chunked coreset's reported radius within 10% of the exact greedy's, and true for every row."""
    target = round(FRACTION * demo_features.shape[0])
    exact = greedy_coreset(demo_features, target)
    chunked = benchmark.pedantic(lambda: chunked_coreset(demo_features, target), rounds=1, iterations=1)
    true_radius = coverage_radius(demo_features, demo_features[chunked.indices])
    benchmark.extra_info.update(machine, rows=demo_features.shape[0], bank=target, chunk_rows=CHUNK_ROWS,
                                exact_radius=exact.radius, chunked_radius=chunked.radius, ratio=chunked.radius / exact.radius)
    print(f"\nexact radius {exact.radius:.4f}, chunked {chunked.radius:.4f} (x{chunked.radius / exact.radius:.3f})")
    assert true_radius <= chunked.radius * (1 + 1e-5)
    assert chunked.radius <= 1.10 * exact.radius
