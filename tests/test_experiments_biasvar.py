"""``cicy-search biasvar``: replicas as child runs of one MLflow run, the table adds up to what they measured."""

import numpy as np
import pandas as pd
import pytest
import yaml

from cicy_search.errors import CicyError
from cicy_search.experiments import biasvar
from cicy_search.reporting import decomposition
from cicy_search.training import prepare

from .conftest import run_cli, tiny

# The module-scoped fixtures here are made once: pytest-xdist runs all these tests on one worker.
pytestmark = pytest.mark.xdist_group("experiments_biasvar")

EXPERIMENT = "test-reporting-biasvar"


def _runs(client, experiment=EXPERIMENT):
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


@pytest.fixture(scope="module")
def cli_run(mlflow_client, tracking_uri, tmp_path_factory):
    """Dense network on 500 matrices, widths 4 and 32, two bootstrap replicas each, one epoch."""
    folder = tmp_path_factory.mktemp("biasvar")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump({"name": "bv", "data": {"limit": 500}, "train": {"epochs": 1}}))
    out = folder / "bv.html"
    code = run_cli(
        "biasvar", str(config), "--vary", "model.width=4,32", "--replicas", "2", "--no-png",
        "--tracking-uri", tracking_uri, "--experiment", EXPERIMENT, "--out", str(out),
    )
    assert code == 0
    parent = next(r for r in _runs(mlflow_client) if r.data.tags.get("report") == "biasvar")
    return parent, out


def test_replicas_are_child_runs_with_logged_seeds(cli_run, mlflow_client):
    parent, _ = cli_run
    assert parent.info.status == "FINISHED" and parent.data.params["biasvar.eval_split"] == "val"
    children = [r for r in _runs(mlflow_client) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    got = sorted((r.data.params["model.width"], r.data.params["biasvar.replica"], r.data.params["biasvar.resample_seed"]) for r in children)
    assert got == [("32", "0", "0"), ("32", "1", "1"), ("4", "0", "0"), ("4", "1", "1")]
    assert all(r.info.status == "FINISHED" and r.data.params["seed"] == r.data.params["biasvar.resample_seed"] for r in children)
    # A bootstrap sample is as large as the training split it was drawn from.
    n_train = len(prepare(tiny(limit=500)).x["train"])
    assert {r.data.params["data.n_train"] for r in children} == {str(n_train)}


def test_table_adds_up_to_the_error_the_replicas_measured(cli_run, mlflow_client, tmp_path):
    parent, _ = cli_run
    table = pd.read_csv(mlflow_client.download_artifacts(parent.info.run_id, "biasvar.csv", str(tmp_path)))
    assert list(table["model.width"]) == [4, 32] and set(table["loss"]) == {"zero_one"}
    children = [r for r in _runs(mlflow_client) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    for _, row in table.iterrows():
        # Expected 0-1 error = 1 - the mean validation accuracy the replicas logged themselves.
        accuracies = [r.data.metrics["val_accuracy"] for r in children if r.data.params["model.width"] == str(row["model.width"])]
        assert row.error == pytest.approx(1 - np.mean(accuracies), abs=1e-9)
        assert row.noise == 0 and 0 <= row.bias <= 1 and 0 <= row.variance <= 1
        assert abs(row.error - (row.noise + row.bias + row.net_variance)) <= decomposition.IDENTITY_TOL
        assert row.variance == pytest.approx(row.variance_unbiased + row.variance_biased)
        assert row.replicas == 2 and row.points == len(prepare(tiny(limit=500)).x["val"])
    history = mlflow_client.get_metric_history(parent.info.run_id, "h11_error")
    assert [round(m.value, 9) for m in sorted(history, key=lambda m: m.step)] == [round(v, 9) for v in table["error"]]


def test_report_is_written_and_logged(cli_run, mlflow_client):
    parent, out = cli_run
    assert out.is_file() and (out.with_suffix("") / "error_and_its_decomposition.json").is_file()
    logged = {a.path for a in mlflow_client.list_artifacts(parent.info.run_id, "report")}
    assert logged == {"report/bv.html", "report/bv"}


def test_squared_loss_for_a_regression_head(mlflow_client, tmp_path):
    """The SVM baseline (regression, no Keras): the decomposition of raw outputs over bootstrap replicas."""
    cfg = tiny("svm", limit=400)
    result = biasvar.run(
        cfg, "model.C", [0.1, 10.0], mlflow_client=mlflow_client, replicas=3, experiment=EXPERIMENT,
        out=tmp_path / "svm.html", png=False, progress=False,
    )
    y = prepare(cfg).y["val"]["h11"]
    for row, preds in zip(result.table.itertuples(), result.predictions):
        f = preds["h11"]
        assert f.shape == (3, len(y)) and f.dtype == np.float64
        assert row.loss == "squared" and row.error == pytest.approx(np.mean((f - y) ** 2))
        assert row.bias == pytest.approx(np.mean((f.mean(axis=0) - y) ** 2))
        assert row.variance == pytest.approx(np.mean(f.var(axis=0))) and row.net_variance == row.variance
    assert result.figure.data[0].name == "expected error" and list(result.figure.data[0].y) == list(result.table["error"])


def test_unknown_parameter_is_one_line_and_creates_no_run(mlflow_client, tracking_uri, capsys):
    before = len(_runs(mlflow_client))
    assert run_cli("biasvar", "dense", "--vary", "model.widht=4,8", "--tracking-uri", tracking_uri, "--experiment", EXPERIMENT) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown parameter 'model.widht'") and len(err.splitlines()) == 1
    assert run_cli("biasvar", "dense", "--vary", "model.width", "--tracking-uri", tracking_uri) == 2
    assert "PARAM=v1,v2" in capsys.readouterr().err
    with pytest.raises(CicyError, match="at least 2 replicas"):
        biasvar.run(tiny(), "model.width", [4, 8], mlflow_client=mlflow_client, replicas=1)
    assert len(_runs(mlflow_client)) == before


def test_biasvar_page_renders_in_chromium(cli_run, chromium, tmp_path):
    from PIL import Image

    from cicy_search.reporting.browser import check_render

    check = check_render(cli_run[1], screenshot=tmp_path / "bv.png")
    assert check.errors == [] and len(check.figures) == 1
    assert check.figures[0]["rendered"] and check.figures[0]["traces"] == len(biasvar.TERMS) + 1  # + the replicas' spread
    pixels = np.asarray(Image.open(check.screenshot).convert("L"))
    assert pixels.std() > 10


def test_parse_vary_reads_yaml_scalars():
    assert biasvar.parse_vary("model.width=8, 32,128") == ("model.width", [8, 32, 128])
    assert biasvar.parse_vary("model.dropout=0,0.25") == ("model.dropout", [0, 0.25])
    assert biasvar.parse_vary("train.learning_rate=1e-3,5E-2") == ("train.learning_rate", [1e-3, 5e-2])


def test_disjoint_subsets_need_enough_training_examples(mlflow_client):
    before = len(_runs(mlflow_client))
    with pytest.raises(CicyError, match="more than the 16 training examples"):
        config = tiny(limit=20)
        config["data"]["stratify"] = False  # 20 matrices in 8 h11 classes cannot be stratified into three splits
        biasvar.run(config, "model.width", [4, 8], mlflow_client=mlflow_client, replicas=17, resample="disjoint", experiment=EXPERIMENT)
    assert len(_runs(mlflow_client)) == before
