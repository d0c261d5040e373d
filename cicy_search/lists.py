"""A list of configuration matrices in memory (``CicyData``) and the padding that makes its array (``pad``).

Each reader builds one: ``data`` for the shipped 3-fold lists, ``cicy4`` for an imported 4-fold list, ``userdata``
for a user's data file. They live here, below the three, so that ``data``, which chooses the reader for a
``data.dataset`` value, imports the readers and none of them imports ``data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from .errors import CicyError

TARGETS = ("h11", "h21")


def pad(matrices: Iterable, shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad matrices (lists of rows) to ``shape``; returns float32 of shape (N, *shape)."""
    matrices = list(matrices)
    out = np.zeros((len(matrices), *shape), dtype=np.float32)
    for k, m in enumerate(matrices):
        a = np.asarray(m, dtype=np.float32)
        out[k, : a.shape[0], : a.shape[1]] = a
    return out


@dataclass(frozen=True)
class CicyData:
    """One list of CICY manifolds as arrays: ``x`` (N, rows, cols), ``frame`` one row a manifold.

    ``hash`` is the sha256 of what the list was read from (the shipped file, the text a 4-fold list was imported
    from, the data file), logged with every run as the data set's hash; a subset keeps it.
    """

    name: str
    frame: pd.DataFrame
    x: np.ndarray
    hash: str
    targets: tuple[str, ...] = ()  # the integer columns a data file holds (the shipped lists: TARGETS, h31, h22)

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape[1], self.x.shape[2]

    def y(self, target: str) -> np.ndarray:
        known = self.targets or (*TARGETS, *(t for t in ("h31", "h22") if t in self.frame))  # h31, h22: 4-fold lists
        if target not in known:
            raise CicyError(f"unknown target {target!r} for the {self.name} list: choose from {', '.join(known)}")
        return self.frame[target].to_numpy(dtype=np.int64)

    def subset(self, index: np.ndarray) -> "CicyData":
        return CicyData(self.name, self.frame.iloc[index].reset_index(drop=True), self.x[index], self.hash, self.targets)
