"""The support head's decision function against scikit-learn's OneClassSVM, on random data."""

import numpy as np
import pytest
from sklearn.svm import OneClassSVM

from edgead.kit.svm import fit_one_class_svm, scale_gamma
from edgead.runtime.heads import support
from edgead.runtime.heads.support import SupportVectors


@pytest.mark.parametrize("dim, chunk_floats", [(7, 1 << 22), (300, 500)])  # one block, and many small blocks
def test_decision_function_matches_scikit_learn(dim, chunk_floats, monkeypatch):
    monkeypatch.setattr(support, "CHUNK_FLOATS", chunk_floats)
    rng = np.random.default_rng(dim)
    train = rng.normal(size=(400, dim)).astype(np.float32)
    queries = np.concatenate([rng.normal(size=(200, dim)), 3 * rng.normal(size=(50, dim))]).astype(np.float32)
    reference = OneClassSVM(kernel="rbf", gamma="scale", nu=0.2).fit(train.astype(np.float64))
    fitted = fit_one_class_svm(train, nu=0.2)
    assert fitted.gamma == pytest.approx(reference._gamma, rel=1e-12)
    svm = SupportVectors(fitted.support_vectors, fitted.dual_coef, fitted.gamma, fitted.offset)
    want = reference.decision_function(queries.astype(np.float64))
    got = svm.decision(queries)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)  # relative, even for values near the boundary
    assert (got[200:] < 0).mean() > 0.9  # far-away vectors are outside the support


def test_scale_gamma_is_scikit_learns():
    x = np.random.default_rng(1).normal(size=(50, 4))
    assert scale_gamma(x) == pytest.approx(1 / (4 * x.var()))


def test_support_vectors_refuse_mismatched_arrays():
    with pytest.raises(Exception, match="do not match"):
        SupportVectors(np.zeros((3, 2)), np.zeros(4), 1.0, 0.0)


@pytest.mark.parametrize("grid_hw, window_hw, rows, cols", [
    ((30, 27), (5, 4), [0, 2, 4, 9, 25], [0, 3, 6, 9, 12, 23]),  # odd width (no Nyquist bin), the last window at the edge
    ((41, 44), (17, 17), [0, 2, 4, 6, 9], [0, 2, 11, 13]),  # the grid larger than the windows need
])
def test_window_decision_equals_decision_of_copied_windows(grid_hw, window_hw, rows, cols, monkeypatch):
    """The FFT correlation + integral image path gives the old formula's values: `decision` on every window, copied."""
    monkeypatch.setattr(support, "FRAMES_PER_BLOCK", 2)  # 3 frames: a full block and a partial one
    rng = np.random.default_rng(sum(grid_hw))
    channels, (kh, kw) = 3, window_hw
    grids = (rng.normal(size=(3, channels, *grid_hw)) + rng.normal(size=(1, channels, 1, 1))).astype(np.float32)  # channel offsets, as latents have
    rows, cols = np.array(rows), np.array(cols)
    windows = np.stack([grids[i, :, r : r + kh, c : c + kw].reshape(-1) for i in range(3) for r in rows for c in cols])
    fitted = fit_one_class_svm(windows[::2], nu=0.3)  # support vectors from some of the windows, so that values span the boundary
    svm = SupportVectors(fitted.support_vectors, fitted.dual_coef, fitted.gamma, fitted.offset)
    want = svm.decision(windows).reshape(3, len(rows), len(cols))
    got = svm.window_decision(grids, window_hw, rows, cols)
    assert got.shape == want.shape and (want > 0).any() and (want < 0).any()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(svm.window_decision(grids[1:2], window_hw, rows, cols), want[1:2], rtol=1e-9, atol=1e-11)  # spectra cached, one frame


def test_window_decision_refuses_windows_off_the_grid():
    svm = SupportVectors(np.zeros((2, 2 * 3 * 3)), np.ones(2), 1.0, 0.0)
    with pytest.raises(Exception, match="do not fit"):
        svm.window_decision(np.zeros((1, 2, 8, 8)), (3, 3), np.array([0, 6]), np.array([0]))
    with pytest.raises(Exception, match="18-value windows"):
        svm.window_decision(np.zeros((1, 3, 8, 8)), (3, 3), np.array([0]), np.array([0]))


@pytest.mark.gpu
def test_window_decision_on_cupy_equals_numpy():
    from edgead.errors import BackendError, DependencyError
    from edgead.runtime.knn_gpu import import_cupy

    try:
        cupy = import_cupy()
    except (DependencyError, BackendError) as error:
        pytest.skip(f"no CuPy GPU here: {error}")
    rng = np.random.default_rng(3)
    grids = rng.normal(size=(3, 16, 66, 66)).astype(np.float32)
    vectors = rng.normal(size=(40, 16 * 17 * 17)).astype(np.float32)
    rows = support.patch_starts(256, 8) // 4
    arrays = (vectors, rng.uniform(0.5, 1.0, size=40), 1 / (16 * 17 * 17 * 2), 0.3)
    want = SupportVectors(*arrays).window_decision(grids, (17, 17), rows, rows)
    got = SupportVectors(*arrays, xp=cupy).window_decision(grids, (17, 17), rows, rows)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)
