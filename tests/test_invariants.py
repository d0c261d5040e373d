"""Exact invariants from the configuration matrix, checked against every manifold of both shipped lists."""

import gzip
import json
from importlib import resources

import numpy as np
import pytest

from cicy_search import invariants


def _raw(name):
    return json.loads(gzip.decompress((resources.files("cicy_search") / "data" / name).read_bytes()))


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
