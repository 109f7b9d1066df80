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
