"""The CICY 3-fold lists: loading, validation, arrays and deterministic splits.

The lists ship inside the package (``cicy_search/data/*.json.gz``); nothing is read from the network.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import cicy4, userdata
from .errors import CicyError
from .lists import TARGETS, CicyData, pad  # noqa: F401 (the package's names for them: data.CicyData, data.pad)

DATASETS = {"original": "cicy3o.json.gz", "favourable": "cicy3f.json.gz"}
PADDING = {"original": (12, 15), "favourable": (15, 18)}


FILE_SUFFIXES = (".npz", ".csv", ".json")


@dataclass(frozen=True)
class Source:
    """What a ``data.dataset`` value names, and what kind of list it holds.

    ``kind`` is ``shipped`` (a 3-fold list inside the package), ``cicy4`` (a 4-fold list written by
    ``cicy-search data import-cicy4``) or ``file`` (a user's own list: ``userdata``). Every question that
    depends on the kind (padding, dimension, which targets exist, whether exact invariants and the physics
    heads apply) is answered here, not by looking at the name.
    """

    name: str
    kind: str
    dimension: int
    padding: tuple[int, int]
    targets: tuple[str, ...]

    @property
    def physics(self) -> bool:
        """Whether the physics-informed heads (Hodge numbers derived from the exact Euler number) apply."""
        return self.kind in ("shipped", "cicy4")

    @property
    def invariant_features(self) -> bool:
        """Whether exact invariants (``data.features``) can be computed: for 3-folds only."""
        return self.dimension == 3

    def describe(self) -> str:
        return {"shipped": f"the {self.name} list", "cicy4": f"the 4-fold list {self.name}"}.get(self.kind, f"the data file {self.name}")


def source(dataset: str) -> Source:
    """The ``Source`` a ``data.dataset`` value names: a shipped list, an imported 4-fold list or a data file.

    A ``.npz`` that is not there yet is taken for a 4-fold list (``cicy-search data import-cicy4`` writes it);
    loading it says how to make it. Data files (``.csv``, ``.json``, a ``.npz`` of another format) are read and
    validated here, once per version of the file.
    """
    dataset = str(dataset)
    if dataset in DATASETS:
        return Source(dataset, "shipped", 3, PADDING[dataset], TARGETS)
    if not dataset.endswith(FILE_SUFFIXES):
        raise CicyError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}, or a data file (.csv, .json, .npz)")
    if dataset.endswith(".npz") and (not Path(dataset).is_file() or _is_cicy4(dataset, *_version(dataset))):
        return Source(dataset, "cicy4", 4, cicy4.PADDING, cicy4.TARGETS)
    f = userdata.read(dataset)
    return Source(dataset, "file", f.dimension, f.padding, f.targets)


def _version(path: str) -> tuple[int, int]:
    stat = Path(path).stat()
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=16)
def _is_cicy4(path: str, size: int, mtime_ns: int) -> bool:
    """Whether the .npz at ``path`` (of this size and time) is an imported 4-fold list; asked once per version."""
    return cicy4.is_imported_file(path)


def is_imported(dataset: str) -> bool:
    """Whether ``dataset`` names an imported 4-fold list rather than a shipped list or a data file."""
    return source(dataset).kind == "cicy4"


def padding(dataset: str) -> tuple[int, int]:
    """The (rows, cols) every matrix of ``dataset`` is padded to."""
    return source(dataset).padding


def _data_file(dataset: str):
    if dataset not in DATASETS:
        raise CicyError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    return resources.files("cicy_search") / "data" / DATASETS[dataset]


def dataset_hash(dataset: str = "original") -> str:
    """sha256 of the shipped file (of an imported list: of the text it was imported from; of a data file: of the
    file): logged with every run."""
    kind = source(dataset).kind
    if kind == "cicy4":  # read each time: the file may be imported again, the working directory change
        return cicy4.source_sha256(dataset)
    if kind == "file":
        return userdata.read(dataset).sha256
    return _shipped_hash(dataset)


@functools.lru_cache(maxsize=None)
def _shipped_hash(dataset: str) -> str:
    return hashlib.sha256(_data_file(dataset).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=None)
def _raw(dataset: str) -> dict:
    return json.loads(gzip.decompress(_data_file(dataset).read_bytes()))


def check_matrix(matrix, shape: tuple[int, int] | None = (12, 15)) -> str | None:
    """Why ``matrix`` is not the configuration matrix of a CICY 3-fold, or None if it is.

    ``matrix`` is q without the column of projective dimensions: rows are ambient P^n factors,
    columns are equations. Checks: a non-empty rectangular list of non-negative integers, at most
    ``shape`` (the padding size), every row sum = n_i + 1 with n_i >= 1 (the Calabi-Yau condition)
    and sum n_i - columns = 3 (dimension three).
    """
    if not isinstance(matrix, (list, tuple, np.ndarray)) or len(matrix) == 0:
        return "empty or not a list of rows"
    rows = [list(r) if isinstance(r, (list, tuple, np.ndarray)) else None for r in matrix]
    if any(r is None for r in rows):
        return "rows must be lists of integers"
    if any(len(r) == 0 for r in rows):
        return "empty row"
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            return f"ragged rows: row {i} has {len(r)} entries, row 0 has {width}"
    for i, r in enumerate(rows):
        for j, v in enumerate(r):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                return f"entry ({i},{j}) = {v!r} is not an integer"
            if not math.isfinite(v) or float(v) != int(v):
                return f"entry ({i},{j}) = {v!r} is not an integer"
            if v < 0:
                return f"entry ({i},{j}) = {v} is negative"
    if shape is not None and (len(rows) > shape[0] or width > shape[1]):
        return f"size {len(rows)}x{width} exceeds the padding size {shape[0]}x{shape[1]}"
    dims = [int(sum(r)) - 1 for r in rows]
    for i, n in enumerate(dims):
        if n < 1:
            return f"Calabi-Yau condition fails in row {i}: degrees sum to {n + 1}, so n_{i} = {n} < 1"
    if sum(dims) - width != 3:
        return f"dimension is sum(n_i) - columns = {sum(dims)} - {width} = {sum(dims) - width}, not 3"
    return None


@functools.lru_cache(maxsize=None)
def _load_all(dataset: str) -> CicyData:
    raw = _raw(dataset)
    shape = PADDING[dataset]
    records, matrices = [], []
    for key in sorted(raw, key=int):
        entry = raw[key]
        reason = check_matrix(entry["matrix"], shape)
        if reason:
            raise CicyError(f"{dataset} list, manifold {key}: {reason}")
        records.append(
            {
                "id": int(key),
                "rows": entry["size"][0],
                "cols": entry["size"][1],
                "h11": entry["h11"],
                "h21": entry["h21"],
                "euler": entry["euler"] if "euler" in entry else 2 * (entry["h11"] - entry["h21"]),
                "product": entry.get("isprod", entry["h11"] == 0),
                "favour": entry.get("favour"),
            }
        )
        matrices.append(entry["matrix"])
    frame = pd.DataFrame.from_records(records)
    x = pad(matrices, shape)
    x.setflags(write=False)
    return CicyData(dataset, frame, x, _shipped_hash(dataset))


def load(dataset: str = "original", *, keep_products: bool = False) -> CicyData:
    """Load a shipped list, validated entry by entry, an imported 4-fold list (validated when imported) or a data file.

    Args:
        dataset: ``"original"`` (12x15 padding), ``"favourable"`` (15x18), the path of a ``.npz`` file
            written by ``cicy-search data import-cicy4`` (16x20, int8 matrices, targets up to h22), or of a
            data file of the user's own (``userdata``: ``.csv``, ``.json`` or ``.npz``, its own targets).
        keep_products: keep the 22 product manifolds (h11 = 0 in the original list); the literature drops them.
    """
    kind = source(dataset).kind
    if kind == "cicy4":  # products are flagged by the list (block-diagonal matrices) and kept apart
        return cicy4.load(dataset, keep_products=keep_products)
    if kind == "file":  # a user's list has no product flag: every row is kept
        return userdata.read(dataset).data
    data = _load_all(dataset)
    if keep_products:
        return data
    is_product = (data.frame["h11"] == 0) | data.frame["product"].astype(bool)
    return data.subset(np.flatnonzero(~is_product.to_numpy()))


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split(
    n: int,
    *,
    train: float = 0.8,
    val: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    stratify: Sequence | None = None,
) -> Split:
    """Deterministic disjoint index split of ``range(n)``.

    The fractions must be positive (val and test may be 0) and add up to at most 1 (a rest is
    left out, as in the 30/10/60 learning-curve splits). With ``stratify`` (one label per item)
    every label is split in the same proportions; a label with too few members to share goes to
    training first.
    """
    for name, f in (("train", train), ("val", val), ("test", test)):
        if not 0 <= f <= 1:
            raise CicyError(f"split fraction {name} = {f} is not within [0, 1]")
    if train <= 0:
        raise CicyError("split fraction train must be positive")
    if train + val + test > 1 + 1e-9:
        raise CicyError(f"split fractions add up to {train + val + test:g} > 1")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if stratify is None else [
        np.flatnonzero(np.asarray(stratify) == label) for label in np.unique(stratify)
    ]
    parts: list[list[np.ndarray]] = [[], [], []]
    for members in groups:
        members = rng.permutation(members)
        m = len(members)
        n_train = max(1, int(round(train * m))) if m else 0
        n_val = min(int(round(val * m)), m - n_train)
        n_test = min(int(round(test * m)), m - n_train - n_val)
        bounds = np.cumsum([n_train, n_val, n_test])
        parts[0].append(members[: bounds[0]])
        parts[1].append(members[bounds[0] : bounds[1]])
        parts[2].append(members[bounds[1] : bounds[2]])
    train_idx, val_idx, test_idx = (rng.permutation(np.concatenate(p)) for p in parts)
    return Split(train_idx, val_idx, test_idx)


def select(d: dict) -> tuple[CicyData, Split]:
    """The manifolds and the split a resolved ``data`` section describes (``limit``, ``seed``, fractions).

    Every split given a positive fraction must receive matrices: a ``limit`` too small for the
    fractions, or a stratified split whose classes are too small to share, is a ``CicyError``
    naming the settings, raised before anything is trained or tracked.
    """
    dataset = load(d["dataset"], keep_products=d["keep_products"])
    if d["limit"] is not None and d["limit"] < len(dataset.frame):
        pick = np.sort(np.random.default_rng(d["seed"]).permutation(len(dataset.frame))[: d["limit"]])
        dataset = dataset.subset(pick)
    labels = dataset.y(d["targets"][0]) if d["stratify"] else None
    s = split(len(dataset.frame), train=d["train"], val=d["val"], test=d["test"], seed=d["seed"], stratify=labels)
    for key, name, index in (("train", "training", s.train), ("val", "validation", s.val), ("test", "test", s.test)):
        if len(index) == 0 and d[key] > 0:
            n = len(dataset.frame)
            how = f"data.limit = {d['limit']}: " if d["limit"] is not None else ""
            hint = "raise data.limit" if d["limit"] is not None else "raise the fractions"
            if labels is not None:
                classes = len(np.unique(labels))
                how += f"{n} matrices in {classes} {d['targets'][0]} classes, each split on its own"
                hint += " or set data.stratify: false"
            else:
                how += f"{n} matrices"
            raise CicyError(
                f"data: the {name} split is empty ({how}, fractions {d['train']:g}/{d['val']:g}/{d['test']:g}); {hint}"
            )
    return dataset, s


def summary(data: CicyData) -> dict:
    """Counts and ranges for ``cicy-search data info``."""
    f = data.frame
    if source(data.name).kind == "file":
        return userdata.summary(userdata.read(data.name))
    return {
        "dataset": data.name,
        "manifolds": len(f),
        "products": int(f["product"].astype(bool).sum()),
        "h11": (int(f["h11"].min()), int(f["h11"].max())),
        "h21": (int(f["h21"].min()), int(f["h21"].max())),
        **{t: (int(f[t].min()), int(f[t].max())) for t in ("h31", "h22") if t in f and len(f)},
        "rows": (int(f["rows"].min()), int(f["rows"].max())),
        "cols": (int(f["cols"].min()), int(f["cols"].max())),
        "padding": data.shape,
        "sha256": data.hash,
        **_euler_summary(data),
    }


def _euler_summary(data: CicyData) -> dict:
    """The Euler number's range, and how many list entries the exact computation (``invariants``) reproduces."""
    f = data.frame
    if "euler" not in f or not len(f) or source(data.name).kind != "shipped":
        return {}
    euler, _ = exact_invariants(data.x)
    agree = int((euler == f["euler"].to_numpy()).sum())
    return {"euler": (int(euler.min()), int(euler.max())), "euler computed exactly": f"agrees with the list for {agree} of {len(f)}"}


# --- symmetry and exact invariants as model inputs ---
# Row and column permutations of a configuration matrix describe the same manifold. The functions below
# work on zero-padded arrays (N, rows, cols) and treat padding rows and columns as absent.

FEATURES = ("euler", "c2", "koszul", "koszul_share")
# Input channels are scaled to order one: Euler numbers lie in -200..200, c2.J_i in 0..60, Koszul counts in 0..20.
FEATURE_SCALE = {"euler": 100.0, "c2": 50.0, "koszul": 10.0}
_invariants_memo: dict[bytes, tuple[int, np.ndarray]] = {}
_koszul_memo: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}


def _valid(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which rows and columns of each padded matrix are present: (N, rows), (N, cols) booleans."""
    return x.sum(axis=2) > 0, x.sum(axis=1) > 0


def exact_invariants(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euler number (N,) and c2.J_i per row (N, rows; 0 on padding rows) of padded matrices, exactly.

    Computed once per distinct matrix (``invariants.invariants``) and remembered for the process.
    """
    from . import invariants

    x = np.asarray(x)
    keys = [np.ascontiguousarray(m, dtype=np.int8).tobytes() for m in x]
    missing = {k: i for i, k in enumerate(keys) if k not in _invariants_memo}
    if missing:
        computed = invariants.invariants([x[i] for i in missing.values()])
        for (key, i), value in zip(missing.items(), computed):
            rows = np.zeros(x.shape[1], dtype=np.int64)
            rows[x[i].sum(axis=1) > 0] = value["c2"]
            _invariants_memo[key] = (value["euler"], rows)
    euler = np.array([_invariants_memo[k][0] for k in keys], dtype=np.int64)
    c2 = np.stack([_invariants_memo[k][1] for k in keys]) if keys else np.zeros((0, x.shape[1]), dtype=np.int64)
    return euler, c2


def koszul_counts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Line-bundle cohomology counts of padded 3-fold matrices (``invariants.koszul_h1``) at their positions:
    h^1(X, O_X(q_j)) by column (N, cols) and (n_i + 1) h^1(X, O_X(J_i)) by row (N, rows), 0 on padding.
    Their difference, summed, plus the number of rows is h^{1,1} (``invariants.h11_koszul``).
    Computed once per distinct matrix and remembered for the process (they cost milliseconds a matrix).
    """
    from . import invariants

    x = np.asarray(x)
    rows, cols = _valid(x)
    normal = np.zeros((len(x), x.shape[2]), dtype=np.int64)
    ambient = np.zeros((len(x), x.shape[1]), dtype=np.int64)
    if not _koszul_memo:
        _koszul_memo.update(_read_cache(KOSZUL_CACHE))
    added = False
    for i, m in enumerate(x):
        key = np.ascontiguousarray(m, dtype=np.int8).tobytes()
        if not _counts_fit(_koszul_memo.get(key), int(cols[i].sum()), int(rows[i].sum())):
            _koszul_memo[key] = invariants.koszul_h1(m)  # new, or a damaged cache entry: computed again
            added = True
        normal[i, cols[i]], ambient[i, rows[i]] = _koszul_memo[key]
    if added:
        _write_cache(KOSZUL_CACHE, _koszul_memo)
    return normal, ambient


def _counts_fit(counts, n_cols: int, n_rows: int) -> bool:
    """Whether remembered Koszul counts are what ``koszul_h1`` gives a matrix of this size: two arrays of
    non-negative counts, one per column and one per row."""
    return (
        isinstance(counts, tuple)
        and len(counts) == 2
        and all(a.ndim == 1 and a.dtype.kind in "iu" and (a >= 0).all() for a in counts)
        and (len(counts[0]), len(counts[1])) == (n_cols, n_rows)
    )


# Koszul counts cost milliseconds a matrix (tens of seconds for a list, minutes for the favourable one: see
# docs/performance.md), so they are kept on disk too, in $CICY_CACHE_DIR (default $XDG_CACHE_HOME/cicy-search or ~/.cache/cicy-search; "none"
# turns the file off). Bump the file's version when invariants.koszul_h1 changes what it computes.
KOSZUL_CACHE = "koszul-v1.json"


def forget() -> None:
    """Drop what this process remembers (canonical forms, invariants, Koszul counts; not the disk cache): the
    next call computes, or reads from the cache file, as a new process would."""
    for memo in (_canonical_memo, _invariants_memo, _koszul_memo):
        memo.clear()


def cache_dir() -> Path | None:
    """Where computed invariants are kept between processes, or None when $CICY_CACHE_DIR is "none"."""
    given = os.environ.get("CICY_CACHE_DIR", "")
    if given.lower() == "none":
        return None
    return Path(given) if given else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cicy-search"


def _read_cache(name: str) -> dict[bytes, tuple[np.ndarray, ...]]:
    """A cache file's entries (matrix bytes -> arrays); nothing when it is missing or unreadable (recomputed)."""
    folder = cache_dir()
    try:
        raw = json.loads((folder / name).read_text()) if folder else {}
        items = raw.items()
    except (OSError, ValueError, TypeError, AttributeError):
        return {}
    entries = {}
    for k, v in items:  # a damaged entry is dropped alone (and recomputed), the others are kept
        try:
            arrays = tuple(np.asarray(a) for a in v)
            key = bytes.fromhex(k)
        except (ValueError, TypeError, OverflowError):
            continue
        if all(a.dtype.kind in "iu" or a.size == 0 for a in arrays):  # 0.5 must not be read as 0
            entries[key] = tuple(a.astype(np.int64) for a in arrays)
    return entries


def _write_cache(name: str, memo: dict[bytes, tuple[np.ndarray, ...]]) -> None:
    """Merge the memo into the cache file, atomically (a reader never sees half a file; concurrent writers at
    worst drop each other's new entries, which are then recomputed). A cache that cannot be written is skipped."""
    folder = cache_dir()
    if folder is None:
        return
    merged = {**_read_cache(name), **memo}
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
            tmp = Path(f.name)
            json.dump({k.hex(): [a.tolist() for a in v] for k, v in merged.items()}, f)
        os.replace(tmp, folder / name)
    except OSError:
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # a full disk leaves no half-written temporary file behind


def _rank(keys: list) -> list[int]:
    """Colours as ranks of their keys, largest key first: depends only on the keys, never on positions."""
    order = {k: i for i, k in enumerate(sorted(set(keys), reverse=True))}
    return [order[k] for k in keys]


def _refine(m: list, rows: list[int], cols: list[int], row_nz: list, col_nz: list) -> tuple[list[int], list[int]]:
    """Colour refinement (1-dimensional Weisfeiler-Lehman) on the bipartite graph of rows and columns.

    A row's new colour is its colour and the multiset of (entry, column colour) over its non-zero entries;
    likewise for columns. Repeats until no colour class splits. Colours are ranks (0 = first), negated
    inside keys so that refinement only splits classes and never reorders them.
    """
    while True:
        n_rows, n_cols = len(set(rows)), len(set(cols))
        rows = _rank([(-rows[i], tuple(sorted((m[i][j], -cols[j]) for j in row_nz[i]))) for i in range(len(rows))])
        cols = _rank([(-cols[j], tuple(sorted((m[i][j], -rows[i]) for i in col_nz[j]))) for j in range(len(cols))])
        if len(set(rows)) == n_rows and len(set(cols)) == n_cols:
            return rows, cols


CANONICAL_MAX_LEAVES = 256
_canonical_memo: dict[bytes, np.ndarray] = {}


def canonical_matrix(matrix: np.ndarray) -> np.ndarray:
    """The canonical form of one padded matrix under row and column permutations.

    Individualisation-refinement, as graph canonisers (nauty) do it: refine colours; while a class of
    present rows (else columns) has several members, try each member as the first of its class and
    refine again; every branch ends in a full order, and the canonical form is the lexicographically
    largest matrix over all branches (present rows and columns first, padding last). The result depends
    only on the manifold's matrix up to permutation. Matrices with very many symmetric branches stop after
    ``CANONICAL_MAX_LEAVES`` (1 of the 7868 in the original list) and may then keep a tie.
    """
    key = np.ascontiguousarray(matrix, dtype=np.int8).tobytes()
    if key in _canonical_memo:
        return _canonical_memo[key]
    n_rows, n_cols = matrix.shape
    m = np.asarray(matrix).astype(int).tolist()
    row_nz = [[j for j in range(n_cols) if m[i][j]] for i in range(n_rows)]
    col_nz = [[i for i in range(n_rows) if m[i][j]] for j in range(n_cols)]
    best: list = [None, 0]  # best matrix so far, leaves visited

    def cell(colours: list[int], nz: list) -> list[int] | None:
        classes: dict[int, list[int]] = {}
        for i, c in enumerate(colours):
            if nz[i]:  # padding rows and columns are alike and need no order
                classes.setdefault(c, []).append(i)
        split = [v for v in classes.values() if len(v) > 1]
        return min(split, key=lambda v: (len(v), colours[v[0]])) if split else None

    def search(rows: list[int], cols: list[int]) -> None:
        if best[1] >= CANONICAL_MAX_LEAVES:
            return
        rows, cols = _refine(m, rows, cols, row_nz, col_nz)
        if (members := cell(rows, row_nz)) is not None:
            for v in members:
                search(_rank([(-c, i == v) for i, c in enumerate(rows)]), cols)
        elif (members := cell(cols, col_nz)) is not None:
            for v in members:
                search(rows, _rank([(-c, j == v) for j, c in enumerate(cols)]))
        else:
            best[1] += 1
            row_order = sorted(range(n_rows), key=rows.__getitem__)
            col_order = sorted(range(n_cols), key=cols.__getitem__)
            candidate = tuple(tuple(m[i][j] for j in col_order) for i in row_order)
            if best[0] is None or candidate > best[0]:
                best[0] = candidate

    search(
        _rank([(sum(r), tuple(sorted(r, reverse=True))) for r in m]),
        _rank([(sum(c), tuple(sorted(c, reverse=True))) for c in zip(*m)]),
    )
    out = np.array(best[0], dtype=np.asarray(matrix).dtype)
    _canonical_memo[key] = out
    return out


def canonical(x: np.ndarray) -> np.ndarray:
    """``canonical_matrix`` of each padded matrix (N, rows, cols): one representative per manifold."""
    return np.stack([canonical_matrix(m) for m in x]) if len(x) else np.array(x, copy=True)


def permute(x: np.ndarray, seed: int) -> np.ndarray:
    """Each padded matrix with its rows and its columns (padding included) in a random order."""
    rng = np.random.default_rng(seed)
    n, r, c = x.shape[:3]
    rows = np.argsort(rng.random((n, r)), axis=1)
    cols = np.argsort(rng.random((n, c)), axis=1)
    out = np.take_along_axis(x, rows.reshape(n, r, 1, *([1] * (x.ndim - 3))), axis=1)
    return np.take_along_axis(out, cols.reshape(n, 1, c, *([1] * (x.ndim - 3))), axis=2)


def model_inputs(x: np.ndarray, *, canonical_form: bool = False, features: Sequence[str] = ()) -> np.ndarray:
    """What a network reads: the padded matrices (N, rows, cols), optionally in canonical order, and with
    exact invariants as extra channels (N, rows, cols, channels) on the present entries:
    ``euler`` the same on every entry, ``c2`` (c2.J_i) along row i, ``koszul`` two channels: h^1(X, O_X(q_j))
    along column j and (n_i + 1) h^1(X, O_X(J_i)) along row i (``koszul_counts``); ``koszul_share`` three: the
    same counts divided among their column's (row's) present entries, and 1/columns on each, so that summed over
    the matrix they give h^1(N), h^1(V) and the number of rows, and h11 = rows + h^1(N) - h^1(V)
    (``invariants.h11_koszul``) is a linear function of the input. All follow any permutation.
    """
    if not canonical_form and not features:
        return np.asarray(x)  # an imported 4-fold list stays int8 (0.3 GB, not 1.2): batches are cast when made
    x = np.asarray(x, dtype=np.float32)
    if canonical_form:
        x = canonical(x)
    if not features:
        return x
    euler, c2 = exact_invariants(x)
    rows, cols = _valid(x)
    present = (rows[:, :, None] & cols[:, None, :]).astype(np.float32)
    channels = [x]
    for name in features:
        if name == "euler":
            channels.append(present * (euler[:, None, None] / FEATURE_SCALE["euler"]))
        elif name == "c2":
            channels.append(present * (c2[:, :, None] / FEATURE_SCALE["c2"]))
        elif name == "koszul":
            normal, ambient = koszul_counts(x)
            channels.append(present * (normal[:, None, :] / FEATURE_SCALE["koszul"]))
            channels.append(present * (ambient[:, :, None] / FEATURE_SCALE["koszul"]))
        elif name == "koszul_share":  # the same counts shared out over their row or column: sums, not copies
            normal, ambient = koszul_counts(x)
            m, k = (np.maximum(v.sum(axis=1), 1)[:, None, None] for v in (rows, cols))
            channels.append(present * (normal[:, None, :] / m / FEATURE_SCALE["koszul"]))
            channels.append(present * (ambient[:, :, None] / k / FEATURE_SCALE["koszul"]))
            channels.append(present / k)
        else:
            raise CicyError(f"unknown input feature {name!r}: choose from {', '.join(FEATURES)}")
    return np.stack(channels, axis=-1).astype(np.float32)
