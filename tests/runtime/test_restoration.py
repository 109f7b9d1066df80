"""Restoration of code grids (numpy): the local constraint, exact vs parallel, with priors written out by hand."""

import numpy as np
import pytest

from edgead.runtime.restoration import restore_exact, restore_parallel, unlikely

K = 32
LIKELY = 0.95  # p of code 0 after a code 0
ETA = 0.05


def chain_prior(codes: np.ndarray) -> np.ndarray:
    """A prior that expects code 0 everywhere: after a 0 (raster order), 0 has p 0.95 and the rest share 0.05;
    after any other code it has no idea (uniform, p 1/32 < eta). Log-probabilities (n, h, w, K)."""
    n, h, w = codes.shape
    flat = codes.reshape(n, -1)
    previous = np.concatenate([np.zeros((n, 1), dtype=np.int64), flat[:, :-1]], axis=1)
    expecting = np.full(K, (1 - LIKELY) / (K - 1))
    expecting[0] = LIKELY
    probs = np.where((previous == 0)[..., None], expecting, np.full(K, 1.0 / K))
    return np.log(probs).reshape(n, h, w, K)


def planted(at: tuple[int, int], code: int = 7, shape=(6, 6)) -> np.ndarray:
    grid = np.zeros((1, *shape), dtype=np.int64)
    grid[(0, *at)] = code
    return grid


def test_parallel_restoration_replaces_exactly_the_planted_unlikely_code():
    codes = planted((2, 3))
    result = restore_parallel(codes, chain_prior, ETA, passes=3, resample="argmax")
    want = np.zeros_like(codes, dtype=bool)
    want[0, 2, 3] = True
    np.testing.assert_array_equal(result.changed, want)
    assert result.codes[0, 2, 3] == 0
    assert result.passes.tolist() == [2]  # one pass flags and replaces it, the second finds nothing


def test_an_isolated_unlikely_code_is_kept_under_the_local_constraint():
    # the paper's rule: a code below eta is resampled only when a lower-half neighbour is below eta too
    own = np.zeros((1, 4, 4))
    own[0, 1, 1] = np.log(1e-4)  # below eta, every lower-half neighbour likely
    assert not unlikely(own, np.log(ETA)).any()
    own[0, 2, 2] = np.log(1e-4)  # now its bottom-right neighbour is unlikely too
    flags = unlikely(own, np.log(ETA))
    assert flags[0, 1, 1] and flags.sum() == 1  # (2, 2)'s own lower neighbours are likely


def test_exact_restoration_replaces_the_planted_code_in_raster_order():
    codes = np.concatenate([planted((2, 3)), planted((4, 1)), np.zeros((1, 6, 6), dtype=np.int64)])
    exact = restore_exact(codes, chain_prior, ETA, resample="argmax")
    parallel = restore_parallel(codes, chain_prior, ETA, passes=3, resample="argmax")
    np.testing.assert_array_equal(exact.codes, np.zeros_like(codes))
    np.testing.assert_array_equal(exact.changed, parallel.changed)
    assert exact.passes.tolist() == [2, 2, 1]  # a pass per replacement, plus the one that finds nothing more


@pytest.mark.parametrize("resample", ["argmax", "sample"])
def test_exact_and_parallel_agree_when_no_code_is_unlikely(resample):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, K, (3, 5, 5))
    for eta in (1e-3, 1.0 / K):  # the uniform prior gives every code p 1/K: at eta 1/K none is below
        def uniform(c):
            return np.full((*c.shape, K), -np.log(K))

        exact = restore_exact(codes, uniform, eta, resample=resample)
        parallel = restore_parallel(codes, uniform, eta, passes=4, resample=resample)
        for result in (exact, parallel):
            np.testing.assert_array_equal(result.codes, codes)
            assert not result.changed.any() and result.passes.tolist() == [1, 1, 1]


def test_a_restoration_depends_on_the_image_and_seed_only_not_on_its_batch():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, K, (4, 6, 6))
    together = restore_parallel(codes, chain_prior, ETA, passes=2, seed=3, resample="sample")
    alone = restore_parallel(codes[2:3], chain_prior, ETA, passes=2, seed=3, resample="sample")
    np.testing.assert_array_equal(together.codes[2:3], alone.codes)
    assert together.changed.any()


def context_prior(codes: np.ndarray) -> np.ndarray:
    """A causal prior whose distribution at each position depends on the code before it and the code above it."""
    n, h, w = codes.shape
    flat = codes.reshape(n, -1)
    previous = np.concatenate([np.zeros((n, 1), dtype=np.int64), flat[:, :-1]], axis=1)
    above = np.concatenate([np.zeros((n, w), dtype=np.int64), flat[:, :-w]], axis=1)
    tables = np.random.default_rng(42).dirichlet(np.full(K, 0.3), size=(K, K))  # (previous, above) -> p over K
    return np.log(tables[previous, above] + 1e-12).reshape(n, h, w, K)


@pytest.mark.parametrize("resample", ["argmax", "sample"])
def test_the_papers_literal_loop_restores_the_same_codes_with_a_pass_per_position(resample):
    rng = np.random.default_rng(5)
    codes = rng.integers(0, K, (3, 5, 6))
    codes[rng.random(codes.shape) < 0.8] = 0  # mostly the expected code: a few replacements per grid
    for prior in (chain_prior, context_prior):
        fast = restore_exact(codes, prior, ETA, seed=2, resample=resample)
        literal = restore_exact(codes, prior, ETA, seed=2, resample=resample, literal=True)
        assert fast.changed.any()
        np.testing.assert_array_equal(literal.codes, fast.codes)
        assert literal.passes.tolist() == [30, 30, 30] and (fast.passes < 30).all()
