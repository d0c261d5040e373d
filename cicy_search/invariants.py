"""Exact topological invariants of complete intersections, computed from the configuration matrix.

A CICY X of dimension d is cut out of A = P^{n_1} x ... x P^{n_m} by K equations; column j of the
configuration matrix q holds the multidegree of equation j, so its divisor class is Q_j = sum_i q_ij J_i
(J_i the hyperplane class of P^{n_i}). Integrating over X is integrating over A against the top form
mu = prod_j Q_j, and integrating over A reads off the coefficient of prod_i J_i^{n_i}.

From the normal-bundle sequence the total Chern class is c(TX) = prod_i (1 + J_i)^{n_i + 1} / prod_j (1 + Q_j).
Its power sums p_k = sum_i (n_i + 1) J_i^k - sum_j Q_j^k give the Chern classes through Newton's identities;
with c_1 = p_1 = 0 (the Calabi-Yau condition) they are c_2 = -p_2 / 2, c_3 = p_3 / 3, c_4 = p_2^2 / 8 - p_4 / 4.

Everything here is exact integer arithmetic, vectorised over every manifold that shares the row dimensions
(n_1, ..., n_m): the coefficients of mu are built column by column as an array over exponents (a_1, ..., a_m)
with a_i <= n_i, and the intersection numbers are read off it.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

#: Above this many array cells (manifolds x exponent states) a group is cut into chunks.
CHUNK_CELLS = 4_000_000


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
    shape = tuple(n + 1 for n in dims)
    mu = np.zeros((g, *shape), dtype=np.int64)
    mu[(slice(None), *([0] * m))] = 1
    for j in range(k):  # mu <- mu * Q_j, truncated at a_i <= n_i (J_i^{n_i + 1} = 0 on P^{n_i})
        new = np.zeros_like(mu)
        for i in range(m):
            if dims[i] == 0:
                continue
            coeff = q[:, i, j].reshape((g,) + (1,) * m)
            dst = [slice(None)] * (m + 1)
            src = [slice(None)] * (m + 1)
            dst[i + 1], src[i + 1] = slice(1, None), slice(0, -1)
            new[tuple(dst)] += coeff * mu[tuple(src)]
        mu = new
    # Entry [a, b, c] is the coefficient of mu at n - e_a - e_b - e_c: gather them all at once.
    idx = np.indices((m,) * degree).reshape(degree, -1)
    exps = np.asarray(dims)[:, None] - (np.arange(m)[:, None, None] == idx[None]).sum(axis=1)
    valid = (exps >= 0).all(axis=0)
    gathered = mu[(slice(None), *np.clip(exps, 0, None))] * valid
    return gathered.reshape((g,) + (m,) * degree)


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
    if d == 4:
        p4 = np.einsum("i,gi->g", n1, diag) - np.einsum("gak,gbk,gck,gdk,gabcd->g", q, q, q, q, t, optimize=True)
        p2p2 = np.einsum("gab,gcd,gabcd->g", p2, p2, t, optimize=True)
        euler, rem = np.divmod(p2p2 - 2 * p4, 8)
        assert not rem.any(), "non-integral Euler number: not a Calabi-Yau configuration"
        return {"euler": euler}
    raise ValueError(f"Chern numbers are implemented for dimensions 3 and 4, not {d}")


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
    for (dims, _), members in groups.items():
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


def euler_numbers(matrices: Iterable) -> np.ndarray:
    """The Euler number of each configuration matrix, exactly, as an int64 array."""
    return np.asarray([v["euler"] for v in invariants(matrices)], dtype=np.int64)
