"""The overfitting comparison built from real (tiny) MLflow runs, its recipe, and its page in Chromium."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cicy_search.errors import CicyError
from cicy_search.experiments import compare
from cicy_search.tracking.runner import run_tracked

from .conftest import run_cli, tiny

# The module-scoped fixtures here are made once: pytest-xdist runs all these tests on one worker.
pytestmark = pytest.mark.xdist_group("experiments_compare")

EXPERIMENT = "test-reporting-compare"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(mlflow_client):
    """Three tiny runs: plain, L1/L2 and dropout, 3 epochs each: {label: TrackedResult}."""
    variants = {"plain": {}, "l1l2": {"l1": 0.001, "l2": 0.001}, "dropout": {"dropout": 0.2}}
    out = {}
    for label, model in variants.items():
        cfg = tiny(limit=400, epochs=3, **model)
        cfg["name"] = label
        out[label] = run_tracked(cfg, mlflow_client=mlflow_client, experiment=EXPERIMENT, log_model=False)
    return out


@pytest.fixture(scope="module")
def built(runs, mlflow_client, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "compare.html"
    return compare.report_compare(mlflow_client, [r.run_id for r in runs.values()], out=out, png=False)


def test_one_trace_per_run_and_metric_read_back_from_mlflow(runs, built):
    assert [f.layout.title.text for f in built.figures] == list(runs)  # one panel per run
    traces = {t.name: t for f in built.figures for t in f.data}
    assert sum(len(f.data) for f in built.figures) == 4 * len(runs) == len(traces)
    for label, tracked in runs.items():
        h = tracked.result.history
        for key, name in (("loss", "train loss"), ("val_loss", "validation loss"), ("accuracy", "train accuracy"), ("val_accuracy", "validation accuracy")):
            trace = traces[f"{label} {name}"]
            assert list(trace.x) == [0, 1, 2]
            np.testing.assert_allclose(trace.y, h[key], rtol=1e-6)


def test_table_has_final_accuracies_and_gap_at_best_epoch(runs, built):
    table = built.table.set_index("run")
    assert list(table.index) == list(runs)
    for label, tracked in runs.items():
        row, m, h = table.loc[label], tracked.result.metrics, tracked.result.history
        assert row["train_accuracy"] == pytest.approx(m["train_accuracy"])
        assert row["val_accuracy"] == pytest.approx(m["val_accuracy"])
        assert row["test_accuracy"] == pytest.approx(m["test_accuracy"])
        best = int(np.argmin(h["val_loss"]))
        assert row["best_epoch"] == best and row["epochs"] == 3
        assert row["gap_at_best"] == pytest.approx(h["accuracy"][best] - h["val_accuracy"][best])
        assert row["n_params"] == tracked.result.n_params


def test_report_and_csv_are_logged_to_mlflow(built, mlflow_client, tmp_path):
    run = mlflow_client.get_run(built.run_id)
    assert run.data.tags["report"] == "compare"
    folder = Path(mlflow_client.download_artifacts(built.run_id, "compare", str(tmp_path)))
    assert (folder / "compare.html").stat().st_size > 3_000_000  # plotly.js is embedded: opens offline
    csv = pd.read_csv(folder / "compare" / "accuracy_and_train_validation_gap.csv")
    assert list(csv["run_id"]) == list(built.table["run_id"])
    assert {p.name for p in (folder / "compare").glob("learning_curves_*.json")} == {f"learning_curves_{i}.json" for i in (1, 2, 3)}


def test_references_resolve_to_runs_and_unknown_ones_fail(runs, mlflow_client, capsys, tracking_uri, tmp_path):
    ids = [r.run_id for r in runs.values()]
    assert [r.info.run_id for r in compare.resolve_runs(mlflow_client, [EXPERIMENT])] == ids
    assert [r.info.run_id for r in compare.resolve_runs(mlflow_client, ["dropout", ids[0]])] == [ids[2], ids[0]]
    with pytest.raises(CicyError, match="unknown run, experiment or study 'nope'"):
        compare.resolve_runs(mlflow_client, ["nope"], storage=f"sqlite:///{tmp_path}/none.db")
    assert run_cli("report", "compare", "no-such-run", "--tracking-uri", tracking_uri) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no-such-run" in err and len(err.splitlines()) == 1


def test_recipe_trains_its_runs_under_one_parent_and_reports_them(mlflow_client, tracking_uri, tmp_path, capsys):
    recipe = tmp_path / "mini.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "mini", "experiment": "test-reporting-recipe",
        "override": {"data": {"limit": 400}, "train": {"epochs": 2}}, "runs": ["dense", "dense_dropout"],
    }))
    out = tmp_path / "mini.html"
    assert run_cli("report", "recipe", str(recipe), "--tracking-uri", tracking_uri, "--out", str(out), "--no-png") == 0
    assert "dense_dropout" in capsys.readouterr().out and out.is_file()
    exp = mlflow_client.get_experiment_by_name("test-reporting-recipe")
    parent = next(r for r in mlflow_client.search_runs([exp.experiment_id]) if r.data.tags.get("report") == "recipe")
    children = compare.resolve_runs(mlflow_client, [parent.info.run_id])
    assert [c.data.params["name"] for c in children] == ["dense", "dense_dropout"]
    assert all(c.info.status == "FINISHED" and c.data.params["train.epochs"] == "2" for c in children)
    assert {a.path for a in mlflow_client.list_artifacts(parent.info.run_id, "compare")} >= {"compare/mini.html", "compare/mini"}
    # The recipe's run lists the data its runs trained on (both on the same split here).
    digests = {i.dataset.digest for i in mlflow_client.get_run(parent.info.run_id).inputs.dataset_inputs}
    assert digests == {i.dataset.digest for c in children for i in c.inputs.dataset_inputs} and len(digests) == 3


def test_shipped_recipe_is_the_five_runs_of_the_comparison():
    configs = compare.recipe_configs(compare.load_recipe(ROOT / "recipes" / "overfitting.yaml"))
    got = [(c["name"], c["model"]["family"], c["model"]["l1"], c["model"]["l2"], c["model"]["dropout"]) for c in configs]
    assert got == [
        ("dense", "dense", 0.0, 0.0, 0.0),
        ("dense_l1l2", "dense", 0.001, 0.001, 0.0),
        ("dense_dropout", "dense", 0.0, 0.0, 0.2),
        ("cnn", "cnn", 0.0, 0.0, 0.2),
        ("inception", "inception", 0.0001, 0.0001, 0.2),
    ]
    assert {c["train"]["epochs"] for c in configs} == {20} and {c["train"]["early_stopping"] for c in configs} == {0}
    assert {c["data"]["seed"] for c in configs} == {0}


@pytest.mark.parametrize("size", [(1280, 2000), (390, 844)], ids=["1280px", "phone"])
def test_compare_page_renders_every_figure_in_chromium_and_fits_the_window(built, chromium, tmp_path, size):
    from PIL import Image

    from cicy_search.reporting.browser import check_render

    check = check_render(built.html, screenshot=tmp_path / "compare.png", size=size)
    assert check.errors == [] and check.ok and check.page_width <= size[0]
    assert [f["id"] for f in check.figures] == [f"figure-learning_curves_{i}" for i in (1, 2, 3)]
    assert all(f["rendered"] and f["traces"] == 4 and 300 < f["width"] <= size[0] for f in check.figures)
    rows = len({round(f["top"]) for f in check.figures})
    assert rows == (1 if size[0] >= 1280 else 3)  # the three runs side by side, or one under the other
    pixels = np.asarray(Image.open(check.screenshot).convert("L"))
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # not a blank page
