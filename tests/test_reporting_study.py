"""The study report from real small Optuna studies (SQLite storage) whose trials link to real MLflow runs."""

import numpy as np
import optuna
import pytest

from cicy_search.errors import CicyError
from cicy_search.reporting.html import Link
from cicy_search.reporting.study import report_study
from cicy_search.search.study import load

from .conftest import run_cli

# The module-scoped fixtures here are made once: pytest-xdist runs all these tests on one worker.
pytestmark = pytest.mark.xdist_group("reporting_study")

EXPERIMENT = "test-reporting-study"


def _make_study(storage, mlflow_client, name, directions):
    """12 trials on a known function: one pruned, one failed, every trial linked to an MLflow run."""
    from cicy_search import tracking

    parent = tracking.Run.start(mlflow_client, EXPERIMENT, run_name=name)
    parent.end()
    study = optuna.create_study(study_name=name, storage=storage, directions=directions, sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("mlflow_parent_run_id", parent.run_id)
    study.set_user_attr("mlflow_experiment", EXPERIMENT)
    study.set_user_attr("tracking_uri", mlflow_client.tracking_uri)

    def objective(trial):
        run = tracking.Run.start(mlflow_client, EXPERIMENT, run_name=f"trial {trial.number}", parent_run_id=parent.run_id)
        run.end()
        trial.set_user_attr("mlflow_run_id", run.run_id)
        x = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        width = trial.suggest_int("width", 8, 256, log=True)
        family = trial.suggest_categorical("family", ["dense", "cnn"])
        if trial.number == 3:
            raise optuna.TrialPruned()
        if trial.number == 5:
            raise ValueError("diverged")
        error = (np.log10(x) + 2.5) ** 2 + (0.1 if family == "cnn" else 0.0)
        return error if len(directions) == 1 else (error, float(width))

    study.optimize(objective, n_trials=12, catch=(ValueError,))
    return study


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('optuna') / 'optuna.db'}"


@pytest.fixture(scope="module")
def single(storage, mlflow_client, tmp_path_factory):
    study = _make_study(storage, mlflow_client, "single", ["minimize"])
    out = tmp_path_factory.mktemp("study") / "single.html"
    return study, report_study(study, mlflow_client=mlflow_client, out=out, top=5, png=False)


def test_single_objective_report_has_every_view(single):
    study, result = single
    titles = [s.title for s in result.report.sections if s.figure is not None]
    assert titles == [
        "Optimization history", "Parameter importances", "Parallel coordinates", "Slice", "Contour",
        "Trials by state over time", "Timeline",
    ]
    assert result.skipped == {}
    figures = {s.title: s.figure for s in result.report.sections if s.figure is not None}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    np.testing.assert_allclose(figures["Optimization history"].data[0].y, [t.value for t in complete])
    importances = figures["Parameter importances"].data[0]
    assert set(importances.y) == {"lr", "width", "family"} and sum(importances.x) == pytest.approx(1, abs=0.02)
    states = {t.name: t.y[-1] for t in figures["Trials by state over time"].data}
    assert states == {"complete": 10, "pruned": 1, "fail": 1}


def test_top_trials_table_is_sorted_and_links_to_mlflow(single, mlflow_client):
    study, result = single
    table = result.table
    values = sorted(t.value for t in study.trials if t.value is not None)
    assert len(table) == 5 and list(table["value"]) == pytest.approx(values[:5])
    assert table["trial"].iloc[0] == study.best_trial.number
    for _, row in table.iterrows():
        link = row["mlflow_run"]
        run_id = study.trials[row["trial"]].user_attrs["mlflow_run_id"]
        experiment = mlflow_client.get_run(run_id).info.experiment_id
        assert isinstance(link, Link) and link.url == f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run_id}"
        assert row["params.lr"] == study.trials[row["trial"]].params["lr"]


def test_report_is_logged_to_the_study_parent_run(single, mlflow_client):
    study, result = single
    assert result.run_id == study.user_attrs["mlflow_parent_run_id"]
    logged = {a.path for a in mlflow_client.list_artifacts(result.run_id, "study_report/single")}
    assert "study_report/single/top_trials.csv" in logged and "study_report/single/contour.json" in logged


def test_multi_objective_report_has_the_pareto_front(storage, mlflow_client, tmp_path):
    study = _make_study(storage, mlflow_client, "multi", ["minimize", "minimize"])
    study.set_user_attr("objectives", ["error", "width"])
    result = report_study(study, mlflow_client=mlflow_client, out=tmp_path / "multi.html", png=False)
    titles = [s.title for s in result.report.sections if s.figure is not None]
    assert "Pareto front" in titles and "Optimization history (error)" in titles and "Slice (width)" in titles
    pareto = {t.number for t in study.best_trials}
    assert {r["trial"] for _, r in result.table.iterrows() if r["pareto"]} == pareto & set(result.table["trial"])
    assert list(result.table.columns[:3]) == ["trial", "error", "width"]


def test_cli_report_study_and_its_errors(single, storage, tracking_uri, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert run_cli("report", "study", "single", "--storage", storage, "--tracking-uri", tracking_uri, "--out", str(out), "--no-png") == 0
    assert out.is_file() and "report written to" in capsys.readouterr().out
    assert run_cli("report", "study", "nope", "--storage", storage) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no study 'nope'") and "single" in err and len(err.splitlines()) == 1
    with pytest.raises(CicyError, match="no Optuna storage"):
        load("single", storage=f"sqlite:///{tmp_path}/missing.db")
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize("size", [(1280, 2000), (390, 844)], ids=["1280px", "phone"])
def test_study_page_renders_every_figure_in_chromium_and_fits_the_window(single, chromium, tmp_path, size):
    from PIL import Image

    from cicy_search.reporting.browser import check_render

    _, result = single
    check = check_render(result.html, screenshot=tmp_path / "study.png", size=size)
    assert check.errors == [] and check.page_width <= size[0]
    assert all(0 < f["width"] <= size[0] for f in check.figures)
    expected = [f"figure-{s.name}" for s in result.report.sections if s.figure is not None]
    assert [f["id"] for f in check.figures] == expected
    assert all(f["rendered"] and f["traces"] > 0 and f["height"] > 100 for f in check.figures)
    pixels = np.asarray(Image.open(check.screenshot).convert("L"))
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005
