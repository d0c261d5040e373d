"""The decomposition arithmetic against synthetic problems whose bias and variance are known in closed form.

Squared loss: polynomial least squares on a fixed design with Gaussian noise, a linear smoother S, so
E[f(x)] = S f(X), bias^2 = mean (f - S f(X))^2 and variance = sigma^2 mean ||S_x||^2 exactly.
0-1 loss: a histogram majority-vote classifier on a fixed design with known class probabilities; the
distribution of each bin's vote is computed exactly by dynamic programming over label counts, and the
reference terms from Domingos' definitions (B, V, N, c1, c2) written out independently here.
"""

import itertools

import numpy as np
import pytest
from numpy.polynomial import legendre

from cicy_search.reporting import decomposition as dec

SIGMA = 0.3
REPLICAS = 4000


def _true(x):
    return np.sin(2 * np.pi * x)


def test_squared_loss_matches_the_closed_form_of_polynomial_regression():
    rng = np.random.default_rng(0)
    x_train = (np.arange(30) + 0.5) / 30
    x_eval = np.linspace(0.01, 0.99, 400)
    errors = []
    for degree in (1, 3, 5, 9, 13):
        phi, phi_eval = legendre.legvander(2 * x_train - 1, degree), legendre.legvander(2 * x_eval - 1, degree)
        smoother = phi_eval @ np.linalg.pinv(phi)
        bias2 = np.mean((_true(x_eval) - smoother @ _true(x_train)) ** 2)
        variance = SIGMA**2 * np.mean(np.sum(smoother**2, axis=1))
        # B replicas: fresh noisy training labels, each fitted by least squares.
        y = _true(x_train)[None, :] + SIGMA * rng.standard_normal((REPLICAS, len(x_train)))
        preds = (phi_eval @ np.linalg.lstsq(phi, y.T, rcond=None)[0]).T
        d = dec.squared_loss(preds, _true(x_eval), noise=SIGMA**2)
        assert d.noise == pytest.approx(SIGMA**2)
        # The sample bias^2 carries E||mean - E f||^2 = variance / B on top of the true bias^2.
        assert abs(d.bias - bias2) <= 3 * variance / REPLICAS + 0.01 * bias2
        assert d.variance == pytest.approx(variance, rel=0.05)
        assert d.net_variance == d.variance
        assert d.error == pytest.approx(SIGMA**2 + bias2 + variance, rel=0.01)
        assert abs(d.residual) <= dec.IDENTITY_TOL
        # The measured error on fresh noisy test labels is the expected error the parts add up to.
        labels = _true(x_eval)[None, :] + SIGMA * rng.standard_normal(preds.shape)
        assert np.mean((labels - preds) ** 2) == pytest.approx(d.error, rel=0.01)
        errors.append(d.error)
    # U-shape: too simple and too flexible models both do worse than the middle.
    assert errors[0] > min(errors) < errors[-1] and int(np.argmin(errors)) in (1, 2)


# --- 0-1 loss -------------------------------------------------------------------------------------------

K = 3
PROTOS = [(0.7, 0.2, 0.1), (0.55, 0.1, 0.35)]
PERMS = [p for proto in PROTOS for p in itertools.permutations(proto)]
PIECES = np.array([PERMS[(5 * i) % len(PERMS)] for i in range(15)])  # P(t = k | x), constant on 15 pieces
X_TRAIN = (np.arange(45) + 0.5) / 45
X_EVAL = (np.arange(240) + 0.5) / 240


def _proba(x):
    return PIECES[np.minimum((x * len(PIECES)).astype(int), len(PIECES) - 1)]


def _bins(x, n_bins):
    return np.minimum((x * n_bins).astype(int), n_bins - 1)


def _exact_vote_distribution(n_bins):
    """P_D(bin's majority vote = k), exactly: label counts by dynamic programming, ties to the smaller class."""
    p_train, bins = _proba(X_TRAIN), _bins(X_TRAIN, n_bins)
    out = np.zeros((n_bins, K))
    for j in range(n_bins):
        dist = {(0,) * K: 1.0}
        for i in np.flatnonzero(bins == j):
            new = {}
            for counts, pr in dist.items():
                for k in range(K):
                    c = list(counts)
                    c[k] += 1
                    new[tuple(c)] = new.get(tuple(c), 0.0) + pr * p_train[i, k]
            dist = new
        for counts, pr in dist.items():
            out[j, int(np.argmax(counts))] += pr
    return out


def _reference(n_bins):
    """Domingos' terms from their definitions, with the exact vote distribution q and class probabilities p."""
    q = _exact_vote_distribution(n_bins)[_bins(X_EVAL, n_bins)]
    p = _proba(X_EVAL)
    rows = np.arange(len(X_EVAL))
    best, main = p.argmax(1), q.argmax(1)
    q_star, q_main, p_star = q[rows, best], q[rows, main], p[rows, best]
    bias, variance, noise = (main != best).astype(float), 1 - q_main, 1 - p_star
    c2 = np.where(bias == 1, -np.divide(q_star, variance, out=np.zeros_like(variance), where=variance > 0), 1.0)
    both_wrong = np.array([sum(q[i, k] * p[i, k] for k in range(K) if k != best[i]) for i in rows])
    denominator = (1 - q_star) * (1 - p_star)
    cond = np.divide(both_wrong, denominator, out=np.zeros_like(both_wrong), where=denominator > 0)
    c1 = q_star - (1 - q_star) * cond  # P(y = y*) - P(y != y*) P(y = t | y != y*, t != y*)
    margin = np.min(np.diff(np.sort(q, axis=1)[:, -2:], axis=1))
    return {
        "error": np.mean(1 - np.sum(q * p, axis=1)),
        "noise": np.mean(c1 * noise),
        "bias": np.mean(bias),
        "variance": np.mean(variance),
        "net_variance": np.mean(c2 * variance),
    }, margin


def test_zero_one_loss_matches_domingos_terms_computed_exactly():
    rng = np.random.default_rng(1)
    p_train = _proba(X_TRAIN)
    errors = []
    for n_bins in (1, 3, 5, 9, 15, 45):
        ref, margin = _reference(n_bins)
        assert ref["error"] == pytest.approx(ref["noise"] + ref["bias"] + ref["net_variance"], abs=1e-12)
        # The mode over 4000 replicas is the true mode: the top two vote probabilities are far apart.
        assert margin > 0.04
        labels = (rng.random((REPLICAS, len(X_TRAIN), 1)) > np.cumsum(p_train, axis=1)[None]).sum(axis=2)
        counts = np.zeros((REPLICAS, n_bins, K))
        np.add.at(counts, (np.arange(REPLICAS)[:, None], _bins(X_TRAIN, n_bins)[None, :], labels), 1)
        preds = counts.argmax(axis=2)[:, _bins(X_EVAL, n_bins)]
        d = dec.zero_one_loss(preds, proba=_proba(X_EVAL))
        for key, value in ref.items():
            assert getattr(d, key) == pytest.approx(value, abs=0.01), (n_bins, key)
        assert d.variance_unbiased + d.variance_biased == pytest.approx(d.variance)
        assert abs(d.residual) <= dec.IDENTITY_TOL
        # The measured error on fresh noisy labels is the expected error.
        fresh = (rng.random((REPLICAS, len(X_EVAL), 1)) > np.cumsum(_proba(X_EVAL), axis=1)[None]).sum(axis=2)
        assert np.mean(fresh != preds) == pytest.approx(d.error, abs=0.005)
        errors.append(d.error)
    assert errors[0] > min(errors) < errors[-1]


def test_zero_one_loss_without_noise_is_bias_plus_net_variance():
    # Three replicas, four points, labels are deterministic (as for Hodge numbers): noise is 0.
    preds = np.array([[1, 2, 3, 5], [1, 2, 4, 6], [1, 7, 4, 7]])
    target = np.array([1, 7, 3, 8])
    d = dec.zero_one_loss(preds, target)
    # Point by point: mode 1 (right, V 0), mode 2 (wrong, V 1/3), mode 4 (wrong, V 1/3), mode 5 (wrong, V 2/3).
    assert d.error == pytest.approx(np.mean(preds != target))
    assert d.noise == 0 and d.bias == pytest.approx(3 / 4) and d.variance == pytest.approx((0 + 1 / 3 + 1 / 3 + 2 / 3) / 4)
    # Biased points: c2 = -P(y = y* | y != mode): -1 at point 2 (the 7 is right), -1 at point 3, 0 at point 4.
    assert d.net_variance == pytest.approx((0 - 1 / 3 - 1 / 3 - 0) / 4)
    assert d.error == pytest.approx(d.bias + d.net_variance)


def test_squared_loss_of_identical_replicas_has_no_variance():
    d = dec.squared_loss(np.tile([1.0, 2.0, 4.0], (5, 1)), [1.0, 1.0, 1.0])
    assert d.variance == 0 and d.bias == pytest.approx(10 / 3) and d.error == pytest.approx(10 / 3)


def test_resampling_is_seeded_and_disjoint_subsets_partition():
    a, b = dec.resample(50, 3, "bootstrap", seed=4), dec.resample(50, 3, "bootstrap", seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and all(len(x) == 50 for x in a)
    assert not np.array_equal(a[0], a[1])
    # Replica b of seed s is replica 0 of seed s + b: each child run's logged seed reproduces its sample.
    assert np.array_equal(a[1], dec.resample(50, 1, "bootstrap", seed=5)[0])
    parts = dec.resample(50, 4, "disjoint", seed=0)
    assert sorted(np.concatenate(parts)) == list(range(50)) and {len(p) for p in parts} == {12, 13}
    with pytest.raises(ValueError):
        dec.resample(3, 4, "disjoint")
