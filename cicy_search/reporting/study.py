"""Study analysis: what an Optuna study found and how it got there, as one report.

Optimization history, parameter importances, parallel coordinates, slice and contour plots (per objective),
the Pareto front of multi-objective studies, trials by state over time, and a table of the top trials
linking to their MLflow runs (each trial's ``mlflow_run_id`` user attribute). Figures that a study cannot
support yet (importances need two complete trials) are replaced by a one-line note.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import TrialState

from .html import Link, Report
from ..tracking import links
from ..errors import one_line

STATE_COLORS = {"COMPLETE": "#2ca02c", "PRUNED": "#ff7f0e", "FAIL": "#d62728", "RUNNING": "#1f77b4", "WAITING": "#7f7f7f"}


def objective_names(study: optuna.Study) -> list[str]:
    names = study.user_attrs.get("objectives") or study.metric_names
    if names and len(names) == len(study.directions):
        return list(names)
    return ["value"] if len(study.directions) == 1 else [f"objective {i}" for i in range(len(study.directions))]


def _mlflow_link(client, run_id: str | None, ui_url: str) -> Link | str:
    if not run_id:
        return ""
    if client is None:
        return run_id
    from mlflow.exceptions import MlflowException

    try:
        experiment = client.get_run(run_id).info.experiment_id
    except MlflowException:
        return f"{run_id} (not found)"
    return Link(f"{ui_url.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}", run_id)


def ui_url_for(client) -> str:
    """The MLflow UI serving ``client``'s store: the server itself, or ``mlflow ui``'s default address."""
    from .. import tracking
    from ..tracking.summary import LOCAL_UI

    return tracking.ui_url(getattr(client, "tracking_uri", "") or "") or LOCAL_UI


def top_trials(study: optuna.Study, n: int = 10, *, mlflow_client=None, ui_url: str | None = None) -> pd.DataFrame:
    """The best ``n`` complete trials by the first objective, Pareto-optimal ones flagged."""
    names = objective_names(study)
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: sign * t.values[0])
    pareto = {t.number for t in study.best_trials} if complete else set()
    ui = ui_url or ui_url_for(mlflow_client)
    rows = []
    for t in complete[:n]:
        seconds = t.duration.total_seconds() if t.duration else None
        rows.append(
            {
                "trial": t.number,
                **dict(zip(names, t.values)),
                **({"pareto": t.number in pareto} if len(names) > 1 else {}),
                **{f"params.{k}": v for k, v in t.params.items()},
                "seconds": seconds,
                "mlflow_run": _mlflow_link(mlflow_client, links.run_id(t, study), ui),
            }
        )
    return pd.DataFrame(rows)


def states_over_time(study: optuna.Study) -> go.Figure:
    """Cumulative number of trials in each final state against the time they ended (running: started)."""
    fig = go.Figure()
    trials = study.get_trials(deepcopy=False)
    for state in TrialState:
        times = sorted(t.datetime_complete or t.datetime_start for t in trials if t.state == state and (t.datetime_complete or t.datetime_start))
        if times:
            fig.add_trace(
                go.Scatter(x=times, y=list(range(1, len(times) + 1)), mode="lines+markers", line_shape="hv",
                           name=state.name.lower(), line={"color": STATE_COLORS.get(state.name)})
            )
    fig.update_layout(title="Trials by state over time", xaxis_title="time", yaxis_title="trials (cumulative)", template="plotly_white")
    return fig


def _figures(study: optuna.Study) -> list[tuple[str, Callable[[], go.Figure]]]:
    from optuna import visualization as vis

    names = objective_names(study)
    multi = len(names) > 1
    per_objective = []
    for i, name in enumerate(names):
        kw = {"target": (lambda t, i=i: t.values[i]), "target_name": name} if multi else {"target_name": name}
        suffix = f" ({name})" if multi else ""
        per_objective += [
            (f"Optimization history{suffix}", lambda kw=kw: vis.plot_optimization_history(study, **kw)),
            (f"Parallel coordinates{suffix}", lambda kw=kw: vis.plot_parallel_coordinate(study, **kw)),
            (f"Slice{suffix}", lambda kw=kw: vis.plot_slice(study, **kw)),
            (f"Contour{suffix}", lambda kw=kw: _quiet_contour(study, **kw)),
        ]
    out = [per_objective[0], ("Parameter importances", lambda: vis.plot_param_importances(study)), *per_objective[1:]]
    if multi and len(names) <= 3:
        out.append(("Pareto front", lambda: vis.plot_pareto_front(study, target_names=names)))
    out += [("Trials by state over time", lambda: states_over_time(study)), ("Timeline", lambda: vis.plot_timeline(study))]
    return out


def _quiet_contour(study: optuna.Study, **kw):
    """Optuna's contour plot, without the warning Optuna logs for each parameter with one value so far (a study's
    first trials): the plot leaves that pair empty, and the line would land on the user's stderr mid-study."""
    from optuna import visualization as vis

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.ERROR))
    try:
        return vis.plot_contour(study, params=_contour_params(study), **kw)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _contour_params(study: optuna.Study, most: int = 4) -> list[str] | None:
    """The ``most`` most important parameters: a contour matrix grows with the square of their number."""
    names = list(dict.fromkeys(p for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) for p in t.params))
    if len(names) <= most:
        return None
    try:
        target = None if len(study.directions) == 1 else (lambda t: t.values[0])
        return list(optuna.importance.get_param_importances(study, target=target))[:most]
    except (RuntimeError, ValueError):
        return names[:most]


@dataclass
class StudyReportResult:
    report: Report
    table: pd.DataFrame
    html: Path
    run_id: str | None
    png_note: str | None
    skipped: dict[str, str]


def report_study(
    study: optuna.Study,
    *,
    mlflow_client=None,
    out: str | Path | None = None,
    top: int = 10,
    ui_url: str | None = None,
    png: bool = True,
) -> StudyReportResult:
    """Write the study's report and, with a client, log it to the study's MLflow parent run.

    Args:
        mlflow_client: to link trials to their runs and log the report (to the study user attribute
            ``mlflow_parent_run_id``'s run, else to a new run in ``cicy-search-reports``); None: neither.
        top: rows of the top-trials table.
        ui_url: MLflow UI address for the links (default: the tracking server, or ``mlflow ui``'s).
    """
    counts = {s.name.lower(): n for s in TrialState if (n := len(study.get_trials(deepcopy=False, states=(s,))))}
    names = objective_names(study)
    report = Report(
        f"Study {study.study_name}",
        intro=f"{len(study.trials)} trials ({', '.join(f'{n} {s}' for s, n in counts.items()) or 'none'}); objectives: "
        + ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(names, study.directions)),
    )
    skipped = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for title, make in _figures(study):
            try:
                fig = make()
            except (ValueError, RuntimeError, ZeroDivisionError) as e:
                skipped[title] = one_line(e)
                report.add(title, text=f"Not drawn: {skipped[title]}")
                continue
            if not fig.data:
                skipped[title] = "no trials to show yet"
                report.add(title, text="Not drawn: no trials to show yet")
                continue
            report.add(title, figure=fig)
    table = top_trials(study, top, mlflow_client=mlflow_client, ui_url=ui_url)
    report.add(f"Top {top} trials", table=table, name="top_trials")
    saved = report.save(out or Path("reports") / f"study-{study.study_name}.html", png=png)
    run_id = None
    if mlflow_client is not None:
        from .. import tracking

        run_id = links.parent_run_id(study)
        if run_id is None:
            with tracking.Run.start(mlflow_client, "cicy-search-reports", run_name=f"study {study.study_name}", tags={"report": "study"}) as run:
                run_id = run.run_id
        saved.log(mlflow_client, run_id, "study_report")
    return StudyReportResult(report, table, saved.html, run_id, saved.png_note, skipped)
