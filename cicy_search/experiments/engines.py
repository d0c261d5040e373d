"""Optuna against keras-tuner on equal budgets of training epochs (``study compare-engines``).

Three engines search the study's space, each ``seeds`` times (study seed + k; the data split stays the same):

- ``optuna-tpe``: Optuna's TPE sampler with the study's sampler settings and its pruner;
- ``kt-hyperband``: keras-tuner's Hyperband (``max_epochs`` = the study's ``train.epochs``, factor 3);
- ``kt-bayesian``: keras-tuner's Bayesian optimisation (as many random start trials as TPE's ``n_startup_trials``).

keras-tuner cannot apply Optuna's pruner, so its engines run without it (Hyperband is its own early stopping).
Every trial of every engine is trained by ``Objective.train`` (the one training path) and logged as an MLflow run
under its engine's run, under the comparison's run (experiment ``STUDY-compare-engines``). One ``EpochBudget``
per engine and seed counts the epochs actually trained (a pruned trial's and a continued Hyperband trial's
included) and stops training at exactly ``epochs_budget``: the trial that reaches it ends there, with its model
of that epoch, and no trial starts after it. So every engine spends the same number of epochs.

The winner of each engine and seed is its best trial by the study's (validation) objective; its logged model is
then scored on the test split, once. The report draws the best objective so far against epochs spent and against
wall time (mean and ± 1 sd over seeds) and tabulates the winners.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .. import tracking
from ..config import dump_yaml
from ..errors import CicyError
from ..search.objective import Objective
from ..reporting.html import Report
from ..search.studyfile import StudySpec
from ..tracking import links

ENGINES = {"optuna-tpe": None, "kt-hyperband": "hyperband", "kt-bayesian": "bayesian"}  # engine: keras-tuner algorithm
COLORS = {"optuna-tpe": "#1f77b4", "kt-hyperband": "#d62728", "kt-bayesian": "#2ca02c"}
MAX_SEEDS = 100
MAX_EPOCHS = 1_000_000
GIVE_UP_AFTER = 3  # Optuna trials failing in a row: the engine cannot run this study


class EpochBudget(keras.callbacks.Callback):
    """Counts the epochs trained by every trial it is given to; the epoch that reaches ``limit`` is the last."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.spent, self.start = limit, 0, time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.spent += 1
        if self.spent >= self.limit:
            self.model.stop_training = True

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.limit

    def seconds(self) -> float:
        return time.perf_counter() - self.start


@dataclass
class EngineRun:
    """One engine and seed: its trials in the order they ended, each with the budget spent up to its end."""

    engine: str
    seed: int
    run_id: str
    trials: list[dict] = field(default_factory=list)  # number, state, value, epochs, seconds, run_id
    epochs_spent: int = 0
    seconds: float = 0.0
    test_value: float = math.nan

    def winner(self, direction: str) -> dict | None:
        done = [t for t in self.trials if t["value"] is not None]
        if not done:
            return None
        sign = 1 if direction == "maximize" else -1
        return max(done, key=lambda t: (sign * t["value"], -done.index(t)))  # the earliest of equal values


def check(spec: StudySpec, epochs_budget: int, seeds: int) -> None:
    """One ``CicyError`` line for what cannot be compared, before anything is trained or logged."""
    from ..search.tuner import check as check_tuner

    if isinstance(epochs_budget, bool) or not isinstance(epochs_budget, int) or not 1 <= epochs_budget <= MAX_EPOCHS:
        raise CicyError(f"--epochs-budget: expected an integer from 1 to {MAX_EPOCHS:,}, got {epochs_budget!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise CicyError(f"--seeds: expected an integer from 1 to {MAX_SEEDS}, got {seeds!r}")
    if "svm" in spec.families:
        raise CicyError("model.family svm: an SVM trains no epochs, so there is no epoch budget to share")
    if spec.sampler["name"] != "tpe":
        raise CicyError(f"sampler: compare-engines runs Optuna's TPE; this study's sampler is {spec.sampler['name']}")
    for algorithm in ("hyperband", "bayesian"):
        check_tuner(without_pruner(spec), algorithm)


def without_pruner(spec: StudySpec) -> StudySpec:
    return dataclasses.replace(spec, pruner={"name": "none"})


def seeded(spec: StudySpec, k: int) -> StudySpec:
    """The study with seed + k: other trial seeds and another sampler seed (the data split stays)."""
    sampler = dict(spec.sampler)
    if isinstance(sampler.get("seed"), int):
        sampler["seed"] += k
    return dataclasses.replace(spec, seed=spec.seed + k, sampler=sampler)


def run_optuna(spec: StudySpec, objective: Objective, budget: EpochBudget, run: EngineRun) -> None:
    import optuna

    study = optuna.create_study(sampler=spec.sampler_object(), pruner=spec.pruner_object(), directions=spec.directions)
    failed: list[str] = []

    def after(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        state = {"COMPLETE": "complete", "PRUNED": "pruned"}.get(t.state.name, "failed")
        run.trials.append({"number": t.number, "state": state, "value": t.value if state == "complete" else None,
                           "epochs": budget.spent, "seconds": budget.seconds(), "run_id": None})
        failed[:] = [*failed, t.user_attrs.get("fail_reason", "no reason recorded")] if state == "failed" else []
        if budget.exhausted or len(failed) >= GIVE_UP_AFTER:
            study.stop()

    study.optimize(objective, callbacks=[after], catch=(Exception,))
    if len(failed) >= GIVE_UP_AFTER:
        raise CicyError(f"optuna-tpe stopped: the last {GIVE_UP_AFTER} trials failed ({failed[-1]})")
    objective.uploader.flush()  # the trials' links to their runs are written in the background
    ids = links.run_ids(study, study.get_trials(deepcopy=False))
    for t in run.trials:
        t["run_id"] = ids.get(t["number"])


def run_keras_tuner(spec: StudySpec, algorithm: str, objective: Objective, budget: EpochBudget, run: EngineRun, folder: Path) -> None:
    from ..search.tuner import build_tuner, search

    tuner = build_tuner(spec, algorithm, objective, directory=folder, project_name=f"{run.engine}-{run.seed}", max_trials=None, overwrite=True)
    tuner.should_stop = lambda: budget.exhausted
    tuner.on_trial = lambda end: run.trials.append(
        {"number": end.number, "state": end.state, "value": end.value, "epochs": budget.spent, "seconds": budget.seconds(), "run_id": end.run_id}
    )
    search(tuner)


def test_value(client, run_id: str | None, objective: Objective, metric: str) -> float:
    """The winner's logged model scored on the test split (read here, once per winner)."""
    from .. import bundle
    from ..serving.export import _fetch
    from ..training import evaluate

    if run_id is None:
        return math.nan
    with tempfile.TemporaryDirectory() as tmp:
        _fetch(client, run_id, Path(tmp) / "model")
        loaded = bundle.load(Path(tmp) / "model")
    prepared = objective.prepared(loaded.config)
    return float(evaluate(loaded.model, prepared, loaded.config["model"]["head"]).get("test_" + metric.removeprefix("val_"), math.nan))


@dataclass
class Comparison:
    runs: list[EngineRun]
    table: pd.DataFrame
    figures: list[go.Figure]
    run_id: str
    html: Path
    png_note: str | None
    data: dict


def compare(
    spec: StudySpec, client, *, epochs_budget: int, seeds: int, out: str | Path | None = None,
    json_out: str | Path | None = None, png: bool = False, console=None,
) -> Comparison:
    """Run every engine ``seeds`` times on ``epochs_budget`` epochs, report, and log it all to MLflow."""
    check(spec, epochs_budget, seeds)
    o = spec.objectives[0]
    experiment = f"{spec.name}-compare-engines"
    load_before = os.getloadavg()
    parent = tracking.Run.start(client, experiment, run_name=f"{spec.name}: engines on {epochs_budget} epochs",
                                tags={"study": spec.name, "role": "comparison"})
    parent.log_params({"study": spec.name, "epochs_budget": epochs_budget, "seeds": seeds, "engines": ",".join(ENGINES),
                       "objective": f"{o.metric}:{o.direction}", "pruner": spec.pruner["name"]})
    parent.log_artifacts({"study.yaml": dump_yaml(spec.raw)})
    uploader = tracking.uploader()
    runs: list[EngineRun] = []
    try:
        with parent:  # FINISHED, or FAILED with the error's first line
            with tempfile.TemporaryDirectory() as folder:
                for k in range(seeds):
                    for engine, algorithm in ENGINES.items():
                        runs.append(_run_engine(spec, engine, algorithm, k, client, parent.run_id, experiment, epochs_budget, uploader, Path(folder), console))
            data = _data(spec, runs, epochs_budget, seeds, load_before)
            table = summary_table(runs, o.direction)
            figures = [curve_figure(runs, "epochs", epochs_budget, o), curve_figure(runs, "seconds", epochs_budget, o)]
            report = Report(
                f"Search engines on {epochs_budget} epochs: study {spec.name}",
                intro=(
                    f"Optuna (TPE, pruner {spec.pruner['name']}) against keras-tuner's Hyperband and Bayesian optimisation "
                    f"(no pruner), {seeds} seed(s) each, every engine stopped at exactly {epochs_budget} training epochs "
                    "(pruned and continued trials count the epochs they trained). Every trial trains through the same "
                    f"path. Curves: the best {o.metric} so far, mean over seeds with ± 1 sd. The test split is read once, "
                    f"for each engine's winner. Load average at the start: {load_before[0]:.2f} on {os.cpu_count()} CPUs."
                ),
            )
            report.add(f"Best {o.metric} against the budget", figures=figures)
            report.add("Winners", table=table)
            report.add("Every engine and seed", table=pd.DataFrame([_row(r, o.direction) for r in runs]))
            saved = report.save(out or Path("reports") / f"compare-engines-{spec.name}.html", png=png)
            saved.log(client, parent.run_id)
            parent.log_artifacts({"compare_engines.json": json.dumps(data, indent=1)})
            if json_out is not None:
                Path(json_out).parent.mkdir(parents=True, exist_ok=True)
                Path(json_out).write_text(json.dumps(data, indent=1) + "\n")
            for row in table.to_dict("records"):
                parent.log_metrics({f"{row['engine']}.best_{o.metric}": row["best val"], f"{row['engine']}.winner_test": row["winner test"]})
    except BaseException:
        uploader.flush()
        raise
    for line in uploader.flush():
        if console is not None:
            console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    return Comparison(runs, table, figures, parent.run_id, saved.html, saved.png_note, data)


def _run_engine(spec, engine, algorithm, k, client, parent_run_id, experiment, epochs_budget, uploader, folder, console) -> EngineRun:
    """One engine on one seed, as an MLflow run whose children are its trials."""
    s = seeded(spec if algorithm is None else without_pruner(spec), k)
    run = tracking.Run.start(client, experiment, run_name=f"{engine} seed {s.seed}", parent_run_id=parent_run_id,
                             tags={"study": spec.name, "engine": engine, "seed": str(s.seed)})
    run.log_params({"engine": engine, "seed": s.seed, "epochs_budget": epochs_budget, "pruner": s.pruner["name"]})
    budget = EpochBudget(epochs_budget)
    objective = Objective(s, mlflow_client=client, parent_run_id=run.run_id, uploader=uploader, experiment=experiment,
                          callbacks=[budget], tags={"engine": engine})
    result = EngineRun(engine, s.seed, run.run_id)
    with run:
        if algorithm is None:
            run_optuna(s, objective, budget, result)
        else:
            run_keras_tuner(s, algorithm, objective, budget, result, folder)
        result.epochs_spent, result.seconds = budget.spent, budget.seconds()
        uploader.flush()  # the winner's model is logged
        winner = result.winner(s.objectives[0].direction)
        result.test_value = test_value(client, winner and winner["run_id"], objective, s.objectives[0].metric)
        metric = s.objectives[0].metric
        for t in _best_so_far(result.trials, s.objectives[0].direction):
            run.log_metrics({f"best_{metric}": t["best"]}, step=t["epochs"])
        final = {"epochs_spent": result.epochs_spent, "wall_seconds": result.seconds, "n_trials": len(result.trials)}
        if winner is not None:
            final.update({f"best_{metric}": winner["value"], f"winner_test_{metric.removeprefix('val_')}": result.test_value})
        run.log_metrics(final, step=result.epochs_spent)
        if winner and winner["run_id"]:
            run.end_tags["winner_run_id"] = winner["run_id"]
    if console is not None:
        best = f"{winner['value']:.4f}" if winner else "none"
        console.print(f"{engine} seed {s.seed}: {len(result.trials)} trials, {result.epochs_spent} epochs, "
                      f"{result.seconds:.0f} s, best {s.objectives[0].metric} {best}, winner's test {result.test_value:.4f}", highlight=False)
    return result


def _best_so_far(trials: list[dict], direction: str) -> list[dict]:
    """The trials that improved on every earlier one, with ``best``: the curve's steps."""
    out, best = [], None
    sign = 1 if direction == "maximize" else -1
    for t in trials:
        if t["value"] is not None and (best is None or sign * t["value"] > sign * best):
            best = t["value"]
            out.append({**t, "best": best})
    return out


def best_at(trials: list[dict], key: str, xs: np.ndarray, direction: str) -> np.ndarray:
    """The best value of the trials ended by each x (epochs spent or seconds); NaN before the first."""
    steps = _best_so_far(trials, direction)
    out = np.full(len(xs), np.nan)
    for s in steps:
        out[xs >= s[key]] = s["best"]
    return out


def curve_figure(runs: list[EngineRun], key: str, epochs_budget: int, objective) -> go.Figure:
    """The best objective so far against epochs spent (``key`` epochs) or wall time (``seconds``): mean ± 1 sd over seeds."""
    if key == "epochs":
        xs = np.arange(1, epochs_budget + 1, dtype=float)
    else:
        xs = np.linspace(0, max((r.seconds for r in runs), default=1.0), 200)
    fig = go.Figure()
    for engine in ENGINES:
        curves = np.array([best_at(r.trials, key, xs, objective.direction) for r in runs if r.engine == engine])
        if not len(curves) or np.isnan(curves).all():
            continue
        with warnings.catch_warnings():  # columns before any trial ended are all NaN: left out below
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, sd = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
        color = COLORS[engine]
        ok = ~np.isnan(mean)
        x, m, s = xs[ok], mean[ok], sd[ok]
        fig.add_trace(go.Scatter(x=list(x) + list(x[::-1]), y=list(m + s) + list((m - s)[::-1]), fill="toself", mode="lines",
                                 line={"width": 0}, fillcolor=_rgba(color, 0.15), legendgroup=engine, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=m, mode="lines", name=f"{engine} ({len(curves)} seeds)", legendgroup=engine,
                                 line={"color": color, "shape": "hv"}))
    fig.update_layout(
        title=f"against {'epochs spent' if key == 'epochs' else 'wall time'}", template="plotly_white",
        xaxis_title="training epochs spent" if key == "epochs" else "seconds", yaxis_title=f"best {objective.metric} so far",
        legend={"orientation": "h", "yanchor": "top", "y": -0.2},
    )
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _row(r: EngineRun, direction: str) -> dict:
    w = r.winner(direction)
    states = [t["state"] for t in r.trials]
    return {
        "engine": r.engine, "seed": r.seed, "trials": len(r.trials), "complete": states.count("complete"),
        "pruned": states.count("pruned"), "failed": states.count("failed"), "epochs": r.epochs_spent,
        "seconds": round(r.seconds, 1), "best": w["value"] if w else math.nan, "winner trial": w["number"] if w else None,
        "winner test": r.test_value,
    }


def summary_table(runs: list[EngineRun], direction: str) -> pd.DataFrame:
    """Per engine, over seeds: trials, epochs spent, wall time, the winners' validation and test values (mean, sd)."""
    rows = []
    per = pd.DataFrame([_row(r, direction) for r in runs])
    for engine in ENGINES:
        p = per[per["engine"] == engine]
        if p.empty:
            continue
        rows.append({
            "engine": engine, "seeds": len(p), "trials (mean)": float(p["trials"].mean()),
            "epochs per seed": int(p["epochs"].max()) if p["epochs"].nunique() == 1 else f"{p['epochs'].min()}-{p['epochs'].max()}",
            "seconds (mean)": float(p["seconds"].mean()),
            "best val": float(p["best"].mean()), "best val sd": float(p["best"].std(ddof=0)),
            "winner test": float(p["winner test"].mean()), "winner test sd": float(p["winner test"].std(ddof=0)),
        })
    return pd.DataFrame(rows)


def _data(spec: StudySpec, runs: list[EngineRun], epochs_budget: int, seeds: int, load_before) -> dict:
    """Everything measured, for the JSON file: per engine and seed, every trial with the budget spent at its end."""
    o = spec.objectives[0]
    return {
        "study": spec.name, "objective": o.metric, "direction": o.direction, "epochs_budget": epochs_budget, "seeds": seeds,
        "pruner (optuna)": spec.pruner, "command": " ".join(["cicy-search", *sys.argv[1:]]) if sys.argv[0].endswith("cicy-search") else None,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average_start": list(load_before),
                    "load_average_end": list(os.getloadavg())},
        "runs": [{**dataclasses.asdict(r), "winner": r.winner(o.direction)} for r in runs],
        "summary": summary_table(runs, o.direction).to_dict("records"),
    }
