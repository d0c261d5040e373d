"""Import a CICY 4-fold list of the real size (921,497 records): seconds and peak memory; then one epoch's peak memory.

The published list cannot be fetched here, so a list of the same size is generated in its format: a pool of
distinct random configuration matrices (1 to 16 rows, about 8.5 on average, up to 20 columns, every column of
degree >= 2, the extra dimensions sum (n_i - 1) modelled on the shipped 3-fold list's, one to two higher), each with its exact Euler number and synthetic Hodge numbers that satisfy the index relations,
repeated with fresh IDs, plus 1.7 % direct products (a torus times a shipped CICY 3-fold) as in the real list.
Every record is still parsed, validated and has its Euler number computed: nothing is cached across repeats.
Each measurement runs in a fresh child process, whose peak resident memory (ru_maxrss) is reported.

    python -m bench.cicy4 [--records 921497] [--pool 20000] [--epoch] [--workdir DIR]
    python -m bench.cicy4 --epoch-on DIR/cicy4.npz      # the epoch alone, on a file imported before
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .throughput import RESULTS, machine

REAL_SIZE = 921_497
# How many of the shipped 3-folds have sum (n_i - 1) = 0, 1, ..., 6; a 4-fold has up to 8, drawn as this plus 0 to 2.
EXTRA_3FOLD = np.array([32, 173, 869, 2061, 2675, 1600, 480]) / 7890
TORI = ([[3]], [[2, 2]], [[2], [2]])  # elliptic curves: the torus factor of a product (Euler number 0)


def random_configuration(rng: np.random.Generator, rows: int, extra: int) -> np.ndarray | None:
    """A random CY 4-fold configuration: ``rows`` factors P^{n_i}, sum (n_i - 1) = ``extra``, column degrees >= 2.

    None when that shape has no room (fewer than 1 or more than 20 columns) or the draw fails.
    """
    dims = np.ones(rows, dtype=np.int64)
    np.add.at(dims, rng.integers(rows, size=extra), 1)
    k = int(dims.sum()) - 4
    if not 1 <= k <= 20:
        return None
    for _ in range(20):
        q = np.zeros((rows, k), dtype=np.int64)
        room = dims + 1
        for j in range(k):  # two units per column first: no hyperplane-only equations
            for _ in range(2):
                free = np.flatnonzero(room)
                if len(free) == 0:
                    break
                i = rng.choice(free)
                q[i, j] += 1
                room[i] -= 1
        for i in np.flatnonzero(room):  # the rest of each row, mostly onto columns it already meets
            for _ in range(room[i]):
                met = np.flatnonzero(q[i])
                q[i, rng.choice(met) if len(met) and rng.random() < 0.5 else rng.integers(k)] += 1
        if (q.sum(axis=1) == dims + 1).all() and (q.sum(axis=0) >= 2).all():
            return q
    return None


def synthetic_records(n: int, seed: int = 0, products: float = 0.017) -> list[dict]:
    """``n`` distinct valid records: exact Euler numbers, synthetic Hodge numbers that satisfy the relations.

    h11 = number of rows (as for favourable matrices); h21 small, h31 from the Euler relation, h22 from the
    other. Products (block-diagonal: a torus and a shipped 3-fold) have Euler number 0 and Null Hodge numbers.
    """
    from cicy_search import cicy4, data, invariants

    rng = np.random.default_rng(seed)
    seen: set[bytes] = set()
    matrices = []
    n_products = int(round(products * n))
    x3 = data.load("original").x
    while len(matrices) < n - n_products:
        rows = int(np.clip(round(rng.normal(8.5, 2.5)), 1, 16))
        q = random_configuration(rng, rows, min(8, int(rng.choice(7, p=EXTRA_3FOLD)) + int(rng.integers(0, 3))))
        if q is None or q.tobytes() in seen:
            continue
        seen.add(q.tobytes())
        z = np.zeros((1, *cicy4.PADDING), dtype=np.int8)
        z[0, : q.shape[0], : q.shape[1]] = q
        if cicy4._connected(z, np.array([q.shape[0]]))[0]:
            matrices.append(q)
    euler = invariants.euler_numbers(matrices)
    out = []
    for q, e in zip(matrices, euler):
        h11, h21 = q.shape[0], int(rng.integers(0, 4))
        h31, h22 = cicy4.derived_hodge(h11, h21, int(e))
        if h31 < 0:
            h21, h31 = h21 - h31, 0
            h22 = cicy4.relations(h11, h21, h31)[1]
        out.append({"matrix": q.tolist(), "euler": int(e), "product": False, "hodge": (h11, h21, h31, h22)})
    while len(out) < n:
        torus = np.array(TORI[rng.integers(len(TORI))])
        m3 = x3[rng.integers(len(x3))]
        m3 = m3[m3.sum(axis=1) > 0][:, m3.sum(axis=0) > 0].astype(np.int64)
        q = np.zeros((torus.shape[0] + m3.shape[0], torus.shape[1] + m3.shape[1]), dtype=np.int64)
        q[: torus.shape[0], : torus.shape[1]] = torus
        q[torus.shape[0] :, torus.shape[1] :] = m3
        if q.shape[0] <= 16 and q.shape[1] <= 20:
            out.append({"matrix": q.tolist(), "euler": 0, "product": True, "hodge": None})
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def _text(ident: int, r: dict) -> str:
    m = r["matrix"]
    rows = ", ".join("{" + ", ".join(map(str, row)) + "}" for row in m)
    hodge = ", ".join(map(str, r["hodge"])) if r["hodge"] is not None else "Null, Null, Null, Null"
    return f"{{{ident}, {len(m)}, {len(m[0])}, {{{rows}}}, {r['euler']}, {r['product']}, {hodge}, {'Null' if r['product'] else True}}}"


def write_list(records: list[dict], path: str | Path, total: int | None = None) -> Path:
    """Write records in the published format (``{rec, \\n rec, ...}``), cycling through them up to ``total``."""
    path = Path(path)
    total = len(records) if total is None else total
    with open(path, "w") as f:
        f.write("{")
        for ident in range(1, total + 1):
            f.write(_text(ident, records[(ident - 1) % len(records)]) + (", \n " if ident < total else "}\n"))
    return path


# Peak memory is the child's VmHWM: ru_maxrss would also count the parent's pages copied at fork, before exec.
PEAK = """
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


def cpu_s():  # the machine may be shared: CPU seconds next to wall seconds
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
"""

CHILD_IMPORT = PEAK + """
import json, sys
from cicy_search import cicy4
r = cicy4.import_list(sys.argv[1], sys.argv[2])
print(json.dumps({"records": r.records, "products": r.products, "seconds": r.seconds, "cpu_s": cpu_s(), "peak_rss_mb": peak_mb()}))
"""

CHILD_EPOCH = PEAK + """
import json, sys, time
from cicy_search.config import resolve
from cicy_search.training import fit, prepare
config = resolve({"data": {"dataset": sys.argv[1], "targets": ["h11", "h21", "h31", "h22"]},
                  "model": {"family": "dense", "head": "regression"}, "train": {"epochs": 1, "batch_size": 512}})
before = peak_mb()
start = time.perf_counter()
prepared = prepare(config)
after_prepare = peak_mb()
prepared_s = time.perf_counter() - start
result = fit(config, prepared)
print(json.dumps({"n_train": int(len(prepared.x["train"])), "x_dtype": str(prepared.x["train"].dtype),
                  "prepare_s": prepared_s, "epoch_s": result.seconds, "peak_rss_mb_before_data": before,
                  "peak_rss_mb_after_prepare": after_prepare,
                  "peak_rss_mb": peak_mb(), "cpu_s": cpu_s(),
                  "val_metrics": {k: v for k, v in result.metrics.items() if k.startswith("val_")}}))
"""


def _child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.cicy4", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=REAL_SIZE)
    parser.add_argument("--pool", type=int, default=20_000, help="distinct configurations, repeated to --records")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epoch", action="store_true", help="also train one epoch on the imported file (peak memory)")
    parser.add_argument("--workdir", default=None, help="write (and keep) cicy4list.txt and cicy4.npz here instead of a temporary folder")
    parser.add_argument("--epoch-on", default=None, metavar="NPZ", help="only the epoch, on this imported file; added to --out")
    parser.add_argument("--out", default=str(RESULTS / "cicy4.json"))
    args = parser.parse_args(argv)
    import time

    if args.epoch_on:
        result = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {"machine": machine(False)}
        result["epoch"] = _child(CHILD_EPOCH, args.epoch_on)
        print(json.dumps(result["epoch"], indent=1))
        Path(args.out).write_text(json.dumps(result, indent=1))
        return result

    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.workdir or scratch
        start = time.perf_counter()
        pool = synthetic_records(min(args.pool, args.records), args.seed)
        text = write_list(pool, Path(tmp) / "cicy4list.txt", args.records)
        generated = time.perf_counter() - start
        npz = Path(tmp) / "cicy4.npz"
        result = {"machine": machine(False), "records": args.records, "pool": len(pool), "generate_s": generated,
                  "text_mb": text.stat().st_size / 2**20, "import": _child(CHILD_IMPORT, str(text), str(npz)),
                  "npz_mb": npz.stat().st_size / 2**20}
        shapes = np.array([(len(r["matrix"]), len(r["matrix"][0])) for r in pool])
        result["pool_shapes"] = {"rows_mean": float(shapes[:, 0].mean()), "cols_mean": float(shapes[:, 1].mean()),
                                 "max": [int(shapes[:, 0].max()), int(shapes[:, 1].max())]}
        if args.epoch:
            result["epoch"] = _child(CHILD_EPOCH, str(npz))
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
