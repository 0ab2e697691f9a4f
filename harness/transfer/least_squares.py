"""Closed-form L2-regularised least squares, the linear probe of the few-shot evaluation.

The procedure is the one of big_vision's `evaluators/fewshot_lsr.py` and V-MoE's
`vmoe/evaluate/fewshot.py` (Kolesnikov, Beyer, Zhai; Jenatton): whiten the few-shot features
with their own per-dimension mean and std (+1e-5), append a constant feature of 100 as the bias,
regress targets that are one-hot in {-1, +1}, and predict the argmax of the scores.

With X (N, D) the preprocessed features and Y (N, C) the targets, the ridge solution
    W = (X^T X + l2 I)^-1 X^T Y  =  X^T (X X^T + l2 I)^-1 Y
is computed from whichever Gram matrix is smaller: X^T X (D, D) when N >= D ("primal"), else
X X^T (N, N) ("dual"). Its eigendecomposition Q diag(e) Q^T is done once, so every further l2
costs one scaling: W = L diag(1 / (e + l2)) R, with L = Q, R = Q^T X^T Y (primal) or
L = X^T Q, R = Q^T Y (dual). That is what makes sweeping many l2 values cheap.

Unlike the references (float32 under JAX), this runs in float64 numpy on the host: the bias
column makes X^T X badly conditioned (its entry is 1e4 N against ~N for whitened features),
and a host-side numpy solve neither needs nor occupies accelerator memory.
"""

import dataclasses
from typing import Literal

import numpy as np

# Constant appended to every feature vector. Large, so the bias weight it carries is barely
# shrunk by the L2 penalty (the penalty on the bias is l2 / 100^2 relative to the others).
BIAS_FEATURE = 100.0
# Added to the per-dimension std before dividing, so constant feature dimensions stay finite.
WHITENING_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class LeastSquaresFit:
    """Everything needed to produce the ridge weights for any l2, and to preprocess test data."""

    form: Literal["primal", "dual"]
    eigenvalues: np.ndarray  # (K,), K = D + 1 (primal) or N (dual)
    left: np.ndarray  # (D + 1, K)
    right: np.ndarray  # (K, C)
    mean: np.ndarray  # (1, D): few-shot mean, reused for the test features
    std: np.ndarray  # (1, D): few-shot std + WHITENING_EPSILON

    def weights(self, l2_reg: float) -> np.ndarray:
        """The (D + 1, C) ridge weights (last row: bias) for this l2 strength."""
        scaling = 1.0 / (self.eigenvalues + l2_reg)
        return (self.left * scaling[None, :]) @ self.right

    def scores(self, features: np.ndarray, l2_reg: float) -> np.ndarray:
        """(M, C) regression scores of raw (unwhitened) features."""
        return preprocess(features, self.mean, self.std) @ self.weights(l2_reg)

    def predict(self, features: np.ndarray, l2_reg: float) -> np.ndarray:
        """(M,) predicted class of each raw feature vector."""
        return np.argmax(self.scores(features, l2_reg), axis=1)


def preprocess(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Whitens with the given statistics and appends the constant bias feature: (M, D + 1)."""
    whitened = (np.asarray(features, np.float64) - mean) / std
    bias = np.full((whitened.shape[0], 1), BIAS_FEATURE)
    return np.concatenate([whitened, bias], axis=1)


def signed_one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, C) targets: +1 for the label's class, -1 elsewhere."""
    return np.where(np.arange(num_classes)[None, :] == np.asarray(labels)[:, None], 1.0, -1.0)


def fit(features: np.ndarray, labels: np.ndarray, num_classes: int) -> LeastSquaresFit:
    """Whitens, adds the bias feature and eigendecomposes the smaller Gram matrix.

    Args:
      features: (N, D) pre-logits of the few-shot training examples.
      labels: (N,) integer labels in [0, num_classes).
      num_classes: C, the width of the one-hot targets (classes absent from `labels` included).
    """
    raw = np.asarray(features, np.float64)
    mean = raw.mean(axis=0, keepdims=True)
    std = raw.std(axis=0, keepdims=True) + WHITENING_EPSILON
    x = preprocess(raw, mean, std)
    y = signed_one_hot(labels, num_classes)
    num_points, dim = x.shape
    if num_points >= dim:
        eigenvalues, q = np.linalg.eigh(x.T @ x)
        return LeastSquaresFit("primal", eigenvalues, q, q.T @ (x.T @ y), mean, std)
    eigenvalues, q = np.linalg.eigh(x @ x.T)
    return LeastSquaresFit("dual", eigenvalues, x.T @ q, q.T @ y, mean, std)
