"""Overfitting comparison: train vs validation curves of chosen runs, read back from MLflow, side by side.

A reference is a run id, a parent run id (its child runs: a recipe, a study or a bias-variance run), an
experiment name (its runs), a run name, or an Optuna study name (its trials' runs). The table gives the
final train, validation and test accuracy and the train-validation gap at the best epoch, the epoch of
lowest validation loss (the one early stopping would keep).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import plotly.graph_objects as go

from ..errors import CicyError
from ..reporting import weights
from ..reporting.curves import run_curves
from ..reporting.html import Report, Section
from ..tracking import links

CURVES = {"loss": "epoch_loss", "val_loss": "epoch_val_loss", "accuracy": "epoch_accuracy", "val_accuracy": "epoch_val_accuracy"}
REPORT_EXPERIMENT = "cicy-search-reports"


def _has_curves(run) -> bool:
    return "epoch_loss" in run.data.metrics


def _children(client, run) -> list:
    found = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'", order_by=["attributes.start_time ASC"]
    )
    return [r for r in found if _has_curves(r)]


def _study_runs(client, name: str, storage: str | None) -> list | None:
    from ..search.study import load

    try:
        study = load(name, storage=storage)
    except CicyError:
        return None
    ids = links.run_ids(study, study.trials).values()
    return [r for r in (_get_run(client, i) for i in ids if i) if r is not None and _has_curves(r)]


def _get_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def resolve_runs(client, refs: list[str], *, storage: str | None = None) -> list:
    """MLflow runs with per-epoch curves for each reference, in the order given; unknown ones are a CicyError."""
    runs: list = []
    for ref in refs:
        run = _get_run(client, ref)
        if run is not None:
            found = [run] if _has_curves(run) else _children(client, run)
        elif (exp := client.get_experiment_by_name(ref)) is not None:
            found = [r for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]) if _has_curves(r)]
        else:
            exps = [e.experiment_id for e in client.search_experiments()]
            named = []
            if exps and "'" not in ref:
                named = client.search_runs(exps, filter_string=f"attributes.run_name = '{ref}'", order_by=["attributes.start_time DESC"])
            if named:
                found = [named[0]] if _has_curves(named[0]) else _children(client, named[0])
            else:
                found = _study_runs(client, ref, storage)
                if found is None:
                    raise CicyError(f"unknown run, experiment or study {ref!r}")
        if not found:
            raise CicyError(f"{ref!r} has no runs with per-epoch curves (epoch_loss)")
        runs += [r for r in found if r.info.run_id not in {x.info.run_id for x in runs}]
    return runs


def history(client, run_id: str) -> dict[str, list[float]]:
    """A run's per-epoch curves as a Keras-style history (``loss``, ``val_loss``, ``accuracy``, ...)."""
    out = {}
    for key, metric in CURVES.items():
        points = sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
        if points:
            out[key] = [m.value for m in points]
    return out


def labels(runs) -> list[str]:
    """Run names, made unique with a short run id where two runs share one."""
    names = [r.info.run_name or r.data.params.get("name") or r.info.run_id[:8] for r in runs]
    return [f"{n} ({r.info.run_id[:6]})" if names.count(n) > 1 else n for n, r in zip(names, runs)]


def summary(runs, histories: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for label, run in zip(histories, runs):
        h, m = histories[label], run.data.metrics
        val_loss = h.get("val_loss", [])
        best = min(range(len(val_loss)), key=val_loss.__getitem__) if val_loss else None

        def at(key):
            values = h.get(key, [])
            return values[best] if best is not None and best < len(values) else float("nan")

        rows.append(
            {
                "run": label,
                "family": run.data.params.get("model.family", ""),
                "n_params": int(m["n_params"]) if "n_params" in m else None,
                "epochs": len(h.get("loss", [])),
                "train_accuracy": m.get("train_accuracy", float("nan")),
                "val_accuracy": m.get("val_accuracy", float("nan")),
                "test_accuracy": m.get("test_accuracy", float("nan")),
                "best_epoch": best,
                "train_acc_at_best": at("accuracy"),
                "val_acc_at_best": at("val_accuracy"),
                "gap_at_best": at("accuracy") - at("val_accuracy"),
                "run_id": run.info.run_id,
            }
        )
    return pd.DataFrame(rows)


@dataclass
class CompareResult:
    table: pd.DataFrame
    figures: list[go.Figure]  # one per run, in the table's order
    html: Path
    run_id: str | None
    png_note: str | None
    report: Report | None = None


def report_compare(
    client,
    refs: list[str],
    *,
    out: str | Path | None = None,
    storage: str | None = None,
    log_to: str | None = None,
    experiment: str = REPORT_EXPERIMENT,
    title: str = "Overfitting comparison",
    png: bool = True,
    extra_sections: Sequence[Section] = (),
) -> CompareResult:
    """Build the comparison report for ``refs``, write it and log it to MLflow.

    Args:
        log_to: the run that receives the report (a recipe's parent run); by default a new run in
            ``experiment`` tagged ``report=compare``.
        extra_sections: added after the table (a recipe's weight histograms, ``weights.sections``).
    """
    runs = resolve_runs(client, refs, storage=storage)
    histories = {label: history(client, r.info.run_id) for label, r in zip(labels(runs), runs)}
    table = summary(runs, histories)
    figures = [run_curves(label, h) for label, h in histories.items()]
    report = Report(
        title,
        intro="Train (solid) and validation (dashed) loss and accuracy per epoch, read from MLflow, one panel per "
        "run, each on its own scale. Losses of classification (cross-entropy) and regression (MSE) heads are on "
        "different scales. The best epoch is the one of lowest validation loss; the gap is train minus validation "
        "accuracy there. Study trials log no test scores (the test split is not used for selection).",
    )
    report.add("Learning curves", figures=figures)
    report.add("Accuracy and train-validation gap", table=table)
    report.sections.extend(extra_sections)
    saved = report.save(out or Path("reports") / "compare.html", png=png)
    from .. import tracking

    if log_to is None:
        with tracking.Run.start(client, experiment, run_name="compare", tags={"report": "compare"}) as run:
            run.log_params({"runs": ",".join(r.info.run_id for r in runs)[:6000]})
            log_to = run.run_id
            saved.log(client, log_to, "compare")
    else:
        saved.log(client, log_to, "compare")
    return CompareResult(table, figures, saved.html, log_to, saved.png_note, report)


def load_recipe(path: str | Path) -> dict:
    """A recipe: ``name``, ``experiment``, ``override`` (merged into every config) and ``runs`` (config names or paths)."""
    from ..config import load_file

    path = Path(path)
    raw = load_file(path)
    unknown = sorted(set(raw) - {"name", "experiment", "override", "runs", "description"})
    if unknown:
        raise CicyError(f"{path}: unknown key {unknown[0]!r} (allowed: description, experiment, name, override, runs)")
    runs = raw.get("runs")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, str) for r in runs):
        raise CicyError(f"{path}: runs: expected a list of config names or paths")
    override = raw.get("override") or {}
    if not isinstance(override, dict):
        raise CicyError(f"{path}: override: expected a mapping")
    return {"name": raw.get("name", path.stem), "experiment": raw.get("experiment", f"cicy-search-{path.stem}"), "override": override, "runs": runs, "base": path.parent}


def recipe_run(recipe: dict, ref: str, *, epochs: int | None = None, limit: int | None = None) -> dict:
    """The resolved config ``ref`` of a recipe (beside the recipe file, else a path or shipped name) with the
    recipe's override, and ``--epochs`` / ``--limit`` on top."""
    from ..config import load_config, set_path

    override = copy.deepcopy(recipe["override"])
    for key, value in (("train.epochs", epochs), ("data.limit", limit)):
        if value is not None:
            set_path(override, key, value)
    return load_config(ref, override, folder=recipe["base"])


def recipe_configs(recipe: dict, *, epochs: int | None = None, limit: int | None = None) -> list[dict]:
    return [recipe_run(recipe, ref, epochs=epochs, limit=limit) for ref in recipe["runs"]]


def run_recipe(
    path: str | Path,
    client,
    *,
    epochs: int | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    png: bool = True,
    progress: bool = True,
) -> CompareResult:
    """Train every run of a recipe under one parent run, then build and log their comparison report."""
    from .. import tracking
    from ..tracking.runner import run_tracked

    recipe = load_recipe(path)
    configs = recipe_configs(recipe, epochs=epochs, limit=limit)
    with tracking.Run.start(client, recipe["experiment"], run_name=recipe["name"], tags={"report": "recipe", "recipe": recipe["name"]}) as parent:
        parent.log_params({"recipe": recipe["name"], "runs": ",".join(c["name"] for c in configs)})
        ids, models = [], {}
        for i, cfg in enumerate(configs):
            if progress:
                print(f"[{i + 1}/{len(configs)}] training {cfg['name']} ({cfg['model']['family']}, {cfg['train']['epochs']} epochs)")
            tracked = run_tracked(
                cfg, mlflow_client=client, experiment=recipe["experiment"], parent_run_id=parent.run_id, progress=progress,
                parent_inputs=True,
            )
            ids.append(tracked.run_id)
            models[cfg["name"] if cfg["name"] not in models else f"{cfg['name']} ({i + 1})"] = tracked.result.model
            weights.log_fractions(client, tracked.run_id, tracked.result.model)
        result = report_compare(
            client, ids, out=out or Path("reports") / f"{recipe['name']}.html", log_to=parent.run_id, title=f"Overfitting comparison: {recipe['name']}", png=png,
            extra_sections=weights.sections(models),
        )
        return result
