import json

import numpy as np
import pytest

from cicy_search import data
from cicy_search.errors import CicyError


def test_original_list_loads_with_known_counts_and_hash():
    everything = data.load(keep_products=True)
    assert len(everything.frame) == 7890
    assert (everything.frame["h11"] == 0).sum() == 22
    d = data.load()
    assert len(d.frame) == 7868
    assert d.x.shape == (7868, 12, 15) and d.x.dtype == np.float32
    assert d.frame["h11"].min() == 1 and d.frame["h11"].max() == 19
    assert d.frame["h21"].max() == 101
    # The hash logged with every run is the one the data README publishes.
    assert d.hash == "5e57f570ef81cd3c0432406c02ee445ad0821d38684373c4d5d482bb76988729"
    assert (d.frame["euler"] == 2 * (d.frame["h11"] - d.frame["h21"])).all()


def test_favourable_list_is_padded_to_15x18_and_agrees_on_hodge_numbers():
    f = data.load("favourable", keep_products=True)
    o = data.load("original", keep_products=True)
    assert f.x.shape == (7890, 15, 18)
    assert (f.frame[["id", "h11", "h21"]].to_numpy() == o.frame[["id", "h11", "h21"]].to_numpy()).all()


def test_quintic_is_entry_7890_padded_in_the_corner():
    d = data.load()
    row = d.frame.index[d.frame["id"] == 7890][0]
    assert d.frame.loc[row, ["h11", "h21"]].tolist() == [1, 101]
    assert d.x[row, 0, 0] == 5 and d.x[row].sum() == 5


@pytest.mark.parametrize(
    "matrix, reason",
    [
        ([[5]], None),
        ([[3], [3]], None),  # the bicubic in P2 x P2
        ([[1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 1, 1], [1, 0, 0, 1, 0, 0],
          [1, 0, 0, 0, 0, 1], [0, 0, 1, 2, 0, 0], [0, 1, 0, 0, 2, 0]], None),
        ([], "empty"),
        ([[5, 1], [2]], "ragged rows"),
        ([[-1, 7]], "negative"),
        ([[4.5]], "not an integer"),
        ([[float("nan")]], "not an integer"),
        ([[float("inf")]], "not an integer"),
        ([["5"]], "not an integer"),
        ([[4]], "dimension"),
        ([[1, 0], [0, 5]], "n_0 = 0 < 1"),
        ([[2, 0], [3, 1]], "dimension"),
        ([[1] * 16], "exceeds the padding size"),
    ],
)
def test_check_matrix_names_the_problem(matrix, reason):
    got = data.check_matrix(matrix)
    if reason is None:
        assert got is None
    else:
        assert reason in got


def test_check_matrix_reasons_name_the_position():
    assert "row 1" in data.check_matrix([[5, 1], [2]])
    assert "entry (0,0)" in data.check_matrix([[-1, 7]])
    assert "not 3" in data.check_matrix([[4]])
    assert "12x15" in data.check_matrix([[1] * 16])
    assert "padding" not in data.check_matrix([[1] * 16], shape=(15, 18))  # fits 15x18; fails the CY checks


def test_every_shipped_matrix_passes_validation():
    d = data.load(keep_products=True)
    assert len(d.frame) == 7890  # load raises CicyError naming the manifold otherwise


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.3, 0.1, 0.6), (0.5, 0.2, 0.0)])
def test_split_is_deterministic_disjoint_and_sized(fractions):
    train, val, test = fractions
    a = data.split(7868, train=train, val=val, test=test, seed=3)
    b = data.split(7868, train=train, val=val, test=test, seed=3)
    c = data.split(7868, train=train, val=val, test=test, seed=4)
    for x, y in zip((a.train, a.val, a.test), (b.train, b.val, b.test)):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.train, c.train)
    parts = [set(a.train), set(a.val), set(a.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert abs(len(a.train) - train * 7868) <= 1 and abs(len(a.test) - test * 7868) <= 1


def test_stratified_split_keeps_label_proportions_and_rare_labels_in_training():
    d = data.load()
    y = d.y("h11")
    s = data.split(len(y), seed=0, stratify=y)
    assert len(set(s.train) | set(s.val) | set(s.test)) == len(s.train) + len(s.val) + len(s.test)
    for label in (6, 7, 8):
        share = np.mean(y[s.val] == label) / np.mean(y == label)
        assert 0.9 < share < 1.1
    assert 16 in set(y[s.train])  # the single h11 = 16 manifold is trained on, never only tested


def test_bad_split_fractions_are_one_line_errors():
    with pytest.raises(CicyError, match="add up to 1.2"):
        data.split(10, train=0.8, val=0.2, test=0.2)
    with pytest.raises(CicyError, match="unknown dataset"):
        data.load("quartic")


def _section(**changes):
    from cicy_search.config import resolve

    return resolve({"data": changes})["data"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"limit": 5}, "data: the validation split is empty (data.limit = 5: 5 matrices in 4 h11 classes, each split on its own"),
        ({"limit": 1, "stratify": False}, "data: the validation split is empty (data.limit = 1: 1 matrices, fractions 0.8/0.1/0.1); raise data.limit"),
        ({"limit": 30, "targets": ["h21"]}, "data: the validation split is empty (data.limit = 30: 30 matrices in"),
        ({"limit": 20, "stratify": False, "test": 0.02}, "data: the test split is empty"),
        ({"train": 0.0}, "split fraction train must be positive"),
    ],
)
def test_select_refuses_splits_left_empty(changes, message):
    with pytest.raises(CicyError) as e:
        data.select(_section(**changes))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_select_draws_the_limit_then_splits_it():
    dataset, s = data.select(_section(limit=400))
    assert len(dataset.frame) == 400 and min(len(s.train), len(s.val), len(s.test)) > 0
    again, s2 = data.select(_section(limit=400))
    assert (again.frame["id"] == dataset.frame["id"]).all() and (s.val == s2.val).all()
    _, no_test = data.select(_section(limit=400, test=0.0))
    assert len(no_test.test) == 0  # a zero fraction may stay empty


# --- symmetry and invariants as inputs ---


def test_canonical_form_is_the_same_for_every_permutation_of_a_matrix():
    x = data.load().x[::20]  # 394 manifolds across the list
    reference = data.canonical(x)
    for seed in (1, 2, 3):
        assert np.array_equal(data.canonical(data.permute(x, seed)), reference)
    # It is a permutation of the matrix, present rows and columns first.
    assert np.array_equal(np.sort(reference.reshape(len(x), -1), axis=1), np.sort(x.reshape(len(x), -1), axis=1))
    rows_present = reference.sum(axis=2) > 0
    assert (rows_present[:, :-1] >= rows_present[:, 1:]).all()


def test_canonical_form_tells_different_manifolds_apart():
    x = data.load().x
    distinct = {data.canonical_matrix(m).tobytes() for m in x}
    assert len(distinct) == len({m.tobytes() for m in x})  # no two list entries are permutations of each other


def test_permute_moves_rows_and_columns_with_their_entries():
    x = data.load().x[:50]
    p = data.permute(x, 0)
    assert not np.array_equal(p, x)
    for a, b in zip(x, p):
        assert sorted(map(tuple, np.sort(a, axis=1))) == sorted(map(tuple, np.sort(b, axis=1)))
        assert sorted(a.sum(axis=0)) == sorted(b.sum(axis=0))


def test_invariant_channels_follow_the_matrix_and_are_zero_on_padding():
    d = data.load()
    x = d.x[:200]
    inputs = data.model_inputs(x, features=["euler", "c2"])
    assert inputs.shape == (200, 12, 15, 3)
    assert np.array_equal(inputs[..., 0], x)
    present = (x.sum(axis=2) > 0)[:, :, None] & (x.sum(axis=1) > 0)[:, None, :]
    assert (inputs[..., 1:][~present] == 0).all()
    euler = inputs[..., 1].max(axis=(1, 2)) + inputs[..., 1].min(axis=(1, 2))  # one of them is the value
    assert np.allclose(np.round(euler * data.FEATURE_SCALE["euler"]), d.frame["euler"].to_numpy()[:200])
    permuted = data.permute(x, 5)
    moved = data.model_inputs(permuted, features=["euler", "c2"])
    assert np.allclose(np.sort(moved.reshape(200, -1), axis=1), np.sort(inputs.reshape(200, -1), axis=1))


def test_exact_euler_number_of_every_manifold_matches_the_list():
    d = data.load(keep_products=True)
    euler, c2 = data.exact_invariants(d.x)
    assert (euler == d.frame["euler"].to_numpy()).all()
    assert (c2 >= 0).all() and c2.shape == (len(d.x), 12)


def test_koszul_channels_follow_the_matrix_and_add_up_to_h11():
    d = data.load()
    pick = np.random.default_rng(0).choice(len(d.x), 300, replace=False)
    x, h11 = d.x[pick], d.y("h11")[pick]
    inputs = data.model_inputs(x, features=["koszul"])
    assert inputs.shape == (300, 12, 15, 3)
    present = (x.sum(axis=2) > 0)[:, :, None] & (x.sum(axis=1) > 0)[:, None, :]
    assert (inputs[..., 1:][~present] == 0).all()
    normal, ambient = data.koszul_counts(x)
    assert np.allclose(inputs[..., 1], present * normal[:, None, :] / data.FEATURE_SCALE["koszul"])
    assert np.allclose(inputs[..., 2], present * ambient[:, :, None] / data.FEATURE_SCALE["koszul"])
    rows = (x.sum(axis=2) > 0).sum(axis=1)
    assert (rows + normal.sum(axis=1) - ambient.sum(axis=1) == h11).all()
    assert (h11 != rows).sum() > 50  # the slice holds non-favourable manifolds, whose h11 the counts must supply
    moved = data.model_inputs(data.permute(x, 3), features=["koszul"])
    assert np.allclose(np.sort(moved.reshape(300, -1), axis=1), np.sort(inputs.reshape(300, -1), axis=1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_koszul_share_channels_make_h11_the_sum_of_the_input(seed):
    """koszul_share: summed over the matrix its three channels are h^1(N), h^1(V) and the number of rows, so h11
    is exactly rows + h^1(N) - h^1(V) of the input, whatever the row and column order (and canonical or not)."""
    d = data.load()
    pick = np.random.default_rng(seed).choice(len(d.x), 200, replace=False)
    x, h11 = d.x[pick], d.y("h11")[pick]
    for canonical_form, matrices in ((False, x), (True, x), (False, data.permute(x, seed))):
        inputs = data.model_inputs(matrices, canonical_form=canonical_form, features=["euler", "koszul_share"])
        assert inputs.shape == (200, 12, 15, 5)
        total = inputs.sum(axis=(1, 2))
        scale = data.FEATURE_SCALE["koszul"]
        assert np.allclose(total[:, 2] * scale - total[:, 3] * scale + total[:, 4], h11, atol=1e-3)
        present = (matrices.sum(axis=2) > 0)[:, :, None] & (matrices.sum(axis=1) > 0)[:, None, :]
        if not canonical_form:
            assert (inputs[..., 2:][~present] == 0).all() and (inputs[..., 4][present] > 0).all()
    assert (h11 != (x.sum(axis=2) > 0).sum(axis=1)).sum() > 30  # non-favourable ones among them


@pytest.mark.parametrize("damage", ["", "not json", '{"zz": [[1], [2]]}', '{"00": 5}', "[1, 2]"])
def test_koszul_counts_are_kept_on_disk_and_a_damaged_cache_is_recomputed(tmp_path, monkeypatch, damage):
    """A second process reads the counts from $CICY_CACHE_DIR instead of recomputing them; a cache file that is
    empty, not JSON or of the wrong shape is ignored, recomputed and rewritten, never a traceback."""
    from cicy_search import invariants

    monkeypatch.setenv("CICY_CACHE_DIR", str(tmp_path))
    x = data.load().x[:40]
    data.forget()
    expected = data.koszul_counts(x)
    cache = tmp_path / data.KOSZUL_CACHE
    assert len(json.loads(cache.read_text())) == len({m.tobytes() for m in x})
    data.forget()  # a new process: only the file remembers

    def recomputed(matrix):
        raise AssertionError("recomputed a count the cache holds")

    with monkeypatch.context() as m:
        m.setattr(invariants, "koszul_h1", recomputed)
        assert all((a == b).all() for a, b in zip(data.koszul_counts(x), expected))
    cache.write_text(damage)
    data.forget()
    assert all((a == b).all() for a, b in zip(data.koszul_counts(x), expected))
    assert len(json.loads(cache.read_text())) == len({m.tobytes() for m in x})


def test_the_disk_cache_can_be_turned_off(tmp_path, monkeypatch):
    """With CICY_CACHE_DIR=none nothing is written, not even to the default folder (here under tmp_path)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CICY_CACHE_DIR")
    assert data.cache_dir() == tmp_path / "cicy-search"
    monkeypatch.setenv("CICY_CACHE_DIR", "none")
    assert data.cache_dir() is None
    data.forget()
    data.koszul_counts(data.load().x[:5])
    assert not list(tmp_path.iterdir())
