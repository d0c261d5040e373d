"""Hodge numbers for configuration matrices users bring: read them, validate each, predict the valid ones.

Input (a file, or ``-`` for standard input):

* JSON: a list of matrices ``[[[5]], [[3], [3]]]``, a single matrix ``[[5]]``, or a list of records
  ``[{"id": "quintic", "matrix": [[5]]}]`` (other fields are carried through to the output);
  a matrix may also be given as a JSON string ``"[[5]]"``.
* CSV: a header row with a ``matrix`` column holding each matrix as JSON (quoted); other columns
  are carried through.

Each matrix is validated on its own (``data.check_matrix`` plus finite numbers): an invalid entry
gets an error naming its index and reason, the valid ones are still predicted, whatever the bad
ones hold (numbers past 10**18, lists nested hundreds deep, other bytes than UTF-8 are refused
with one line, never with a crash that loses the batch). Each valid entry also gets its exact
Euler number (``invariants.euler_numbers``). A matrix may be
written with or without the leading column of projective dimensions (``[n_i | q_i1 ... q_iK]``);
for a 3-fold the two readings are never both valid (see ``parse_matrix``), so no input is ambiguous.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import bundle
from ..config import decode, read_text
from ..data import check_matrix, pad
from ..errors import CicyError, one_line
from ..search.storage import redact

MODELS_SCHEME = "models:/"
#: Deepest nesting an entry may have: a record holding a matrix is 3 levels; more is not a matrix, and
#: Python's JSON reader (and ``repr``) would fail on a few thousand levels, losing the whole batch.
MAX_NESTING = 20
#: Largest entry written out in an error message; entries themselves may be anything.
_SHORT = 40
_MAX_ENTRY = 10**18  # far past any degree; 10**400 would overflow the float checks


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


class _Unreadable:
    """An entry the reader could not take in (nested too deep, a number too long): its reason."""

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"<{self.reason}>"


def _short(v) -> str:
    """A short description of any value, safe for values nested thousands deep."""
    if isinstance(v, (list, tuple, dict, np.ndarray)):
        return f"a {'mapping' if isinstance(v, dict) else 'list'}"
    text = repr(v)
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def _parse_int(text: str):
    # Python refuses to convert integers of more than 4,300 digits (and json.loads with it): keep the batch.
    return int(text) if len(text) <= 30 else _Unreadable(f"a number of {len(text.lstrip('-'))} digits")


_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')


def _deep_elements(text: str, limit: int = MAX_NESTING) -> tuple[int, list[tuple[int, int, int]]]:
    """Scan JSON text without recursion: its nesting depth and the (index, start, end) of each element
    of a top-level list nested deeper than ``limit``."""
    depth = max_depth = index = 0
    start = inner = 0
    deep = []
    for m in _TOKENS.finditer(text):
        c = m.group()[0]
        if c == '"':
            continue
        if c in "[{":
            depth += 1
            max_depth = max(max_depth, depth)
            if depth == 2:
                start, inner = m.start(), 0
            inner = max(inner, depth - 1)
        elif c in "]}":
            if depth == 2 and inner > limit:
                deep.append((index, start, m.end()))
            depth -= 1
        elif depth == 1:
            index += 1
    return max_depth, deep


def _loads(text: str):
    """``json.loads`` that survives hostile input: ``(value, {top-level index: reason})``.

    Elements of a top-level list nested deeper than ``MAX_NESTING`` are blanked (keeping every line
    and column, so error positions stay true) and reported by index; integers too long to convert
    become ``_Unreadable``. Raises ``ValueError`` (``json.JSONDecodeError``) for text that is not JSON.
    """
    depth, deep = _deep_elements(text)
    too_deep = f"nested deeper than {MAX_NESTING} levels"
    if depth > MAX_NESTING + 1 and not deep:
        raise ValueError(too_deep)
    for _, start, end in reversed(deep):
        blank = "".join(ch if ch in "\r\n" else " " for ch in text[start + 1 : end - 1])
        text = text[:start] + "[" + blank + "]" + text[end:]
    try:
        value = json.loads(text, parse_int=_parse_int)
    except RecursionError:
        raise ValueError(too_deep) from None
    return value, {i: too_deep for i, _, _ in deep}


def _first_column_is_dimensions(rows: list[list]) -> bool:
    """Every row reads ``[n_i | q_i...]`` with n_i = (sum of the degrees) - 1, as the CY condition demands."""
    return len(rows[0]) >= 2 and all(r[0] == sum(r[1:]) - 1 for r in rows)


def parse_matrix(value: Any, shape: tuple[int, int] = (12, 15)) -> tuple[list[list[int]] | None, str | None]:
    """``(q, None)`` for a valid configuration matrix, ``(None, reason)`` otherwise.

    ``value`` is a list of rows or its JSON text. With the leading column of projective dimensions
    the matrix M = [n | q] is accepted when q is valid and n_i = sum_j q_ij - 1. Both readings can
    never hold at once: with K the number of columns of M and n its first column, read as q M needs
    2 sum_i n_i - K = 3, read as [n | q] it needs sum_i n_i - (K - 1) = 3; together K = -1.
    """
    if isinstance(value, _Unreadable):
        return None, value.reason
    if isinstance(value, str):
        try:
            value, deep = _loads(value)
        except json.JSONDecodeError as e:
            return None, f"not JSON: {e.msg} at character {e.pos}"
        except ValueError as e:
            return None, str(e)
        if deep:
            return None, next(iter(deep.values()))
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        rows = [r.tolist() if isinstance(r, np.ndarray) else list(r) if isinstance(r, tuple) else r for r in value]
        for i, r in enumerate(rows):
            if isinstance(r, (list, tuple)):
                for j, v in enumerate(r):
                    if isinstance(v, _Unreadable):
                        return None, f"entry ({i},{j}) is {v.reason}, not a degree"
                    if _is_number(v) and not math.isfinite(v):
                        return None, f"entry ({i},{j}) = {v} is not an integer"
                    if _is_number(v) and abs(v) > _MAX_ENTRY:
                        return None, f"entry ({i},{j}) = {_short(v)} is far too large to be a degree"
                    if not _is_number(v):
                        return None, f"entry ({i},{j}) = {_short(v)} is not an integer"
        value = rows
    elif not (value is None or isinstance(value, (int, float, bool))):
        return None, f"{_short(value)} is not a list of rows"
    reason = check_matrix(value, shape)
    if reason is None:
        return [[int(v) for v in r] for r in value], None
    if _is_integer_grid(value) and _first_column_is_dimensions(value):
        stripped = [list(r[1:]) for r in value]
        inner = check_matrix(stripped, shape)
        if inner is None:
            return [[int(v) for v in r] for r in stripped], None
        return None, f"{reason}; read with its first column as the projective dimensions: {inner}"
    return None, reason


def _is_integer_grid(rows) -> bool:
    """A non-empty rectangular list of lists of non-negative integers (what the two readings share)."""
    return (
        isinstance(rows, list)
        and bool(rows)
        and all(isinstance(r, list) and r and len(r) == len(rows[0]) for r in rows)
        and all(_is_number(v) and v >= 0 and float(v).is_integer() for r in rows for v in r)
    )


# --- reading input ---


def _entries_from_json(obj, unreadable: dict[int, str] | None = None) -> list[dict]:
    """Records from parsed JSON; ``unreadable`` maps top-level indices to why they could not be read."""
    unreadable = unreadable or {}
    if not isinstance(obj, list):
        raise CicyError(f"expected a JSON list of matrices, got a JSON {type(obj).__name__}")
    if obj and all(isinstance(r, list) and not any(isinstance(v, (list, dict)) for v in r) for r in obj):
        if unreadable:  # a single matrix with a row nested too deep
            return [{"matrix": _Unreadable(next(iter(unreadable.values())))}]
        return [{"matrix": obj}]  # one matrix: a list of rows of numbers
    return [
        {"matrix": _Unreadable(unreadable[i])} if i in unreadable else dict(e) if isinstance(e, dict) else {"matrix": e}
        for i, e in enumerate(obj)
    ]


def _entries_from_csv(text: str) -> list[dict]:
    # A matrix cell is as long as it is: the default 128 kB field limit would fail the whole file.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "matrix" not in reader.fieldnames:
        got = ", ".join(reader.fieldnames or []) or "none"
        raise CicyError(f"CSV input needs a header row with a 'matrix' column (columns found: {got})")
    return [dict(row) for row in reader]


def read_entries(source: str | Path) -> list[dict]:
    """Records ``{"matrix": ..., other fields}`` from a JSON or CSV file, or standard input for ``-``.

    The format follows the file's extension (``.json``, ``.csv``); otherwise text starting with ``[``
    or ``{`` is JSON and anything else CSV.
    """
    if str(source) == "-":
        name, suffix = "standard input", ""
        stream = getattr(sys.stdin, "buffer", None)
        text = decode(stream.read(), name) if stream is not None else sys.stdin.read().removeprefix("\ufeff")
    else:
        path = Path(source)
        text, suffix, name = read_text(path), path.suffix.lower(), str(path)
    if not text.strip():
        raise CicyError(f"{name}: empty input, expected a JSON list or a CSV file of matrices")
    is_json = suffix == ".json" or (suffix != ".csv" and text.lstrip()[0] in "[{")
    if is_json:
        try:
            obj, unreadable = _loads(text)
        except json.JSONDecodeError as e:
            raise CicyError(f"{name}: not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        except ValueError as e:
            raise CicyError(f"{name}: not readable JSON: {e}") from None
        try:
            entries = _entries_from_json(obj, unreadable)
        except CicyError as e:
            raise CicyError(f"{name}: {e}") from None
    else:
        try:
            entries = _entries_from_csv(text)
        except (CicyError, csv.Error) as e:
            raise CicyError(f"{name}: {e}") from None
    if not entries:
        raise CicyError(f"{name}: no matrices")
    return entries


# --- loading a model and predicting ---


def load_model(ref: str | Path, *, tracking_uri: str | None = None) -> bundle.Loaded:
    """A bundle folder (an export folder or an MLflow model folder) or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``."""
    ref = str(ref)
    if not ref.startswith(MODELS_SCHEME):
        return bundle.load(bundle.locate(ref))
    from mlflow.exceptions import MlflowException

    from .. import tracking

    client = tracking.client(tracking_uri)
    name, sep, alias = ref[len(MODELS_SCHEME) :].partition("@")
    try:
        if sep:
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = name.partition("/")
            if not number.isdigit():
                raise CicyError(f"{ref}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
            version = client.get_model_version(name, number)
        import mlflow

        with tempfile.TemporaryDirectory(prefix="cicy-model-") as folder:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=version.source, dst_path=folder, tracking_uri=client.tracking_uri
            )
            return bundle.load(bundle.locate(local))  # the model is read into memory; the download can go
    except MlflowException as e:
        first = one_line(e)
        raise CicyError(f"{ref}: {first} (registry {redact(client.tracking_uri)})") from None


def predict_frame(model: bundle.Loaded, values: Sequence, *, euler: bool = False) -> pd.DataFrame:
    """One row per input matrix: the predicted Hodge numbers (None when invalid) and ``error`` (None when
    valid); with ``euler``, also the exact Euler number of each valid matrix."""
    parsed = [parse_matrix(v, model.shape) for v in values]
    valid = [i for i, (q, _) in enumerate(parsed) if q is not None]
    names = model.outputs
    columns: dict[str, list] = {n: [None] * len(parsed) for n in names}
    if valid:
        predicted = model.predict(pad([parsed[i][0] for i in valid], model.shape))
        for n in names:
            for i, v in zip(valid, predicted[n]):
                columns[n][i] = int(v)
    if euler:
        from ..invariants import euler_numbers

        columns["euler"] = [None] * len(parsed)
        if valid:
            for i, v in zip(valid, euler_numbers([parsed[i][0] for i in valid])):
                columns["euler"][i] = int(v)
    columns["error"] = [reason for _, reason in parsed]
    return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()})


@dataclass
class Predictions:
    records: list[dict]  # {"index", carried-through fields, targets..., "error"} per entry

    @property
    def errors(self) -> list[str]:
        return [f"entry {r['index']}: {r['error']}" for r in self.records if r["error"]]


def predict_entries(model: bundle.Loaded, entries: list[dict]) -> Predictions:
    values = [e.get("matrix") if "matrix" in e else None for e in entries]
    frame = predict_frame(model, values, euler=True)
    records = []
    for i, (entry, row) in enumerate(zip(entries, frame.to_dict(orient="records"))):
        if "matrix" not in entry:
            row = {**row, "error": "no 'matrix' field"}
        extra = {k: v for k, v in entry.items() if k not in ("matrix", "index", "error", *frame.columns)}
        records.append({"index": i, **extra, **row})
    return Predictions(records)


def predict_file(ref: str | Path, source: str | Path, *, tracking_uri: str | None = None) -> Predictions:
    """Read matrices from ``source`` (file or ``-``) and predict them with the model at ``ref``."""
    entries = read_entries(source)
    return predict_entries(load_model(ref, tracking_uri=tracking_uri), entries)


def output_format(out: str | Path | None = None, fmt: str | None = None) -> str:
    """The output format (``fmt``, else ``out``'s extension, else csv), checked together with ``out``
    before anything is read or predicted, so no prediction is lost to a folder that does not exist."""
    if out is not None:
        path = Path(out)
        folder = path.parent
        if path.is_dir():
            raise CicyError(f"--out {path}: is a folder, expected a .csv or .json file")
        if not folder.is_dir():
            raise CicyError(f"--out {path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise CicyError(f"--out {path}: not writable")
    fmt = fmt or (Path(out).suffix.lstrip(".").lower() if out else "csv")
    if fmt not in ("csv", "json"):
        raise CicyError(f"output format {fmt[:20]!r}: choose csv or json (--format, or an --out file ending .csv or .json)")
    return fmt


def write(predictions: Predictions, out: str | Path | None = None, *, fmt: str | None = None) -> str:
    """Predictions as CSV or JSON text (written to ``out`` when given; format from its extension by default).

    The file is written whole or not at all (a temporary file in the same folder, then renamed).
    """
    fmt = output_format(out, fmt)
    records = predictions.records
    if fmt == "json":
        text = json.dumps(records, indent=1) + "\n"
    else:
        buffer = io.StringIO()
        fields = list(dict.fromkeys(k for r in records for k in r))
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in records)
        text = buffer.getvalue()
    if out:
        path = Path(out)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise CicyError(f"--out {path}: {e.strerror or e}") from None
    return text
