"""A one-class SVM (RBF kernel) fitted with scikit-learn at training time, kept as plain arrays for the runtime's `support` head."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgead.errors import DataError, DependencyError


@dataclass
class FittedSVM:
    """decision(x) = sum_i dual_coef[i] * exp(-gamma * |x - support_vectors[i]|^2) - offset (scikit-learn's decision_function)."""

    support_vectors: np.ndarray  # (count, dim) float32
    dual_coef: np.ndarray  # (count,) float64
    gamma: float
    offset: float
    nu: float
    samples: int


def scale_gamma(x: np.ndarray) -> float:
    """scikit-learn's gamma="scale": 1 / (dim * variance of every value of x)."""
    variance = float(np.asarray(x, dtype=np.float64).var())
    return 1.0 / (x.shape[1] * variance) if variance > 0 else 1.0


def fit_one_class_svm(vectors: np.ndarray, nu: float) -> FittedSVM:
    """(n, dim) float32 vectors of good samples -> the fitted SVM's arrays (gamma "scale").

    The vectors are float32, so their float64 copies — what libsvm fits on — are stored exactly as float32.
    """
    try:
        from sklearn.svm import OneClassSVM
    except ImportError:
        raise DependencyError("fitting the support scorer needs scikit-learn: pip install 'edgead[train]'") from None
    if vectors.ndim != 2 or vectors.shape[0] < 2:
        raise DataError(f"the one-class SVM needs at least 2 vectors of good patches, got an array of shape {vectors.shape}")
    x = np.asarray(vectors, dtype=np.float32).astype(np.float64)
    gamma = scale_gamma(x)
    svm = OneClassSVM(kernel="rbf", gamma=gamma, nu=nu).fit(x)
    return FittedSVM(
        support_vectors=svm.support_vectors_.astype(np.float32),
        dual_coef=svm.dual_coef_[0].astype(np.float64),
        gamma=gamma,
        offset=float(svm.offset_[0]),
        nu=nu,
        samples=int(x.shape[0]),
    )
