"""``cicy-search train``: one real MLflow run with params, per-epoch history and a reloadable model."""

import numpy as np
import yaml

from cicy_search import bundle, data
from cicy_search.config import load_config

from .conftest import run_cli


def _write(tmp_path, config):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _runs(client, experiment="cicy-search-train"):
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_train_logs_exactly_one_complete_run(tmp_path, mlflow_client, tracking_uri):
    before = len(_runs(mlflow_client))
    config = _write(tmp_path, {"name": "cli-dense", "data": {"limit": 500}, "train": {"epochs": 3}})
    assert run_cli("train", config, "--tracking-uri", tracking_uri, "--seed", "7") == 0
    runs = _runs(mlflow_client)
    assert len(runs) == before + 1
    run = next(r for r in runs if r.data.params.get("name") == "cli-dense")
    assert run.info.status == "FINISHED"
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    assert p["model.family"] == "dense" and p["model.width"] == "128" and p["seed"] == "7" and p["train.epochs"] == "3"
    assert m["n_params"] == 58643 and 0 <= m["test_accuracy"] <= 1 and m["train_seconds"] > 0
    assert t["dataset_hash"] == data.dataset_hash("original") and t["device"] == "cpu" and t["git_commit"]
    for key in ("epoch_loss", "epoch_val_loss", "epoch_accuracy", "epoch_val_accuracy"):
        history = mlflow_client.get_metric_history(run.info.run_id, key)
        assert [h.step for h in sorted(history, key=lambda h: h.step)] == [0, 1, 2]

    # The model artifact reloads and predicts what the run measured.
    folder = mlflow_client.download_artifacts(run.info.run_id, "model", str(tmp_path))
    loaded = bundle.load(folder)
    full = data.load()
    quintic = full.x[full.frame["id"] == 7890]
    assert loaded.predict(quintic)["h11"].shape == (1,)
    from cicy_search.training import evaluate, prepare

    metrics = evaluate(loaded.model, prepare(loaded.config), "classification")
    assert np.isclose(metrics["test_accuracy"], m["test_accuracy"])
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert artifacts == {"model_summary.txt", "model", "test_misses.json"}
    # The config is the run's description; saved as a file, it trains the same run again.
    note = t["mlflow.note.content"]
    assert "`cicy-search train config.yaml`" in note
    (tmp_path / "config.yaml").write_text(note.split("```yaml\n", 1)[1].rsplit("```", 1)[0])
    assert load_config(str(tmp_path / "config.yaml")) == loaded.config
    assert not any(a.endswith(".html") for a in artifacts)  # MLflow charts the epoch_* curves itself; nothing online
    summary = mlflow_client.download_artifacts(run.info.run_id, "model_summary.txt", str(tmp_path))
    assert "58,643" in open(summary).read()

    # The data set is an MLflow input: the list, one digest per split, its context and sizes in the profile.
    inputs = {i.tags[0].value: i.dataset for i in mlflow_client.get_run(run.info.run_id).inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation", "test"}
    assert {d.name for d in inputs.values()} == {"original"} and len({d.digest for d in inputs.values()}) == 3
    import json

    profile = json.loads(inputs["training"].profile)
    assert profile["sha256"] == data.dataset_hash("original") and profile["num_rows"] == int(p["data.n_train"])
    assert profile["seed"] == 0 and profile["limit"] == 500 and json.loads(inputs["test"].source)["sha256"] == profile["sha256"]


def test_bad_config_is_one_line_exit_2_and_leaves_no_run(tmp_path, mlflow_client, tracking_uri, capsys):
    before = len(_runs(mlflow_client))
    cases = {
        "unknown model": {"model": {"family": "transformer"}},
        "unknown key": {"model": {"widht": 64}},
        "wrong type": {"train": {"epochs": "ten"}},
    }
    for config in cases.values():
        assert run_cli("train", _write(tmp_path, config), "--tracking-uri", tracking_uri) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1
    assert run_cli("train", str(tmp_path / "missing.yaml"), "--tracking-uri", tracking_uri) == 2
    assert "no such file" in capsys.readouterr().err
    assert len(_runs(mlflow_client)) == before


def test_unreachable_tracking_server_is_one_line(capsys):
    assert run_cli("train", "svm", "--tracking-uri", "http://127.0.0.1:9") == 2
    err = capsys.readouterr().err
    assert "unreachable" in err and len(err.strip().splitlines()) == 1


def test_data_info_prints_the_summary(capsys):
    assert run_cli("data", "info") == 0
    out = capsys.readouterr().out
    assert "7868" in out and "1 .. 19" in out
