"""Data files of the user's own: configuration matrices with any integer targets, read and validated once.

``data.dataset: PATH`` names one of three layouts, one configuration matrix per row (file order is row order,
rows numbered from 1):

* ``.csv``: a header row; a ``matrix`` column holding each matrix as JSON text (``"[[3], [3]]"``, quoted), an
  optional ``id`` column, and every other column a target holding integers::

      id,matrix,h11,my_invariant
      quintic,"[[5]]",1,3

* ``.json``: a list of records with the same keys, ``matrix`` a list of rows:
  ``[{"id": "quintic", "matrix": [[5]], "h11": 1, "my_invariant": 3}]``.
* ``.npz``: an array ``matrix`` (N, rows, cols) of non-negative integers, zero-padded; an optional ``id`` (N,);
  every other array (N,) of integers is a target.

A matrix is q without the column of projective dimensions: rows are ambient P^n factors, columns equations.
Each must be a non-empty rectangular grid of non-negative integers (at most ``MAX_SIZE`` each way) whose
rows sum to n_i + 1 with n_i >= 1 (the Calabi-Yau condition) and without a zero column; sum n_i - columns is the
dimension, the same for every row of the file. Target names are identifiers (they become metric names:
``val_my_invariant_accuracy``); ids, when given, are unique. The first problem is a ``CicyError`` naming the file,
the row and the reason. Matrices are zero-padded to the largest rows and columns in the file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CicyError
from .lists import CicyData, pad
from .yamlfiles import read_text

MAX_SIZE = 64  # rows and columns of one matrix: far past any CICY list
MAX_ENTRY = 127  # a degree beyond this is a typo, and matrices are kept as small integers
RESERVED = {"matrix", "id", "rows", "cols"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class DataFile:
    """A validated data file: its matrices and targets as ``CicyData``, its dimension, padding and sha256."""

    data: CicyData
    dimension: int
    sha256: str

    @property
    def padding(self) -> tuple[int, int]:
        return self.data.shape

    @property
    def targets(self) -> tuple[str, ...]:
        return self.data.targets


def check_configuration(matrix) -> tuple[str | None, int]:
    """``(None, dimension)`` for a configuration matrix (a list of rows), or ``(reason, 0)``."""
    if not isinstance(matrix, list) or not matrix:
        return "the matrix is empty or not a list of rows", 0
    if not all(isinstance(r, list) for r in matrix):
        return "the matrix rows must be lists of integers", 0
    width = len(matrix[0])
    if width == 0:
        return "row 0 of the matrix is empty", 0
    for i, r in enumerate(matrix):
        if len(r) != width:
            return f"ragged matrix: row {i} has {len(r)} entries, row 0 has {width}", 0
        for j, v in enumerate(r):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or float(v) != int(v):
                return f"matrix entry ({i},{j}) = {_short(v)} is not an integer", 0
            if v < 0:
                return f"matrix entry ({i},{j}) = {v} is negative", 0
            if v > MAX_ENTRY:
                return f"matrix entry ({i},{j}) = {v} is larger than {MAX_ENTRY}", 0
    if len(matrix) > MAX_SIZE or width > MAX_SIZE:
        return f"matrix size {len(matrix)}x{width} exceeds {MAX_SIZE}x{MAX_SIZE}", 0
    dims = [int(sum(r)) - 1 for r in matrix]
    for i, n in enumerate(dims):
        if n < 1:
            return f"Calabi-Yau condition fails in row {i}: degrees sum to {n + 1}, so n_{i} = {n} < 1", 0
    for j in range(width):
        if not any(r[j] for r in matrix):
            return f"matrix column {j} is zero (an equation of degree zero)", 0
    dimension = sum(dims) - width
    if dimension < 1:
        return f"dimension sum(n_i) - columns = {sum(dims)} - {width} = {dimension} is not positive", 0
    return None, dimension


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _integer(v):
    """An integer from a JSON number or a CSV cell, or None."""
    if isinstance(v, str):
        v = v.strip()
        return int(v) if re.fullmatch(r"[-+]?\d{1,18}", v) else None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    if not math.isfinite(v) or float(v) != int(v) or abs(v) > 2**62:
        return None
    return int(v)


def _records(path: Path) -> tuple[list[dict], list[str]]:
    """Rows as ``{"matrix": list of rows or JSON text, "id": ..., target: value}`` and the target names."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _npz_records(path)
    text = read_text(path)
    if suffix == ".csv":
        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
        try:
            reader = csv.DictReader(io.StringIO(text))
            fields = list(reader.fieldnames or [])
            rows = list(reader)
        except csv.Error as e:
            raise CicyError(f"{path}: not a readable CSV file: {e}") from None
        if "matrix" not in fields:
            raise CicyError(f"{path}: a data file needs a header row with a 'matrix' column (columns found: {', '.join(fields) or 'none'})")
        for k, row in enumerate(rows, 1):
            if None in row or any(v is None for v in row.values()):
                more = "more" if None in row else "fewer"
                raise CicyError(f"{path}: row {k}: {more} cells than the header's {len(fields)} columns")
        return rows, [f for f in fields if f not in ("matrix", "id")]
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CicyError(f"{path}: not JSON: {str(e).splitlines()[0][:100]}") from None
    if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
        raise CicyError(f'{path}: expected a JSON list of records like {{"matrix": [[5]], "h11": 1}}')
    fields = list(dict.fromkeys(k for r in obj[:1] for k in r))
    for k, r in enumerate(obj, 1):
        if set(r) != set(fields):
            odd = sorted(set(r) ^ set(fields))[0]
            raise CicyError(f"{path}: row {k}: has {'no' if odd in fields else 'an extra'} field {odd!r} (row 1 has {', '.join(fields)})")
    if obj and "matrix" not in fields:
        raise CicyError(f"{path}: every record needs a 'matrix' field (fields found: {', '.join(fields)})")
    return obj, [f for f in fields if f not in ("matrix", "id")]


def _npz_records(path: Path) -> tuple[list[dict], list[str]]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise CicyError(f"{path}: not a readable .npz file ({str(e).splitlines()[0][:100]})") from None
    x = arrays.pop("matrix", None)
    if x is None or x.ndim != 3 or x.dtype.kind not in "iu":
        raise CicyError(f"{path}: a .npz data file needs an integer array 'matrix' of shape (N, rows, cols)")
    for name, a in arrays.items():
        if a.shape != (len(x),):
            raise CicyError(f"{path}: array {name!r} has shape {a.shape}, expected ({len(x)},): one value per matrix")
        if name != "id" and a.dtype.kind not in "iu":
            raise CicyError(f"{path}: array {name!r} holds {a.dtype} values; targets must be integers")
    records = []
    for k, m in enumerate(x):
        rows, cols = m.sum(axis=1) != 0, m.sum(axis=0) != 0  # zero rows and columns are padding
        records.append({"matrix": m[rows][:, cols].tolist(), **{n: a[k].item() for n, a in arrays.items()}})
    return records, [n for n in arrays if n != "id"]


def _parse(path: Path) -> DataFile:
    raw = path.read_bytes()
    records, targets = _records(path)
    if not records:
        raise CicyError(f"{path}: no rows")
    for name in targets:
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in RESERVED:
            raise CicyError(f"{path}: column {_short(name)}: a target name must be an identifier (letters, digits, _) other than {', '.join(sorted(RESERVED))}")
    matrices, values, ids, dimension, first_id = [], {t: [] for t in targets}, [], None, {}
    for k, r in enumerate(records, 1):
        m = r["matrix"]
        if isinstance(m, str):
            try:
                m = json.loads(m)
            except (ValueError, RecursionError):
                raise CicyError(f"{path}: row {k}: the matrix {_short(m)} is not JSON like [[3], [3]]") from None
        reason, dim = check_configuration(m)
        if reason:
            raise CicyError(f"{path}: row {k}: {reason}")
        if dimension is None:
            dimension = dim
        elif dim != dimension:
            raise CicyError(f"{path}: row {k}: a {dim}-fold, but row 1 is a {dimension}-fold (one dimension a file)")
        for t in targets:
            v = _integer(r[t])
            if v is None:
                raise CicyError(f"{path}: row {k}: {t} = {_short(r[t])} is not an integer")
            values[t].append(v)
        if "id" in r:
            key = str(r["id"])
            if key in first_id:
                raise CicyError(f"{path}: row {k}: id {_short(r['id'])} is repeated (first at row {first_id[key]})")
            first_id[key] = k
            ids.append(r["id"])
        matrices.append(m)
    shape = (max(len(m) for m in matrices), max(len(m[0]) for m in matrices))
    x = pad(matrices, shape)
    x.setflags(write=False)
    frame = pd.DataFrame(
        {
            "id": ids or list(range(1, len(records) + 1)),
            "rows": [len(m) for m in matrices],
            "cols": [len(m[0]) for m in matrices],
            **{t: np.asarray(v, dtype=np.int64) for t, v in values.items()},
        }
    )
    sha256 = hashlib.sha256(raw).hexdigest()
    return DataFile(CicyData(str(path), frame, x, sha256, tuple(targets)), int(dimension), sha256)


_read: dict[tuple, DataFile] = {}


def read(path: str | Path) -> DataFile:
    """The validated data file at ``path`` (see the module docstring), read once per version of the file."""
    p = Path(path)
    if p.is_dir():
        raise CicyError(f"{p}: is a folder, expected a data file")
    if not p.is_file():
        raise CicyError(f"{p}: no such file")
    stat = p.stat()
    key = (str(path), str(p.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _read:
        found = _parse(p)
        _read.clear()  # one file's matrices in memory at a time, as for the 4-fold list
        _read[key] = found
    return _read[key]


def summary(f: DataFile) -> dict:
    """Counts and ranges for ``cicy-search data info``."""
    frame = f.data.frame
    return {
        "dataset": f.data.name,
        "rows of the file": len(frame),
        "dimension": f.dimension,
        **{t: (int(frame[t].min()), int(frame[t].max())) for t in f.targets},
        "rows": (int(frame["rows"].min()), int(frame["rows"].max())),
        "cols": (int(frame["cols"].min()), int(frame["cols"].max())),
        "padding": f.padding,
        "sha256": f.sha256,
    }
