"""A Koszul cache file whose entries have the right keys but contents of the wrong shape is recomputed (only the
damaged entries), never a traceback and never a wrong count."""

import json

import numpy as np
import pytest

from cicy_search import data, invariants

DAMAGES = {
    "swapped": lambda v: [v[1], v[0]],
    "one array": lambda v: [v[0]],
    "three arrays": lambda v: [v[0], v[1], v[1]],
    "shorter": lambda v: [v[0][:-1], v[1]],
    "longer": lambda v: [v[0] + [0], v[1]],
    "nested": lambda v: [[v[0]], v[1]],
    "negative": lambda v: [[-1] * len(v[0]), v[1]],
    "strings": lambda v: [["a"] * len(v[0]), v[1]],
    "floats": lambda v: [[0.5] * len(v[0]), v[1]],
    "a number": lambda v: 7,
    "null": lambda v: None,
    "huge": lambda v: [[10**30] * len(v[0]), v[1]],
}


@pytest.mark.parametrize("how", list(DAMAGES))
def test_cache_entries_of_the_wrong_shape_are_recomputed(tmp_path, monkeypatch, how):
    monkeypatch.setenv("CICY_CACHE_DIR", str(tmp_path))
    x = data.load().x[:12]
    data.forget()
    expected = data.koszul_counts(x)
    cache = tmp_path / data.KOSZUL_CACHE
    entries = json.loads(cache.read_text())
    keys = sorted(entries)
    damaged = set(keys[::3])  # a third of the entries; the rest must be read, not recomputed
    cache.write_text(json.dumps({k: DAMAGES[how](v) if k in damaged else v for k, v in entries.items()}))
    data.forget()
    calls = []
    real = invariants.koszul_h1
    monkeypatch.setattr(invariants, "koszul_h1", lambda m: calls.append(np.ascontiguousarray(m, dtype=np.int8).tobytes().hex()) or real(m))
    got = data.koszul_counts(x)
    assert all((a == b).all() for a, b in zip(got, expected))
    assert set(calls) == damaged
    assert json.loads(cache.read_text()) == entries  # rewritten with the right counts
