"""Bias-variance recipes: ``cicy-search report recipe`` on a file with ``vary``, and the shipped trade-off setting."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cicy_search.errors import CicyError
from cicy_search.experiments import biasvar, tradeoff

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "test-reporting-tradeoff"


def _write(tmp_path, **raw) -> Path:
    path = tmp_path / "bv.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_recipe_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(CicyError, match="unknown key 'levels'"):
        tradeoff.load(_write(tmp_path, vary={"param": "model.width", "values": [4, 8]}, levels=3))
    with pytest.raises(CicyError, match="vary: expected"):
        tradeoff.load(_write(tmp_path, vary={"param": "model.width", "values": [4]}))
    with pytest.raises(CicyError, match="replicas: expected an integer"):
        tradeoff.load(_write(tmp_path, vary={"param": "model.width", "values": [4, 8]}, replicas="many"))
    recipe = tradeoff.load(_write(tmp_path, vary={"param": "train.epochs", "values": [1, 2]}))
    with pytest.raises(CicyError, match="--epochs: this recipe varies train.epochs"):
        tradeoff.recipe_config(recipe, epochs=3)
    assert not tradeoff.is_recipe(ROOT / "recipes" / "overfitting.yaml")


def test_shipped_recipe_is_the_trade_off_setting():
    """A small training set, no early stopping, squared loss, training time from far too short to far too long."""
    path = ROOT / "recipes" / "biasvar.yaml"
    assert tradeoff.is_recipe(path)
    recipe = tradeoff.load(path)
    cfg = tradeoff.recipe_config(recipe)
    assert cfg["model"]["family"] == "dense" and cfg["model"]["head"] == "regression"
    assert cfg["train"]["early_stopping"] == 0 and cfg["data"]["train"] <= 0.1 and cfg["data"]["val"] >= 0.2
    assert recipe["param"] == "train.epochs" and recipe["values"] == sorted(recipe["values"])
    assert recipe["values"][-1] / recipe["values"][0] >= 100 and recipe["replicas"] >= 8
    assert len(biasvar.level_configs(cfg, recipe["param"], recipe["values"])) == len(recipe["values"])


@pytest.mark.slow
def test_recipe_runs_the_decomposition_with_the_replicas_spread(tmp_path, mlflow_client, tracking_uri, capsys):
    path = _write(
        tmp_path, name="bv", experiment=EXPERIMENT, config="dense", override={"data": {"limit": 400}},
        vary={"param": "train.epochs", "values": [1, 3]}, replicas=2,
    )
    out = tmp_path / "bv.html"
    code = run_cli("report", "recipe", str(path), "--tracking-uri", tracking_uri, "--out", str(out), "--no-png", "--replicas", "3")
    assert code == 0 and "error_sd" in capsys.readouterr().out
    exp = mlflow_client.get_experiment_by_name(EXPERIMENT)
    runs = mlflow_client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("report") == "biasvar")
    assert parent.data.params["biasvar.replicas"] == "3" and parent.data.params["biasvar.param"] == "train.epochs"
    table = pd.read_csv(out.with_suffix("") / "table.csv")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    for _, row in table.iterrows():
        # One replica's 0-1 error is 1 - its logged validation accuracy: the spread is theirs.
        errors = [1 - r.data.metrics["val_accuracy"] for r in children if r.data.params["train.epochs"] == str(row["train.epochs"])]
        assert len(errors) == 3
        assert row.error_sd == pytest.approx(np.std(errors, ddof=1), abs=1e-9)
        assert row.error_min == pytest.approx(min(errors)) and row.error_max == pytest.approx(max(errors))
    fig = biasvar.figure(table, "train.epochs")
    band = [t for t in fig.data if t.fill == "toself"]
    assert len(band) == 1 and len(band[0].x) == 4


def test_replica_spread_under_squared_loss():
    preds = np.array([[1.0, 2.0], [3.0, 2.0]])
    spread = biasvar.replica_spread("squared", preds, np.array([1, 2]))
    assert spread == {"error_sd": pytest.approx(np.std([0.0, 2.0], ddof=1)), "error_min": 0.0, "error_max": 2.0}
