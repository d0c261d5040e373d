"""Bias-variance decomposition of an expected loss, from replica predictions on one fixed evaluation set.

Both losses use Domingos' unified decomposition (P. Domingos, "A Unified Bias-Variance Decomposition and
its Applications", ICML 2000). At each evaluation point x, with y* the optimal prediction, y_m the main
prediction of the replicas (their mean for squared loss, their mode for 0-1 loss) and t the noisy label::

    E_{D,t}[L(t, y)] = c1 N(x) + B(x) + c2 V(x),
    N = E_t[L(t, y*)],   B = L(y*, y_m),   V = E_D[L(y_m, y)]

Squared loss: c1 = c2 = 1, the classic E[(t - y)^2] = noise + bias^2 + variance. 0-1 loss: c2 = 1 where
B = 0 and c2 = -P_D(y = y* | y != y_m) where B = 1 (variance on biased points lowers the error);
c1 = P_D(y = y*) - P_D(y != y*) P(y = t | y != y*, t != y*). E_D is the average over the replicas, so the
identity holds exactly on the sample: ``check`` asserts |error - (noise + bias + net_variance)| <=
IDENTITY_TOL * max(1, error), where ``error`` is computed straight from the loss, not as the sum.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

IDENTITY_TOL = 1e-9
LOSSES = ("squared", "zero_one")


@dataclass(frozen=True)
class Decomposition:
    """Point-averaged terms of one decomposition.

    ``bias`` is E_x[B]: the mean squared bias (bias^2) for squared loss, the fraction of points whose main
    prediction is wrong for 0-1 loss. ``noise`` is E_x[c1 N] and ``net_variance`` E_x[c2 V], the terms that
    add up to ``error``; ``variance`` is E_x[V], split for 0-1 loss into its parts on unbiased and biased
    points (Domingos' V_u and V_b; NaN for squared loss).
    """

    loss: str
    error: float
    noise: float
    bias: float
    variance: float
    net_variance: float
    variance_unbiased: float
    variance_biased: float
    replicas: int
    points: int

    @property
    def residual(self) -> float:
        return self.error - (self.noise + self.bias + self.net_variance)

    def check(self) -> "Decomposition":
        if not abs(self.residual) <= IDENTITY_TOL * max(1.0, abs(self.error)):
            raise ArithmeticError(f"{self.loss} decomposition does not add up: residual {self.residual:.3g}")
        return self

    def row(self) -> dict:
        return {**asdict(self), "residual": self.residual}


def _as_replicas(preds) -> np.ndarray:
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[0] < 1 or preds.shape[1] < 1:
        raise ValueError(f"expected predictions of shape (replicas, points), got {preds.shape}")
    return preds


def squared_loss(preds, target, *, noise=0.0) -> Decomposition:
    """Decompose the expected squared loss.

    Args:
        preds: (replicas, points) real predictions of models trained on independent training sets.
        target: (points,) the optimal prediction y* = E[t | x]; for the CICY lists the Hodge numbers
            themselves, which are a deterministic function of the matrix.
        noise: the noise variance Var[t | x], a number or one per point (0 for the CICY lists).
    """
    f = _as_replicas(preds).astype(np.float64)
    y = np.asarray(target, dtype=np.float64)
    sigma2 = np.broadcast_to(np.asarray(noise, dtype=np.float64), y.shape)
    main = f.mean(axis=0)
    return Decomposition(
        loss="squared",
        error=float(np.mean(sigma2 + np.mean((y - f) ** 2, axis=0))),
        noise=float(np.mean(sigma2)),
        bias=float(np.mean((y - main) ** 2)),
        variance=float(np.mean((f - main) ** 2)),
        net_variance=float(np.mean((f - main) ** 2)),
        variance_unbiased=math.nan,
        variance_biased=math.nan,
        replicas=f.shape[0],
        points=f.shape[1],
    ).check()


def zero_one_loss(preds, target=None, *, proba=None) -> Decomposition:
    """Decompose the expected 0-1 loss (Domingos 2000, multi-class form).

    Args:
        preds: (replicas, points) integer class predictions.
        target: (points,) the optimal class y*; when omitted, the argmax of ``proba``. Without ``proba`` the
            label is taken as a deterministic function of x (noise 0), as for the CICY lists.
        proba: (points, classes) the true P(t = k | x) for classes 0..K-1, when known (synthetic problems);
            predictions must then lie in 0..K-1.

    The main prediction is the mode over replicas, ties going to the smallest label.
    """
    f = _as_replicas(preds).astype(np.int64)
    replicas, points = f.shape
    if target is None:
        if proba is None:
            raise ValueError("give the optimal class (target), the class probabilities (proba), or both")
        target = np.asarray(proba).argmax(axis=1)
    y = np.asarray(target, dtype=np.int64)
    labels, codes = np.unique(np.concatenate([f.ravel(), y]), return_inverse=True)
    f_code, y_code = codes[: f.size].reshape(f.shape), codes[f.size :]
    counts = np.zeros((points, len(labels)))
    np.add.at(counts, (np.broadcast_to(np.arange(points), f.shape), f_code), 1.0)
    q = counts / replicas  # P_D(y = k | x)
    main = q.argmax(axis=1)  # first maximum: the smallest label wins a tie
    rows = np.arange(points)
    q_main, q_star = q[rows, main], q[rows, y_code]
    biased = main != y_code
    v = 1.0 - q_main
    with np.errstate(invalid="ignore", divide="ignore"):
        c2 = np.where(biased, -np.where(v > 0, q_star / v, 0.0), 1.0)
    if proba is None:
        error = float(np.mean(f != y[None, :]))
        noise_term = np.zeros(points)
    else:
        p = np.asarray(proba, dtype=np.float64)
        if f.min() < 0 or f.max() >= p.shape[1] or y.max() >= p.shape[1]:
            raise ValueError(f"with proba, classes must lie in 0..{p.shape[1] - 1}")
        error = float(np.mean(1.0 - p[rows[None, :], f]))  # E_t[1(t != y)] = 1 - P(t = y | x)
        # c1 N = q*(1 - p*) - sum_{k != y*} q_k p_k, the expanded form of Domingos' c1 times N = 1 - p*.
        p_on_labels = np.zeros((points, len(labels)))
        inside = labels < p.shape[1]
        p_on_labels[:, inside] = p[:, labels[inside]]
        p_star = p[rows, y]
        noise_term = q_star * (1.0 - p_star) - (np.sum(q * p_on_labels, axis=1) - q_star * p_star)
    return Decomposition(
        loss="zero_one",
        error=error,
        noise=float(np.mean(noise_term)),
        bias=float(np.mean(biased)),
        variance=float(np.mean(v)),
        net_variance=float(np.mean(c2 * v)),
        variance_unbiased=float(np.mean(np.where(biased, 0.0, v))),
        variance_biased=float(np.mean(np.where(biased, v, 0.0))),
        replicas=replicas,
        points=points,
    ).check()


def decompose(loss: str, preds, target, **noise) -> Decomposition:
    if loss == "squared":
        return squared_loss(preds, target, **noise)
    if loss == "zero_one":
        return zero_one_loss(preds, target, **noise)
    raise ValueError(f"unknown loss {loss!r}: choose from {', '.join(LOSSES)}")


def resample(n: int, replicas: int, method: str = "bootstrap", seed: int = 0) -> list[np.ndarray]:
    """Training-set indices for each replica: a bootstrap sample of size n drawn with seed ``seed + b``,
    or ``replicas`` disjoint subsets of one permutation drawn with ``seed``."""
    if method == "bootstrap":
        return [np.random.default_rng(seed + b).integers(0, n, n) for b in range(replicas)]
    if method == "disjoint":
        if replicas > n:
            raise ValueError(f"cannot split {n} training examples into {replicas} disjoint subsets")
        return [np.sort(part) for part in np.array_split(np.random.default_rng(seed).permutation(n), replicas)]
    raise ValueError(f"unknown resampling {method!r}: choose bootstrap or disjoint")
