"""Exact invariants from the configuration matrix, checked against every manifold of both shipped lists."""

import gzip
import json
from importlib import resources

import numpy as np
import pytest

from cicy_search import invariants


def _raw(name):
    return json.loads(gzip.decompress((resources.files("cicy_search") / "data" / name).read_bytes()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cicy3o.json.gz", "cicy3f.json.gz"])
def test_euler_number_and_c2_agree_with_the_list_for_every_manifold(name):
    raw = _raw(name)
    keys = sorted(raw, key=int)
    computed = invariants.invariants([raw[k]["matrix"] for k in keys])
    # The favourable list has no euler field: 2 (h11 - h21) for the non-products, 0 for the products.
    expected = [raw[k].get("euler", 0 if raw[k].get("isprod") else 2 * (raw[k]["h11"] - raw[k]["h21"])) for k in keys]
    assert len(keys) == 7890
    assert [c["euler"] for c in computed] == expected
    assert [c["c2"] for c in computed] == [raw[k]["c2"] for k in keys]


@pytest.mark.parametrize(
    "matrix, euler",
    [
        ([[5]], -200),  # the quintic in P^4
        ([[3, 3]], -144),  # the bicubic in P^5
        ([[4], [2]], -168),  # P^3 x P^1, bidegree (4, 2)
        ([[3], [3]], -162),  # P^2 x P^2, bidegree (3, 3)
        ([[6]], 2610),  # the sextic 4-fold in P^5
        ([[4, 0], [0, 3]], 0),  # K3 x T^2 (a product)
    ],
)
def test_euler_numbers_of_known_manifolds(matrix, euler):
    assert invariants.euler_numbers([matrix])[0] == euler


def test_padding_and_row_or_column_order_do_not_change_the_invariants():
    m = np.zeros((12, 15), dtype=np.int64)
    m[:3, :2] = [[1, 1], [3, 0], [0, 3]]  # P^1 x P^2 x P^2 ... rows sum to n + 1
    permuted = np.zeros_like(m)
    permuted[np.ix_([5, 0, 9], [7, 3])] = m[:3, :2]
    a, b = invariants.invariants([m, permuted])
    assert a["euler"] == b["euler"]
    assert sorted(a["c2"]) == sorted(b["c2"])


def test_triple_intersection_numbers_of_the_quintic():
    (value,) = invariants.invariants([[[5]]])
    assert value["triple"].tolist() == [[[5]]]  # J^3 = 5 on the quintic
    assert value["c2"] == [50]


def test_line_bundle_cohomology_of_the_quintic():
    # h^0(X, O(d)) = C(d + 4, 4) - C(d - 1, 4): sections of P^4 modulo the quintic's multiples; Serre duality for d < 0.
    h = invariants.line_bundle_cohomology([[5]], [[0], [1], [2], [5], [6], [-1], [-5]])
    assert h.tolist() == [[1, 0, 0, 1], [5, 0, 0, 0], [15, 0, 0, 0], [125, 0, 0, 0], [205, 0, 0, 0], [0, 0, 0, 5], [0, 0, 0, 125]]


def test_line_bundle_cohomology_on_a_product_ambient_space():
    # The bidegree (4, 2) hypersurface in P^3 x P^1: O_X(0, 1) restricts the P^1 hyperplane (2 sections), O_X(1, 0)
    # the P^3 one (4); O_X(0, -1) has h^3 = h^0(O_X(0, 1)) = 2 by Serre duality.
    h = invariants.line_bundle_cohomology([[4], [2]], [[0, 1], [1, 0], [0, -1], [0, 0]])
    assert h.tolist() == [[2, 0, 0, 0], [4, 0, 0, 0], [0, 0, 0, 2], [1, 0, 0, 1]]


def _h11_cases(name, keep):
    raw = _raw(name)
    keys = [k for k in sorted(raw, key=int) if raw[k]["h11"]]  # the 22 products (h11 listed as 0) left out
    keys = keys if keep is None else [keys[i] for i in np.random.default_rng(0).choice(len(keys), keep, replace=False)]
    return [raw[k]["matrix"] for k in keys], [raw[k]["h11"] for k in keys]


@pytest.mark.slow
@pytest.mark.parametrize("name, keep", [("cicy3o.json.gz", None), ("cicy3f.json.gz", 150)])
def test_h11_from_the_koszul_counts_agrees_with_the_list(name, keep):
    # Every manifold of the original list (4,874 favourable, 2,994 with h11 above the number of rows, up to 16 above),
    # and a sample of the favourable list (whose larger matrices cost more).
    matrices, h11 = _h11_cases(name, keep)
    computed = [invariants.h11_koszul(m) for m in matrices]
    assert computed == h11
    if keep is None:
        rows = [len(m) for m in matrices]
        assert sum(h != r for h, r in zip(h11, rows)) == 2994 and max(h - r for h, r in zip(h11, rows)) == 16


def test_koszul_counts_do_not_depend_on_row_or_column_order_or_padding():
    matrices, h11 = _h11_cases("cicy3o.json.gz", 40)
    rng = np.random.default_rng(1)
    for m, h in zip(matrices, h11):
        a = np.asarray(m)
        rows, cols = rng.permutation(a.shape[0]), rng.permutation(a.shape[1])
        padded = np.zeros((12, 15), dtype=int)
        padded[: a.shape[0], : a.shape[1]] = a[rows][:, cols]
        normal, ambient = invariants.koszul_h1(a)
        moved_normal, moved_ambient = invariants.koszul_h1(padded)
        assert moved_normal.tolist() == normal[cols].tolist() and moved_ambient.tolist() == ambient[rows].tolist()
        assert invariants.h11_koszul(padded) == h
