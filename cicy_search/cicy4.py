"""The CICY 4-fold list: a streaming reader of the published text file, validation, and the columnar file.

The list (Gray, Haupt, Lukas: 921,497 configuration matrices up to 16 x 20) is published as one text file,
``cicy4list.txt``: a Mathematica list ``{rec, rec, ...}`` of records
``{ID, rows, cols, {{configuration matrix}}, euler, direct-product flag, h11, h21, h31, h22, flag}``, flags being
True, False or Null. It is too large to ship: ``import_list`` (``cicy-search data import-cicy4``) reads it once,
validates every record and writes a compressed ``.npz`` that ``load`` reads in seconds (docs/performance.md).

The ``.npz`` file (format ``cicy4-npz/1``, one array per column, N records in file order):
``x`` int8 (N, 16, 20) the zero-padded configuration matrices; ``id`` int32; ``rows``, ``cols`` int8;
``euler`` int32; ``product`` bool (block-diagonal: a direct product); ``h11``, ``h21``, ``h31``, ``h22`` int16
(-1 where a product record gives Null); ``flag`` int8 (the record's last field: 1 True, 0 False, -1 Null);
``format``, ``source`` (the text file's name) and ``sha256`` (its hash) as strings.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from .errors import CicyError
from .lists import CicyData

PADDING = (16, 20)
TARGETS = ("h11", "h21", "h31", "h22")
FORMAT = "cicy4-npz/1"
FIELDS = "{ID, rows, cols, matrix, euler, direct-product flag, h11, h21, h31, h22, flag}"
COLUMNS = ("id", "rows", "cols", "euler", "product", *TARGETS, "flag")

# Flags become JSON strings, so that a flag where an integer belongs is caught as a type (json would read
# true as a bool, and numpy would take a bool for 1).
_FLAG = {"T": 1, "F": 0, "N": -1}
_SHOW = {"T": "True", "F": "False", "N": "Null"}
# A record's last field is a flag: the only place where a flag is followed by a closing brace.
_RECORD_END = re.compile(r"(?:True|False|Null)\s*\}")
_TO_JSON = str.maketrans("{}", "[]")
_LEADING_ID = re.compile(r"\s*,?\s*\{\s*(-?\d+)")
READ_CHARS = 1 << 21
EULER_SLAB = 1 << 17
# The largest value each integer column holds (see the module docstring): a larger one would wrap silently.
INT32_MAX = np.iinfo(np.int32).max
INT16_MAX = np.iinfo(np.int16).max
_GZIP_MAGIC = b"\x1f\x8b"


def relations(h11, h21, h31):
    """Euler number and h22 of a non-product CY 4-fold from h11, h21, h31 (index theorems).

    euler = 6 (8 + h11 + h31 - h21) and h22 = 44 + 4 h11 - 2 h21 + 4 h31; the sextic: 2610 and 1752.
    """
    return 6 * (8 + h11 + h31 - h21), 44 + 4 * h11 - 2 * h21 + 4 * h31


def derived_hodge(h11, h21, euler):
    """h31 and h22 of a non-product CY 4-fold from h11, h21 and its exact Euler number (the relations solved)."""
    h31 = euler // 6 - 8 - h11 + h21
    return h31, 44 + 4 * h11 - 2 * h21 + 4 * h31


def _is_int(v) -> bool:
    return type(v) is int


def _show(v) -> str:
    return _SHOW[v] if isinstance(v, str) and v in _SHOW else json.dumps(v).translate(str.maketrans("[]", "{}"))


def check_matrix(matrix, shape: tuple[int, int] = PADDING) -> str | None:
    """Why ``matrix`` is not the configuration matrix of a CICY 4-fold, or None if it is.

    As for 3-folds (``data.check_matrix``) with dimension four: a rectangular list of non-negative integers
    within ``shape``, row sums n_i + 1 with n_i >= 1, sum n_i - columns = 4; and no column of zeros.
    """
    if not isinstance(matrix, list) or len(matrix) == 0:
        return "matrix is empty or not a list of rows"
    if any(not isinstance(r, list) for r in matrix):
        return "matrix rows must be lists of integers"
    width = len(matrix[0])
    for i, r in enumerate(matrix):
        if len(r) == 0:
            return f"matrix row {i} is empty"
        if len(r) != width:
            return f"ragged matrix: row {i} has {len(r)} entries, row 0 has {width}"
    for i, r in enumerate(matrix):
        for j, v in enumerate(r):
            if not _is_int(v):
                return f"matrix entry ({i},{j}) = {_show(v)} is not an integer"
            if v < 0:
                return f"matrix entry ({i},{j}) = {v} is negative"
    if len(matrix) > shape[0] or width > shape[1]:
        return f"matrix size {len(matrix)}x{width} exceeds {shape[0]}x{shape[1]}"
    dims = [sum(r) - 1 for r in matrix]
    for i, n in enumerate(dims):
        if n < 1:
            return f"Calabi-Yau condition fails in row {i}: degrees sum to {n + 1}, so n_{i} = {n} < 1"
    if sum(dims) - width != 4:
        return f"dimension is sum(n_i) - columns = {sum(dims)} - {width} = {sum(dims) - width}, not 4"
    for j in range(width):
        if not any(r[j] for r in matrix):
            return f"matrix column {j} is zero (an equation of degree zero)"
    return None


def _connected(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Whether each padded matrix is one block (rows linked through shared columns): not a direct product."""
    a = (x > 0).astype(np.float32)
    linked = np.matmul(a, a.transpose(0, 2, 1)) > 0  # (B, R, R)
    reach = np.zeros(linked.shape[:2], dtype=bool)
    reach[:, 0] = True
    for _ in range(x.shape[1]):
        grown = np.matmul(reach[:, None, :].astype(np.float32), linked.astype(np.float32))[:, 0] > 0
        if (grown == reach).all():
            break
        reach = grown
    present = np.arange(x.shape[1])[None, :] < rows[:, None]
    return (reach | ~present).all(axis=1)


def check_record(rec) -> str | None:
    """Why one parsed record is malformed, or None: every check the importer makes but the Euler number's.

    ``rec`` is the record as JSON reads it after braces became brackets and the flags the strings T, F, N.
    """
    if not isinstance(rec, list) or len(rec) != 11:
        got = f"{len(rec)} fields" if isinstance(rec, list) else _show(rec)
        return f"expected 11 fields {FIELDS}, got {got}"
    ident, rows, cols, matrix, euler, product, *hodge, flag = rec
    for name, v in (("ID", ident), ("rows", rows), ("cols", cols), ("euler", euler)):
        if not _is_int(v):
            return f"{name} = {_show(v)} is not an integer"
    if ident < 1:
        return f"ID = {ident} is not positive"
    if ident > INT32_MAX:
        return f"ID = {ident} is larger than the id column holds ({INT32_MAX}, int32)"
    if abs(euler) > INT32_MAX:
        return f"euler = {euler} is outside what the euler column holds (+-{INT32_MAX}, int32)"
    for name, v in (("direct-product flag", product), ("last flag", flag)):
        if not (isinstance(v, str) and v in _FLAG):
            return f"{name} = {_show(v)} is not True, False or Null"
    reason = check_matrix(matrix)
    if reason:
        return reason
    if (rows, cols) != (len(matrix), len(matrix[0])):
        return f"rows, cols = {rows}, {cols} but the matrix is {len(matrix)}x{len(matrix[0])}"
    x = np.zeros((1, *PADDING), dtype=np.int64)
    x[0, :rows, :cols] = matrix
    is_product = not _connected(x, np.array([rows]))[0]
    if product != "N" and (product == "T") != is_product:
        return f"direct-product flag is {_SHOW[product]} but the matrix is {'' if is_product else 'not '}block-diagonal"
    for name, v in zip(TARGETS, hodge):
        if v == "N" and is_product:
            continue
        if not _is_int(v):
            return f"{name} = {_show(v)} is not an integer" + ("" if v != "N" else " (Null is accepted for products only)")
        if v < 0:
            return f"{name} = {v} is negative"
        if v > INT16_MAX:
            return f"{name} = {v} is larger than the {name} column holds ({INT16_MAX}, int16)"
    if not is_product:
        h11, h21, h31, h22 = hodge
        if h11 < 1:
            return f"h11 = {h11} < 1"
        want_euler, want_h22 = relations(h11, h21, h31)
        if euler != want_euler:
            return f"euler = {euler}, but 6 (8 + h11 + h31 - h21) = {want_euler}"
        if h22 != want_h22:
            return f"h22 = {h22}, but 44 + 4 h11 - 2 h21 + 4 h31 = {want_h22}"
    return None


class _Bad(Exception):
    """Record ``index`` of the batch failed a fast check; ``check_record`` says why."""

    def __init__(self, index: int):
        self.index = index


def _record_id(text: str) -> str:
    match = _LEADING_ID.match(text)
    return match.group(1) if match else "?"


def _record_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each top-level ``{...}`` in a piece of the list, by brace depth: the slow, exact split.

    A record left open runs to the end of the text; a stray closing brace is left between records.
    """
    spans, depth, start = [], 0, 0
    for k, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = k
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append((start, k + 1))
    if depth > 0:
        spans.append((start, len(text)))
    return spans


def _to_json(text: str) -> str:
    return text.translate(_TO_JSON).replace("True", '"T"').replace("False", '"F"').replace("Null", '"N"')


@dataclass
class _Columns:
    """The growing columns; allocated lazily (np.zeros pages are only resident once written)."""

    capacity: int

    def __post_init__(self):
        c = self.capacity
        self.x = np.zeros((c, *PADDING), dtype=np.int8)
        self.id = np.zeros(c, dtype=np.int32)
        self.rows = np.zeros(c, dtype=np.int8)
        self.cols = np.zeros(c, dtype=np.int8)
        self.euler = np.zeros(c, dtype=np.int32)
        self.product = np.zeros(c, dtype=bool)
        self.hodge = {t: np.zeros(c, dtype=np.int16) for t in TARGETS}
        self.flag = np.zeros(c, dtype=np.int8)
        self.n = 0


class _Reader:
    """Parses the list batch by batch into ``_Columns``: JSON (in C) per batch, checks vectorised per batch."""

    def __init__(self, columns: _Columns, where: str):
        self.columns, self.where = columns, where

    def fail(self, number: int, ident, reason: str):
        raise CicyError(f"{self.where}: record {number} (ID {ident}): {reason}")

    def batch(self, text: str) -> None:
        """Complete records ``rec, rec, ..., rec`` (no leading comma)."""
        first = self.columns.n + 1
        try:
            records = json.loads("[" + _to_json(text) + "]")
        except (json.JSONDecodeError, RecursionError):
            records = None
        if records is None:
            self.locate(text, first)
        try:
            self._store(records)
        except _Bad as bad:
            rec = records[bad.index]
            reason = check_record(rec)
            assert reason, f"record {first + bad.index} failed a fast check that check_record passes"
            ident = rec[0] if isinstance(rec, list) and rec and _is_int(rec[0]) else "?"
            self.fail(first + bad.index, ident, reason)

    def locate(self, text: str, first: int) -> None:
        """Name the record that keeps ``text`` from parsing (the slow path, taken only on an error)."""
        end = 0
        for k, (a, b) in enumerate(_record_spans(text)):
            between = text[end:a].strip()
            if between != ("," if k else ""):
                self.fail(first + k, _record_id(text[a:]), f"expected {'a comma' if k else 'a record'} before the record, found {between[:40]!r}")
            try:
                json.loads(_to_json(text[a:b]))
            except (json.JSONDecodeError, RecursionError) as e:
                detail = f" ({e.msg}: {text[a:b][max(0, e.pos - 20) : e.pos + 20]!r})" if isinstance(e, json.JSONDecodeError) else ""
                self.fail(first + k, _record_id(text[a:]), f"not a record of integers, flags and lists{detail}")
            end = b
        self.fail(first, _record_id(text), f"unexpected text after the records: {text[end:][:40]!r}")

    def _store(self, records: list) -> None:
        n = len(records)
        c = self.columns
        if c.n + n > c.capacity:
            raise CicyError(f"{self.where}: more records than the file's size allows: not the published format")
        head = np.zeros((n, 5), dtype=np.int64)  # id, rows, cols, euler, product flag
        hodge = np.full((n, 4), -1, dtype=np.int64)
        flags = np.zeros(n, dtype=np.int8)
        null = np.zeros((n, 4), dtype=bool)
        flat: list = []
        for k, rec in enumerate(records):
            if type(rec) is not list or len(rec) != 11:
                raise _Bad(k)
            ident, r, cc, matrix, euler, product, h11, h21, h31, h22, flag = rec
            if not (_is_int(ident) and _is_int(r) and _is_int(cc) and _is_int(euler) and 0 < ident <= INT32_MAX):
                raise _Bad(k)
            if abs(euler) > INT32_MAX:
                raise _Bad(k)
            if type(product) is not str or type(flag) is not str or product not in _FLAG or flag not in _FLAG:
                raise _Bad(k)
            if type(matrix) is not list or len(matrix) != r or not (0 < r <= PADDING[0] and 0 < cc <= PADDING[1]):
                raise _Bad(k)
            for row in matrix:
                if type(row) is not list or len(row) != cc:
                    raise _Bad(k)
            flat.extend(chain.from_iterable(matrix))
            for t, v in enumerate((h11, h21, h31, h22)):
                if _is_int(v) and abs(v) <= INT16_MAX:
                    hodge[k, t] = v
                elif v == "N":
                    null[k, t] = True
                else:
                    raise _Bad(k)
            head[k] = ident, r, cc, euler, _FLAG[product]
            flags[k] = _FLAG[flag]
        try:
            entries = np.array(flat, dtype=None)
        except (OverflowError, ValueError):
            entries = np.array([], dtype=object)
        rows, cols = head[:, 1], head[:, 2]
        sizes = rows * cols
        if entries.dtype.kind not in "iu" or len(entries) != sizes.sum():
            raise _Bad(self._first(records, lambda rec: check_matrix(rec[3])))
        owner = np.repeat(np.arange(n), sizes)
        place = np.arange(len(entries)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        bad = np.bincount(owner, weights=(entries < 0) | (entries > 127), minlength=n) > 0
        if bad.any():
            raise _Bad(int(np.argmax(bad)))
        x = np.zeros((n, *PADDING), dtype=np.int16)
        x[owner, place // np.repeat(cols, sizes), place % np.repeat(cols, sizes)] = entries
        present_rows = np.arange(PADDING[0])[None, :] < rows[:, None]
        present_cols = np.arange(PADDING[1])[None, :] < cols[:, None]
        dims = x.sum(axis=2, dtype=np.int64) - 1
        bad |= ((dims < 1) & present_rows).any(axis=1)
        bad |= np.where(present_rows, dims, 0).sum(axis=1) - cols != 4
        bad |= ((x.sum(axis=1) == 0) & present_cols).any(axis=1)
        is_product = ~_connected(x, rows)
        given = head[:, 4]
        bad |= (given >= 0) & ((given == 1) != is_product)
        bad |= null.any(axis=1) & ~is_product
        bad |= ((hodge < 0) & ~null).any(axis=1)
        h11, h21, h31, h22 = hodge.T
        want_euler, want_h22 = relations(h11, h21, h31)
        bad |= ~is_product & ((h11 < 1) | (head[:, 3] != want_euler) | (h22 != want_h22))
        if bad.any():
            raise _Bad(int(np.argmax(bad)))
        s = slice(c.n, c.n + n)
        c.x[s] = x
        c.id[s], c.rows[s], c.cols[s], c.euler[s] = head[:, 0], rows, cols, head[:, 3]
        c.product[s] = is_product
        for t, name in enumerate(TARGETS):
            c.hodge[name][s] = hodge[:, t]
        c.flag[s] = flags
        c.n += n

    @staticmethod
    def _first(records, why) -> int:
        for k, rec in enumerate(records):
            if why(rec):
                return k
        raise AssertionError("a batch failed as a whole but no record in it did")


def _chunks(path: Path, progress) -> tuple:
    """Text pieces of the file in order, and its sha256 once read (a generator and a list to fill)."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    done: list[str] = []

    def pieces():
        offset = 0
        with open(path, "rb") as f:
            while True:
                raw = f.read(READ_CHARS)
                if offset == 0 and raw.startswith(_GZIP_MAGIC):
                    raise CicyError(f"{path}: is gzip-compressed: decompress it first (gunzip {path.name})")
                digest.update(raw)
                if progress is not None:
                    progress.update(len(raw))
                if not raw:
                    tail = decoder.decode(b"", final=True)
                    if tail:
                        yield tail
                    done.append(digest.hexdigest())
                    return
                try:
                    yield decoder.decode(raw)
                except UnicodeDecodeError as e:
                    raise CicyError(
                        f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} near offset {offset + e.start}): not the published list"
                    ) from None
                offset += len(raw)

    return pieces(), done


def _parse(path: Path, columns: _Columns, progress) -> str:
    """Stream the list into ``columns``; returns the file's sha256. Never holds more than a few MB of text."""
    where = str(path)
    reader = _Reader(columns, where)
    pieces, done = _chunks(path, progress)
    buffer, opened = "", False
    for piece in pieces:
        buffer += piece
        if not opened:
            stripped = buffer.lstrip()
            if not stripped:
                continue
            if stripped[0] != "{":
                raise CicyError(f"{where}: not the published list: it must start with '{{', found {stripped[:20]!r}")
            buffer, opened = stripped[1:], True
        ends = list(_RECORD_END.finditer(buffer))
        if not ends:
            if len(buffer) > 16 * READ_CHARS:
                raise CicyError(f"{where}: record {columns.n + 1} (ID {_record_id(buffer)}): no end found in {len(buffer):,} characters")
            continue
        cut = ends[-1].end()
        text, buffer = buffer[:cut], buffer[cut:]
        reader.batch(_strip_separator(text, columns.n, where))
    if not opened:
        raise CicyError(f"{where}: the file is empty")
    rest = buffer.strip()
    if rest != "}":
        if rest.startswith(",") and "{" in rest:  # a record whose last field is not a flag: the reader says why
            reader.batch(_strip_separator(rest, columns.n, where))
        raise CicyError(f"{where}: after record {columns.n}: expected the closing '}}' of the list, found {rest[:40]!r}")
    return done[0]


def _strip_separator(text: str, n_before: int, where: str) -> str:
    """Records after the first arrive as ``, rec, ...``: drop the one comma that separates them from the last."""
    stripped = text.lstrip()
    if n_before:
        if not stripped.startswith(","):
            raise CicyError(f"{where}: record {n_before + 1} (ID {_record_id(stripped)}): missing ',' before it")
        stripped = stripped[1:]
    return stripped


def _check_out(out: Path) -> None:
    """Refuse an output the import could not write, before minutes of work: a folder, a wrong suffix, no write access."""
    if out.is_dir():
        raise CicyError(f"--out {out}: is a folder, expected a .npz file")
    if out.suffix != ".npz":
        raise CicyError(f"{out}: the columnar file must end in .npz")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise CicyError(f"--out {out}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise CicyError(f"--out {out}: not writable")


@dataclass(frozen=True)
class Imported:
    """What ``import_list`` wrote: the file, its record counts and the seconds spent."""

    out: Path
    records: int
    products: int
    sha256: str
    seconds: dict


def import_list(source: str | os.PathLike, out: str | os.PathLike | None = None, *, progress: bool = False) -> Imported:
    """Read the published ``cicy4list.txt``, validate every record and write the columnar ``.npz``.

    Each record is checked as 3-fold matrices are (``check_matrix``, dimension four), against its size
    fields, its direct-product flag (block-diagonal matrices), the index relations of a non-product CY
    4-fold (``relations``) and its Euler number computed exactly from the matrix (``invariants``); IDs must
    be unique. The first malformed record ends the import with a ``CicyError`` naming its record number
    (1-based, in file order) and ID; nothing is written then. The text is streamed (a few MB at a time).

    Args:
        source: the text file.
        out: the ``.npz`` to write (default: ``source`` with the suffix ``.npz``); replaced atomically.
        progress: show progress bars (bytes parsed, Euler numbers checked) on stderr.
    """
    import time

    from tqdm import tqdm

    from . import invariants

    source = Path(source)
    if not source.is_file():
        raise CicyError(f"{source}: no such file (download cicy4list.txt first; see README, CICY 4-folds)")
    out = Path(out) if out is not None else source.with_suffix(".npz")
    _check_out(out)
    size = source.stat().st_size
    columns = _Columns(size // 34 + 1)  # a record is at least 34 characters: an upper bound, allocated lazily
    bar = tqdm(total=size, unit="B", unit_scale=True, desc="parse", disable=not progress, leave=False)
    start = time.perf_counter()
    with bar:
        sha = _parse(source, columns, bar)
    n = columns.n
    if n == 0:
        raise CicyError(f"{source}: the list has no records")
    parsed = time.perf_counter()
    x, shapes = columns.x[:n], np.column_stack([columns.rows[:n], columns.cols[:n]])
    with tqdm(total=n, unit=" manifolds", desc="euler", disable=not progress, leave=False) as bar:
        for lo in range(0, n, EULER_SLAB):
            hi = min(n, lo + EULER_SLAB)
            computed = invariants.euler_numbers(x[lo:hi], shapes=shapes[lo:hi])
            wrong = np.flatnonzero(computed != columns.euler[lo:hi])
            if len(wrong):
                k = lo + int(wrong[0])
                raise CicyError(
                    f"{source}: record {k + 1} (ID {columns.id[k]}): euler = {columns.euler[k]}, "
                    f"but the Chern classes of the matrix give {computed[wrong[0]]}"
                )
            bar.update(hi - lo)
    checked = time.perf_counter()
    ids = columns.id[:n]
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if len(repeated):
        k = int(order[repeated[0] + 1])
        raise CicyError(f"{source}: record {k + 1} (ID {ids[k]}): the ID is repeated (first at record {order[repeated[0]] + 1})")
    arrays = {"x": x, "id": ids, "rows": columns.rows[:n], "cols": columns.cols[:n], "euler": columns.euler[:n],
              "product": columns.product[:n], **{t: columns.hodge[t][:n] for t in TARGETS}, "flag": columns.flag[:n],
              "format": np.array(FORMAT), "source": np.array(source.name), "sha256": np.array(sha)}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.npz")
    try:
        np.savez_compressed(partial, **arrays)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    written = time.perf_counter()
    seconds = {"parse": parsed - start, "euler": checked - parsed, "write": written - checked, "total": written - start}
    return Imported(out, n, int(columns.product[:n].sum()), sha, seconds)


def read(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns of an imported file (see the module docstring), checked for its format."""
    path = _existing(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise CicyError(f"{path}: not an imported CICY 4-fold file ({e})") from None
    if str(arrays.get("format", "")) != FORMAT:
        raise CicyError(f"{path}: not an imported CICY 4-fold file (format {str(arrays.get('format', 'missing'))!r}, expected {FORMAT!r})")
    return arrays


def summary(arrays: dict[str, np.ndarray], *, keep_products: bool = False, name: str = "cicy4") -> dict:
    """Counts and ranges, as ``data.summary`` gives them for the 3-fold lists (over non-products by default)."""
    keep = np.ones(len(arrays["id"]), dtype=bool) if keep_products else ~arrays["product"]
    known = keep & (arrays["h11"] >= 0)

    def span(a, mask):
        return (int(a[mask].min()), int(a[mask].max())) if mask.any() else (0, 0)

    return {
        "dataset": name,
        "manifolds": int(keep.sum()),
        "products": int(arrays["product"].sum()),
        **{t: span(arrays[t], known) for t in TARGETS},
        "euler": span(arrays["euler"], keep),
        "rows": span(arrays["rows"], keep),
        "cols": span(arrays["cols"], keep),
        "padding": PADDING,
        "sha256": str(arrays["sha256"]),
    }


def is_imported_file(path: str | os.PathLike) -> bool:
    """Whether the ``.npz`` at ``path`` is an imported 4-fold list (its ``format`` says so; nothing else is read)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return "format" in f.files and str(f["format"]) == FORMAT
    except (OSError, ValueError):
        return False


def source_sha256(path: str | os.PathLike) -> str:
    """The sha256 of the text an imported file was made from: the data set's hash in every run."""
    with np.load(_existing(path), allow_pickle=False) as f:
        return str(f["sha256"]) if "sha256" in f.files else ""


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CicyError(f"{path}: no such file (import the list first: cicy-search data import-cicy4 cicy4list.txt --out {path})")
    return path


_loaded: dict[tuple, object] = {}


def load(path: str | os.PathLike, *, keep_products: bool = True):
    """An imported list as ``CicyData`` (``keep_products=False``: without the direct products).

    ``x`` stays int8 (N, 16, 20); the frame has id, rows, cols, h11, h21, h31, h22, euler, product, flag.
    The last list loaded is kept for the process (a study's trials share it), keyed by the path as given and
    resolved, size, mtime and ``keep_products``; only that one copy of the matrices stays in memory.
    """
    import pandas as pd

    stat = _existing(path).stat()
    key = (str(path), str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, keep_products)
    if key not in _loaded:
        _loaded.clear()
        a = read(path)
        keep = slice(None) if keep_products else ~a["product"]
        frame = pd.DataFrame({k: a[k][keep] for k in COLUMNS})
        frame["product"] = frame["product"].astype(bool)
        x = a.pop("x")[keep]
        x.setflags(write=False)
        _loaded[key] = CicyData(str(path), frame, x, str(a["sha256"]) if "sha256" in a else "")
    return _loaded[key]


def exact_euler(x: np.ndarray) -> np.ndarray:
    """Exact Euler numbers of padded 4-fold matrices (N, rows, cols): zero rows and columns anywhere are padding."""
    x = np.asarray(x)
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    from . import invariants

    rows, cols = x.sum(axis=2) > 0, x.sum(axis=1) > 0  # move the present rows and columns to the top left
    x = np.take_along_axis(x, np.argsort(~rows, axis=1, kind="stable")[:, :, None], axis=1)
    x = np.take_along_axis(x, np.argsort(~cols, axis=1, kind="stable")[:, None, :], axis=2)
    shapes = np.column_stack([rows.sum(axis=1), cols.sum(axis=1)])
    return invariants.euler_numbers(np.rint(x).astype(np.int8), shapes=shapes)
