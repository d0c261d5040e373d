"""The h11 accuracy ceiling of any message-passing network on the original list: colour refinement (1-WL) classes.

A network that passes messages between rows and columns (the bipartite family) gives the same output to two
matrices that colour refinement on their row/column graph (edges labelled by the entries) cannot tell apart. This
groups the list's matrices by their refined colour multisets and counts the manifolds a majority vote per group
would still get wrong: the best such a network can do, even on its own training data. It prints that ceiling after
1 to 6 rounds too: a network of a given depth sees only so many rounds (a bipartite layer updates rows from columns,
then columns from the new rows).

    PYTHONPATH=$PWD .venv/bin/python studies/runs/wl_ceiling.py
"""

import collections

import numpy as np

from cicy_search import data


def colours(matrix: np.ndarray, rounds: int) -> tuple:
    """The row and column colour multisets after ``rounds`` of refinement (each colour carries its history)."""
    m = matrix[matrix.any(axis=1)][:, matrix.any(axis=0)]
    n_rows, n_cols = m.shape
    rows, cols = [0] * n_rows, [0] * n_cols
    for _ in range(rounds):
        rows, cols = (
            [hash((rows[i], tuple(sorted((int(m[i, j]), cols[j]) for j in range(n_cols) if m[i, j])))) for i in range(n_rows)],
            [hash((cols[j], tuple(sorted((int(m[i, j]), rows[i]) for i in range(n_rows) if m[i, j])))) for j in range(n_cols)],
        )
    return tuple(sorted(rows)), tuple(sorted(cols))


def ceiling(cicy, rounds: int) -> str:
    groups = collections.defaultdict(list)
    for matrix, h11 in zip(cicy.x, cicy.y("h11")):
        groups[colours(matrix, rounds)].append(int(h11))
    mixed = [g for g in groups.values() if len(set(g)) > 1]
    right = sum(collections.Counter(g).most_common(1)[0][1] for g in groups.values())
    return (
        f"{len(cicy.x)} matrices, {len(groups)} colour classes; {len(mixed)} classes mix h11 values "
        f"({sum(map(len, mixed))} matrices); ceiling {right / len(cicy.x):.4%} ({len(cicy.x) - right} wrong)"
    )


if __name__ == "__main__":
    cicy = data.load("original")
    for rounds in range(1, 7):
        print(f"after {rounds} round{'s' * (rounds > 1)}: {ceiling(cicy, rounds)}")
    # Two matrices refined together (one graph of both) are split, if ever, within as many rounds as the two have
    # rows and columns: a fixed count that large compares every pair, unlike stopping when each matrix is stable.
    print(f"refined to the end: {ceiling(cicy, 2 * sum(cicy.shape))}")
