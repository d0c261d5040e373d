"""Exact topological invariants of complete intersections, computed from the configuration matrix.

A CICY X of dimension d is cut out of A = P^{n_1} x ... x P^{n_m} by K equations; column j of the
configuration matrix q holds the multidegree of equation j, so its divisor class is Q_j = sum_i q_ij J_i
(J_i the hyperplane class of P^{n_i}). Integrating over X is integrating over A against the top form
mu = prod_j Q_j, and integrating over A reads off the coefficient of prod_i J_i^{n_i}.

From the normal-bundle sequence the total Chern class is c(TX) = prod_i (1 + J_i)^{n_i + 1} / prod_j (1 + Q_j).
Its power sums p_k = sum_i (n_i + 1) J_i^k - sum_j Q_j^k give the Chern classes through Newton's identities;
with c_1 = p_1 = 0 (the Calabi-Yau condition) they are c_2 = -p_2 / 2, c_3 = p_3 / 3, c_4 = p_2^2 / 8 - p_4 / 4.

Everything here is exact integer arithmetic, vectorised over every manifold that shares the row dimensions
(n_1, ..., n_m): the coefficients of mu are built column by column over exponents (a_1, ..., a_m) with
a_i <= n_i. mu after j columns lives on the layer a_1 + ... + a_m = j only, so each column maps one layer to
the next (m times the box instead of K * m times), with the group on the last, contiguous axis; the
intersection numbers are read off the last layer.

For 4-folds (the 921,497 CICY 4-folds reach 16 x 20) only the Euler number is computed, on a leaner path: rows
are sorted by n_i (the Euler number does not depend on their order), so far fewer groups, and c_4 is
contracted with the final layer in monomial form.
"""

from __future__ import annotations

import functools
from typing import Iterable, Sequence

import numpy as np

#: Above this many array cells (manifolds x exponent states) a group is cut into chunks.
CHUNK_CELLS = 4_000_000
#: Column subsets are merged by their sums once there are this many (or at the last column).
MERGE_SUBSETS = 512


def _trim(matrix) -> np.ndarray:
    """A configuration matrix as an int64 array without its zero padding (rows and columns of zeros)."""
    a = np.asarray(matrix, dtype=np.int64)
    a = a[a.sum(axis=1) > 0]
    return a[:, a.sum(axis=0) > 0]


def _top_coefficients(q: np.ndarray, dims: tuple[int, ...], degree: int) -> np.ndarray:
    """Intersection numbers of ``degree`` divisors J_a on each manifold of a group.

    Args:
        q: (G, m, K) configuration matrices with row dimensions ``dims`` (sum(dims) - K = degree).
        dims: (n_1, ..., n_m).
        degree: the dimension d of the manifolds.

    Returns (G, m, ..., m) (``degree`` axes): entry [g, a, b, c] = integral over X_g of J_a J_b J_c.
    """
    g, m, k = q.shape
    layers = _layers(dims)
    _, _, pos, _, strides = layers
    last = _last_layer(np.ascontiguousarray(q.transpose(1, 2, 0)), dims, layers)  # mu on |a| = K: (cells, G)
    # Entry [a, b, c] is the coefficient of mu at n - e_a - e_b - e_c (on the last layer): gather them all at once.
    idx = np.indices((m,) * degree).reshape(degree, -1)
    exps = np.asarray(dims)[:, None] - (np.arange(m)[:, None, None] == idx[None]).sum(axis=1)
    valid = (exps >= 0).all(axis=0)
    cells = np.where(valid, pos[np.asarray(strides) @ np.clip(exps, 0, None)], 0)
    gathered = last[cells] * valid[:, None]
    return np.ascontiguousarray(gathered.T).reshape((g,) + (m,) * degree)


def _chern_parts(q: np.ndarray, dims: Sequence[int]):
    """(p2 as a symmetric matrix, the K columns) for contracting power sums with intersection numbers."""
    n1 = np.asarray(dims, dtype=np.int64) + 1
    p2 = np.einsum("i,ij->ij", n1, np.eye(len(dims), dtype=np.int64))[None] - np.einsum("gak,gbk->gab", q, q)
    return n1, p2


def _group_invariants(q: np.ndarray, dims: tuple[int, ...]) -> dict[str, np.ndarray]:
    g, m, k = q.shape
    d = sum(dims) - k
    t = _top_coefficients(q, dims, d)
    n1, p2 = _chern_parts(q, dims)
    diag = t[(slice(None), *([np.arange(m)] * d))]  # integral of J_i^d
    if d == 3:
        p3 = np.einsum("i,gi->g", n1, diag) - np.einsum("gak,gbk,gck,gabc->g", q, q, q, t, optimize=True)
        euler, rem = np.divmod(p3, 3)
        c2 = -np.einsum("gab,gabc->gc", p2, t)  # integral of c_2 J_c = -(1/2) p_2 J_c: halve below
        c2, rem2 = np.divmod(c2, 2)
        assert not rem.any() and not rem2.any(), "non-integral Chern numbers: not a Calabi-Yau configuration"
        return {"euler": euler, "c2": c2, "triple": t}
    raise ValueError(f"Chern numbers of this kind are implemented for dimension 3, not {d} (4-folds: _euler4)")


def _layers(dims: tuple[int, ...]):
    """The box prod_i [0, n_i] in C order, sorted into layers |a| = j.

    Returns (order, starts, pos, digits, strides): the codes of layer j are ``order[starts[j]:starts[j + 1]]``,
    ``pos[code]`` is a code's place within its layer, ``digits[i, code]`` = a_i and code = sum_i a_i strides[i].
    """
    shape = tuple(n + 1 for n in dims)
    digits = np.indices(shape, dtype=np.int8).reshape(len(dims), -1)
    level = digits.sum(axis=0, dtype=np.int16)
    order = np.argsort(level, kind="stable")
    counts = np.bincount(level, minlength=sum(dims) + 1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    pos = np.empty(len(order), dtype=np.int64)
    pos[order] = np.arange(len(order)) - starts[level[order]]
    strides = [int(np.prod(shape[i + 1 :])) for i in range(len(dims))]
    return order, starts, pos, digits, strides


def _last_layer(qt: np.ndarray, dims: tuple[int, ...], layers) -> np.ndarray:
    """The coefficients of mu = prod_j Q_j, all on its last layer |a| = K, as (cells of that layer, G).

    ``qt`` is (m, K, G): the group on the last axis. mu after j columns lives on layer j only, so each column
    maps one layer to the next (truncated at a_i <= n_i: J_i^{n_i + 1} = 0 on P^{n_i}).
    """
    m, k, g = qt.shape
    order, starts, pos, digits, strides = layers
    layer = np.ones((1, g), dtype=np.int64)
    for j in range(k):
        cells = order[starts[j] : starts[j + 1]]
        new = np.zeros((starts[j + 2] - starts[j + 1], g), dtype=np.int64)
        for i in range(m):
            touched = np.flatnonzero(qt[i, j])  # most entries are zero: work on the manifolds where Q_j has J_i
            if len(touched) == 0:
                continue
            src = np.flatnonzero(digits[i, cells] < dims[i])
            dst = pos[cells[src] + strides[i]]
            if len(touched) == g:
                new[dst] += qt[i, j] * layer[src]
            else:
                new[np.ix_(dst, touched)] += qt[i, j, touched] * layer[np.ix_(src, touched)]
        layer = new
    return layer


def _euler4_group(q: np.ndarray, dims: tuple[int, ...], layers) -> np.ndarray:
    """Euler numbers of (G, m, K) 4-fold configurations sharing ``dims``: c_4 integrated against prod_j Q_j.

    mu = prod_j Q_j is built layer by layer as (cells, G) arrays; its last layer holds the intersection numbers
    at exponent n - b (|b| = 4), and c_4 = p_2^2 / 8 - p_4 / 4 contributes its coefficient at J^b:
    (P2_{i1 i2} P2_{i3 i4} + P2_{i1 i3} P2_{i2 i4} + P2_{i1 i4} P2_{i2 i3} - 6 P4_{i1 i2 i3 i4}) / prod_i b_i!,
    with (i1, ..., i4) the rows of b, P2 = diag(n + 1) - q q^T and P4_{abcd} = (n_a + 1) [a=b=c=d] - sum_k q_ak q_bk q_ck q_dk.
    """
    g, m, k = q.shape
    order, starts, pos, digits, strides = layers
    qt = np.ascontiguousarray(q.transpose(1, 2, 0))  # (m, K, G): the group on the last axis
    layer = _last_layer(qt, dims, layers)
    cells = order[starts[k] : starts[k + 1]]
    b = np.asarray(dims, dtype=np.int64)[:, None] - digits[:, cells]  # (m, L), each column sums to 4
    rows = np.repeat(np.tile(np.arange(m), b.shape[1]), b.T.ravel()).reshape(-1, 4)
    fact = np.array([1, 1, 2, 6, 24])[b.T].prod(axis=1)
    n1 = np.asarray(dims, dtype=np.int64) + 1
    p2 = np.einsum("i,ij->ij", n1, np.eye(m, dtype=np.int64))[:, :, None] - np.einsum("akg,ckg->acg", qt, qt)
    i1, i2, i3, i4 = rows.T
    pairs = p2[i1, i2] * p2[i3, i4] + p2[i1, i3] * p2[i2, i4] + p2[i1, i4] * p2[i2, i3]
    p4 = (n1[i1] * (i1 == i4))[:, None] - (qt[i1] * qt[i2] * qt[i3] * qt[i4]).sum(axis=1)
    weight = (24 // fact)[:, None] * (pairs - 6 * p4)
    euler, rem = np.divmod((layer * weight).sum(axis=0), 24)
    assert not rem.any(), "non-integral Euler number: not a Calabi-Yau configuration"
    return euler


def _euler4(x: np.ndarray, m: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Euler numbers of 4-fold configurations (N, R, C), each in its top-left m x K block, zeros elsewhere."""
    x = np.asarray(x)  # kept in its own (compact) dtype; each chunk becomes int64 on its own
    dims = x.sum(axis=2, dtype=np.int64) - 1
    dims[np.arange(x.shape[1])[None, :] >= m[:, None]] = 0
    rank = np.argsort(-dims, axis=1, kind="stable")  # rows by n_i, largest first: fewer, larger groups
    dims = np.take_along_axis(dims, rank, axis=1)
    keys, inverse = np.unique(np.column_stack([dims, k]), axis=0, return_inverse=True)
    out = np.zeros(len(x), dtype=np.int64)
    for key, members in zip(keys, np.split(np.argsort(inverse.ravel(), kind="stable"), np.cumsum(np.bincount(inverse.ravel()))[:-1])):
        kk = int(key[-1])
        group_dims = tuple(int(n) for n in key[:-1] if n > 0)
        layers = _layers(group_dims)
        sizes = np.diff(layers[1])
        step = max(1, CHUNK_CELLS // max(int(sizes.max()), int(sizes[kk]) * kk))  # a layer, or the last one times K
        for start in range(0, len(members), step):
            chunk = members[start : start + step]
            q = np.take_along_axis(x[chunk], rank[chunk, :, None], axis=1)[:, : len(group_dims), :kk]
            out[chunk] = _euler4_group(q.astype(np.int64), group_dims, layers)
    return out


def invariants(matrices: Iterable) -> list[dict]:
    """Exact invariants of each configuration matrix (lists of rows, padded or not).

    Returns one dict per matrix: ``euler`` (int), and for 3-folds ``c2`` (integral of c_2 J_i, one per
    row, as in the lists' ``c2`` field) and ``triple`` (the intersection numbers d_abc as an m x m x m array).
    Matrices are grouped by their row dimensions and number of columns, and each group is computed in one vectorised pass.
    """
    trimmed = [_trim(mat) for mat in matrices]
    groups: dict[tuple[tuple[int, ...], int], list[int]] = {}
    for index, a in enumerate(trimmed):
        groups.setdefault((tuple(int(s) - 1 for s in a.sum(axis=1)), a.shape[1]), []).append(index)
    out: list[dict] = [{} for _ in trimmed]
    four = [i for (dims, k), members in groups.items() if sum(dims) - k == 4 for i in members]
    if four:
        x = np.zeros((len(four), max(trimmed[i].shape[0] for i in four), max(trimmed[i].shape[1] for i in four)), dtype=np.int64)
        for row, i in enumerate(four):
            x[row, : trimmed[i].shape[0], : trimmed[i].shape[1]] = trimmed[i]
        shapes = np.array([trimmed[i].shape for i in four])
        for i, value in zip(four, _euler4(x, shapes[:, 0], shapes[:, 1])):
            out[i] = {"euler": int(value)}
    for (dims, k), members in groups.items():
        if sum(dims) - k == 4:
            continue
        cells = int(np.prod([n + 1 for n in dims]))
        step = max(1, CHUNK_CELLS // cells)
        for start in range(0, len(members), step):
            chunk = members[start : start + step]
            q = np.stack([trimmed[i] for i in chunk])
            values = _group_invariants(q, dims)
            for row, i in enumerate(chunk):
                out[i] = {
                    "euler": int(values["euler"][row]),
                    **({"c2": values["c2"][row].tolist(), "triple": values["triple"][row]} if "c2" in values else {}),
                }
    return out


def euler_numbers(matrices: Iterable, *, shapes: np.ndarray | None = None) -> np.ndarray:
    """The Euler number of each configuration matrix, exactly, as an int64 array.

    With ``shapes`` ((N, 2): rows and columns of each), ``matrices`` is one padded (N, R, C) integer array of
    4-fold configurations, each in its top-left corner: the imported 4-fold lists take this path, with no
    Python object per matrix.
    """
    if shapes is not None:
        shapes = np.asarray(shapes)
        return _euler4(np.asarray(matrices), shapes[:, 0], shapes[:, 1])
    return np.asarray([v["euler"] for v in invariants(matrices)], dtype=np.int64)


# --- line-bundle cohomology and h^{1,1} by the Koszul complex ---
# On A = P^{n_1} x ... x P^{n_m}, Bott's formula and Kuenneth give every h^q(A, O(d)) in closed form:
# h^0(P^n, O(d)) = C(n + d, n) for d >= 0, h^n(P^n, O(d)) = C(-d - 1, n) for d <= -n - 1, nothing else.
# The Koszul resolution 0 -> wedge^K N* -> ... -> N* -> O_A -> O_X -> 0 (N* = sum_j O(-q_j)) twisted by O(L)
# gives a spectral sequence E1^{-k,q} = sum_{|S| = k} H^q(A, O(L - sum_{j in S} q_j)) => H^{q-k}(X, O_X(L)).
# ``line_bundle_cohomology`` adds up each antidiagonal of E1, except that terms of total degree below 0 (above 3)
# must be cancelled by differentials into degree 0 (from degree 3), so there the alternating sum is taken: the
# answer when no other differential acts, an upper bound for h^1 and h^2 in general.
#
# h^{1,1}(X) = h^2(X, T_X) (Serre duality, K_X trivial). The Euler sequence 0 -> O_X^m -> V -> T_A|X -> 0,
# V = sum_i O_X(J_i)^{n_i + 1}, and the normal sequence 0 -> T_X -> T_A|X -> N -> 0 give, when H^2(V) = H^2(N) = 0
# and H^1(V) -> H^1(N) is injective, h^{1,1} = m + h^1(N) - h^1(V): the m ambient classes plus what the normal
# bundle adds. With the E1 counts in place of the true dimensions this is ``h11_koszul``. It is not a theorem
# for every configuration, but it reproduces the listed h^{1,1} of every manifold of the original list
# (tests/test_invariants.py checks all 7,868); the 4,874 favourable ones are those with h^1(N) = h^1(V).


@functools.lru_cache(maxsize=64)
def _bott_table(max_n: int, max_d: int) -> np.ndarray:
    """table[n, d + max_d] = the one nonzero h^q(P^n, O(d)) (0 where there is none), int64; read-only, as it is
    remembered (a list's matrices need a handful of sizes)."""
    from math import comb

    table = np.zeros((max_n + 1, 2 * max_d + 1), dtype=np.int64)
    for n in range(max_n + 1):
        for d in range(-max_d, max_d + 1):
            table[n, d + max_d] = comb(n + d, n) if d >= 0 else (comb(-d - 1, n) if d <= -n - 1 else 0)
    table.flags.writeable = False
    return table


def _has_cohomology(degree: np.ndarray, n: int) -> np.ndarray:
    """Where O(degree) on P^n has a nonzero cohomology group (Bott): degree >= 0 or degree <= -n - 1."""
    return (degree >= 0) | (degree <= -n - 1)


def line_bundle_cohomology(matrix, bundles) -> np.ndarray:
    """E1 counts of h^p(X, O_X(L)), p = 0..3, for each multidegree L (one per row of ``bundles``, (B, m)).

    ``matrix`` is a 3-fold configuration matrix (padded or not; ``bundles`` has one entry per present row).
    Returns (B, 4) int64.
    """
    q = _trim(matrix)
    m, k = q.shape
    row_sums = q.sum(axis=1)
    n = row_sums - 1
    bundles = np.atleast_2d(np.asarray(bundles, dtype=np.int64))
    # The degrees of wedge^k N* as distinct sums of k columns, with how many subsets give each: (S, m), (S, K + 1).
    # A sum is kept as one integer in mixed radix (row i's digit runs 0..sum of row i), so merging is a 1-d unique.
    radix = np.cumprod(np.concatenate([[1], row_sums[:-1] + 1]))
    codes, counts = np.zeros(1, dtype=np.int64), np.eye(1, k + 1, dtype=np.int64)
    for j, column in enumerate(q.T):
        codes = np.concatenate([codes, codes + column @ radix])
        counts = np.concatenate([counts, np.roll(counts, 1, axis=1)])
        if len(codes) < MERGE_SUBSETS and j < k - 1:  # few yet: merged later, in one pass (the same counts)
            continue
        codes, inverse = np.unique(codes, return_inverse=True)
        merged = np.zeros((len(codes), k + 1), dtype=np.int64)
        np.add.at(merged, inverse, counts)
        counts = merged
    sums = codes[:, None] // radix[None, :] % (row_sums + 1)[None, :]
    max_d = int(np.abs(bundles).max(initial=0) + row_sums.max() + 1)
    table = _bott_table(int(n.max()), max_d)
    # Only the (bundle, state) pairs whose degree d_i on every row has cohomology (d_i >= 0 or d_i <= -n_i - 1)
    # contribute; few do, so they are found row by row, keeping the survivors, before any count is looked up.
    bundle, state = np.nonzero(_has_cohomology(bundles[:, None, 0] - sums[None, :, 0], n[0]))
    for i in range(1, m):
        keep = _has_cohomology(bundles[bundle, i] - sums[state, i], n[i])
        bundle, state = bundle[keep], state[keep]
    degree = bundles[bundle] - sums[state]  # (P, m), P the contributing pairs
    dims = np.prod(table[n, degree + max_d], axis=1)  # the one nonzero h^q(A, O(degree))
    degree_q = (n * (degree < 0)).sum(axis=1)  # its q
    # E1 by total degree p = q - size, from -K to dim A = 3 + K: H^q(A, wedge^size N*(L)) lands in H^{q - size}.
    e1 = np.zeros((len(bundles), 2 * k + 4), dtype=np.int64)
    p = degree_q[:, None] - np.arange(k + 1)[None, :]
    np.add.at(e1, (np.broadcast_to(bundle[:, None], p.shape), p + k), dims[:, None] * counts[state])
    # Nothing survives below degree 0 or above 3: those terms cancel against degree 0 (and 3) in alternation.
    signs = (-1) ** np.arange(k + 1)
    out = e1[:, k : k + 4].copy()
    out[:, 0] = e1[:, k::-1] @ signs
    out[:, 3] = e1[:, k + 3 :] @ signs
    return out


def koszul_h1(matrix) -> tuple[np.ndarray, np.ndarray]:
    """E1 counts of h^1(X, O_X(q_j)) for each equation j (K,) and (n_i + 1) h^1(X, O_X(J_i)) for each row i (m,)."""
    q = _trim(matrix)
    m, k = q.shape
    h1 = line_bundle_cohomology(q, np.vstack([q.T, np.eye(m, dtype=np.int64)]))[:, 1]  # one pass over the subsets
    return h1[:k], h1[k:] * q.sum(axis=1)


def h11_koszul(matrix) -> int:
    """h^{1,1} of a 3-fold configuration as m + h^1(N) - h^1(V), from E1 counts (see above)."""
    normal, ambient = koszul_h1(matrix)
    return int(len(ambient) + normal.sum() - ambient.sum())
