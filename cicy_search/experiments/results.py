"""The results table: every model the platform offers, trained over split seeds and train fractions, from one file.

A table file (``recipes/results.yaml``) lists rows (a run config plus overrides) and the cells to fill: train
fractions x seeds. Each cell is one tracked MLflow run in the table's experiment, tagged with its row,
fraction and seed, so the table is rebuilt from MLflow at any time and an interrupted run resumes: a cell
that already has a FINISHED run for the same config is not trained again. Model selection inside a cell
uses the validation split only (early stopping restores the best validation loss); the test split is read
once, when the finished model is scored.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from ..config import load_config, load_file, merge, resolve
from ..errors import CicyError

TABLE_KEYS = {"name", "experiment", "description", "fractions", "seeds", "val", "override", "rows"}
ROW_KEYS = {"name", "config", "override", "estimate", "fractions", "note"}
#: The columns read from each cell's run (absent ones stay empty).
COLUMNS = {
    "h11": "test_h11_accuracy",
    "h21": "test_h21_accuracy",
    "h21_physics": "test_h21_physics_accuracy",
    "h11_permuted": "test_permuted_h11_accuracy",
    "h21_permuted": "test_permuted_h21_accuracy",
    "val_h11": "val_h11_accuracy",
}


def load_table(path: str | Path) -> dict:
    """Read and check a table file; every cell's config is resolved here, so a mistake stops before training."""
    path = Path(path)
    raw = load_file(path)
    unknown = sorted(set(raw) - TABLE_KEYS)
    if unknown:
        raise CicyError(f"{path}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(TABLE_KEYS))})")
    rows = raw.get("rows")
    if not isinstance(rows, list) or not rows:
        raise CicyError(f"{path}: rows: expected a list of rows")
    table = {
        "name": raw.get("name", path.stem),
        "experiment": raw.get("experiment", f"cicy-search-{path.stem}"),
        "fractions": raw.get("fractions", [0.8]),
        "seeds": raw.get("seeds", [0, 1, 2]),
        "val": raw.get("val", 0.1),
        "rows": [],
    }
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "name" not in row or "config" not in row:
            raise CicyError(f"{path}: rows[{i}]: expected a mapping with name and config")
        bad = sorted(set(row) - ROW_KEYS)
        if bad:
            raise CicyError(f"{path}: rows[{i}]: unknown key {bad[0]!r} (allowed: {', '.join(sorted(ROW_KEYS))})")
        if not isinstance(row["name"], str) or "," in row["name"]:
            raise CicyError(f"{path}: rows[{i}]: name {row['name']!r}: expected a text without commas (--rows separates names with them)")
        if any(r["name"] == row["name"] for r in table["rows"]):
            raise CicyError(f"{path}: rows[{i}]: a second row named {row['name']!r}")
        override = merge(raw.get("override") or {}, {**(row.get("override") or {}), "name": row["name"]})
        config = load_config(row["config"], override, folder=path.parent)
        table["rows"].append(
            {"name": row["name"], "config": config, "estimate": bool(row.get("estimate", False)),
             "fractions": row.get("fractions", table["fractions"]), "note": row.get("note", "")}
        )
    return table


def cell_config(row: dict, fraction: float, seed: int, val: float) -> dict:
    """The resolved config of one cell: the row's config on a split with this train fraction and seed."""
    split = {"train": fraction, "val": val, "test": round(1.0 - fraction - val, 6), "seed": seed}
    return resolve(merge(row["config"], {"seed": seed, "data": split}))


#: Config keys added after tables were trained, at the value that changes nothing: left out of a cell's digest
#: there, so that cells trained before the key existed still count as done.
NEUTRAL = {("train", "ensemble"): 1, ("model", "rows_offset"): False}


def _digest(config: dict) -> str:
    absent = object()
    config = {
        name: {k: v for k, v in value.items() if NEUTRAL.get((name, k), absent) != v} if isinstance(value, dict) else value
        for name, value in config.items()
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def cells(table: dict, rows: list[str] | None = None):
    for row in table["rows"]:
        if rows and row["name"] not in rows:
            continue
        for fraction in row["fractions"]:
            for seed in table["seeds"]:
                yield row, fraction, seed


def run_table(table: dict, client, *, rows: list[str] | None = None, progress=print) -> list[str]:
    """Train every missing cell (resuming: cells with a FINISHED run of the same config are skipped)."""
    from ..tracking.runner import run_tracked

    unknown = [name for name in rows or () if name not in {row["name"] for row in table["rows"]}]
    if unknown:
        raise CicyError(f"--rows: no row named {unknown[0]!r} in table {table['name']!r}")
    todo = list(cells(table, rows))
    done = {r.data.tags.get("table_digest") for r in _runs(client, table) if r.info.status == "FINISHED"}
    ran = []
    for k, (row, fraction, seed) in enumerate(todo):
        cfg = cell_config(row, fraction, seed, table["val"])
        digest = _digest(cfg)
        label = f"[{k + 1}/{len(todo)}] {row['name']} train={fraction:g} seed={seed}"
        if digest in done:
            progress(f"{label}: done already")
            continue
        progress(f"{label}: training {cfg['model']['family']} for up to {cfg['train']['epochs']} epochs")
        start = time.perf_counter()
        tracked = run_tracked(
            cfg, mlflow_client=client, experiment=table["experiment"], run_name=f"{row['name']}/{fraction:g}/{seed}",
            tags={"table": table["name"], "table_row": row["name"], "table_fraction": str(fraction),
                  "table_seed": str(seed), "table_digest": digest, "table_estimate": str(row["estimate"]).lower()},
            log_model=False,
        )
        m = tracked.result.metrics
        scores = ", ".join(f"test {t} {m[f'test_{t}_accuracy']:.4f}" for t in cfg["data"]["targets"] if f"test_{t}_accuracy" in m)
        progress(f"{label}: {scores or 'no test accuracy'}, {time.perf_counter() - start:.0f} s")
        ran.append(tracked.run_id)
    return ran


def _runs(client, table: dict, where: str = "") -> list:
    exp = client.get_experiment_by_name(table["experiment"])
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.table = '{table['name']}'{where}", max_results=5000)


def cell_run(client, table: dict, row: dict, fraction: float, seed: int):
    """The FINISHED run of one cell of ``table`` (row, train fraction, split seed) as it is configured now, or None."""
    digest = _digest(cell_config(row, fraction, seed, table["val"]))
    return next(iter(_runs(client, table, f" and tags.table_digest = '{digest}' and attributes.status = 'FINISHED'")), None)


def summarise(table: dict, client) -> list[dict]:
    """One record per (row, fraction): mean and sd over seeds of each column, epochs, seconds, parameters."""
    runs = [r for r in _runs(client, table) if r.info.status == "FINISHED"]
    wanted = {_digest(cell_config(row, f, s, table["val"])): (row, f, s) for row, f, s in cells(table)}
    grouped: dict[tuple[str, float], list] = {}
    for r in runs:
        cell = wanted.get(r.data.tags.get("table_digest"))
        if cell:
            grouped.setdefault((cell[0]["name"], cell[1]), []).append(r)
    records = []
    for row in table["rows"]:
        for fraction in row["fractions"]:
            found = grouped.get((row["name"], fraction), [])
            rec = {"row": row["name"], "fraction": fraction, "seeds": len(found), "estimate": row["estimate"], "note": row["note"]}
            model = row["config"]["model"]
            rec["model"] = model["family"]
            columns = dict(COLUMNS)
            if row["config"]["data"].get("physics"):  # its h21 is h11 - euler/2: the physics column, not the matrix one
                columns.update(h21=None, h21_physics="test_h21_accuracy")
            for col, metric in columns.items():
                values = [r.data.metrics[metric] for r in found if metric in r.data.metrics]
                rec[col] = (float(np.mean(values)), float(np.std(values))) if values else None
            for key, metric in (("epochs", "epochs_run"), ("seconds", "train_seconds"), ("params", "n_params")):
                values = [r.data.metrics[metric] for r in found if metric in r.data.metrics]
                rec[key] = float(np.mean(values)) if values else None
            rec["device"] = sorted({r.data.tags.get("device", "?") for r in found})
            records.append(rec)
    return records


def markdown(records: list[dict]) -> str:
    """The README's table: accuracy as mean ± sd over seeds, in percent."""

    def pct(v):
        return "" if v is None else f"{100 * v[0]:.2f} ± {100 * v[1]:.2f}"

    head = (
        "| model | train | seeds | h11 | h21 (matrix) | h21 (physics) | h11 permuted | epochs | s/run | device | params |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in records:
        name = r["row"] + (" (estimate)" if r["estimate"] else "")
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
        params = "" if r["params"] is None else f"{int(r['params']):,}"
        epochs = "" if r["epochs"] is None else f"{r['epochs']:.0f}"
        lines.append(
            f"| {name} | {int(round(100 * r['fraction']))}% | {r['seeds']} | {pct(r['h11'])} | {pct(r['h21'])} | "
            f"{pct(r['h21_physics'])} | {pct(r['h11_permuted'])} | {epochs} | {seconds} | {', '.join(r['device'])} | {params} |"
        )
    return head + "\n".join(lines) + "\n"


def write(records: list[dict], out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(records, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(records))
    return out.with_suffix(".json"), out.with_suffix(".md")
