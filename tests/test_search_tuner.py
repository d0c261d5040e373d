"""keras-tuner over the same study file: trials train through run_tracked and are logged live; compare-engines."""

import _thread
import json
import signal
import threading
import time

import pytest
import yaml

from cicy_search.errors import CicyError

from .conftest import TINY_STUDY, run_cli, study_spec


def children(client, experiment, parent_run_id):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=1000)
    return sorted(runs, key=lambda r: (int(r.data.tags["trial"]), r.info.start_time))


def steps(client, run, metric="epoch_loss"):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)]


@pytest.mark.slow
def test_keras_tuner_searches_the_study_space_and_logs_every_trial(tmp_path, tracking_uri, mlflow_client):
    from cicy_search.search.tuner import tune

    spec = study_spec("kt")
    summary = tune(spec, max_trials=2, tracking_uri=tracking_uri, directory=str(tmp_path))
    assert summary.n_trials == 2 and 0 <= summary.best_val_accuracy <= 1
    runs = children(mlflow_client, "kt-keras-tuner", summary.parent_run_id)
    assert len(runs) == 2
    for run in runs:
        depth = int(run.data.params["model.depth"])
        assert 1 <= depth <= 3 and len(eval(run.data.params["model.width"])) == depth  # per-layer widths, as with Optuna
        assert len(mlflow_client.get_metric_history(run.info.run_id, "epoch_val_accuracy")) == 2
        assert {i.tags[0].value for i in run.inputs.dataset_inputs} == {"training", "validation", "test"}
        # The Optuna trial's params and tags: the project's training path, not model.fit.
        assert {"trial.number", "train.loop", "train.early_stopping", "data.n_train", "seed"} <= set(run.data.params)
        assert run.data.params["train.loop"] == "fast" and run.data.tags["state"] == "complete" and run.info.status == "FINISHED"
        assert run.data.tags["engine"] == "keras-tuner" and run.info.run_name == f"trial-{run.data.tags['trial']}"
        assert "test_accuracy" not in run.data.metrics and run.data.metrics["epochs_run"] == 2
    assert max(r.data.metrics["val_accuracy"] for r in runs) == pytest.approx(summary.best_value)


@pytest.mark.slow
def test_hyperband_trains_the_oracles_epochs_and_continues_the_best_model(tmp_path, tracking_uri, mlflow_client, capsys):
    from cicy_search.search.tuner import tune

    # max_epochs 3, factor 3: the first bracket trains three trials for 1 epoch, then continues the best to 3.
    spec = study_spec("kthb", train={"epochs": 3})
    summary = tune(spec, max_trials=4, algorithm="hyperband", tracking_uri=tracking_uri, directory=str(tmp_path))
    runs = children(mlflow_client, "kthb-keras-tuner", summary.parent_run_id)
    assert [r.data.tags["trial"] for r in runs] == ["0", "1", "2", "3"]
    first, last = runs[:3], runs[3]
    for run in first:
        assert run.data.params["train.epochs"] == "1" and [s for s, _ in steps(mlflow_client, run)] == [0]
    best = max(first, key=lambda r: (r.data.metrics["val_accuracy"], -int(r.data.tags["trial"])))
    assert last.data.tags["tuner.continues"] == best.data.tags["trial"] and last.data.params["train.epochs"] == "3"
    # Only the two epochs it trained, at their epoch numbers, continuing the saved model (weights and optimizer).
    assert [s for s, _ in steps(mlflow_client, last)] == [1, 2] and last.data.metrics["epochs_run"] == 2
    assert steps(mlflow_client, last)[0][1] < steps(mlflow_client, best)[0][1]
    assert best.data.tags.get("model_logged") == "true"  # the best so far keeps its model, as in an Optuna study

    # A search folder keras-tuner cannot reload: one line, and the finished search's MLflow run is left as it was.
    (tmp_path / "kthb-hyperband" / "oracle.json").write_text("{")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"study": "kthb", **TINY_STUDY, "train": {"epochs": 3}}))
    args = ["--algorithm", "hyperband", "--max-trials", "5", "--tracking-uri", tracking_uri, "--directory", str(tmp_path)]
    assert run_cli("study", "tune", str(path), *args) == 2
    err = capsys.readouterr().err.strip()
    assert "kthb-hyperband: the keras-tuner search there cannot be resumed" in err and len(err.splitlines()) == 1
    assert mlflow_client.get_run(summary.parent_run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_an_interrupted_search_keeps_its_finished_trials_and_resumes(tmp_path, tracking_uri, mlflow_client, monkeypatch):
    from cicy_search import tracking
    from cicy_search.search import tuner as tuner_module
    from cicy_search.search.tuner import tune

    spec = study_spec("ktint", pruner={"name": "median", "n_startup_trials": 1})
    seen = {}
    fired = threading.Event()
    printer = tuner_module._printer

    def held_printer(console, spec, budget):
        """The search cannot end before the Ctrl-C: pruned trials can all finish before the first run's end is in
        MLflow (its model is written first), and a Ctrl-C after the search is no test of one during it."""
        report = printer(console, spec, budget)

        def on_trial(end):
            report(end)
            if end.number + 1 >= budget:
                fired.wait(120)

        return on_trial

    monkeypatch.setattr(tuner_module, "_printer", held_printer)

    def interrupt_once_a_trial_is_in_mlflow():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            exp = mlflow_client.get_experiment_by_name("ktint-keras-tuner")
            done = [r for r in mlflow_client.search_runs([exp.experiment_id]) if r.info.status == "FINISHED"] if exp else []
            if done:
                seen["curve"] = steps(mlflow_client, done[0], "epoch_val_accuracy")
                _thread.interrupt_main()  # Ctrl-C, while the search goes on
                fired.set()
                return
            time.sleep(0.1)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a suite run in the background ignores SIGINT
    try:
        watcher = threading.Thread(target=interrupt_once_a_trial_is_in_mlflow)
        watcher.start()
        with pytest.raises(KeyboardInterrupt):
            tune(spec, max_trials=6, algorithm="random", tracking_uri=tracking_uri, directory=str(tmp_path))
        watcher.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert [s for s, _ in seen["curve"]] == [0, 1]  # a finished trial's curve was in MLflow while the search ran
    tracking.uploader().flush()
    exp = mlflow_client.get_experiment_by_name("ktint-keras-tuner")
    (parent,) = mlflow_client.search_runs([exp.experiment_id], filter_string="tags.role = 'study'")
    assert parent.info.status == "KILLED"
    before = children(mlflow_client, "ktint-keras-tuner", parent.info.run_id)
    finished = [r for r in before if r.info.status in ("FINISHED", "KILLED")]
    interrupted = [r for r in before if r.data.tags.get("state") == "interrupted"]
    assert finished and len(interrupted) <= 1 and all(r.info.status == "FAILED" for r in interrupted)
    assert all(len(steps(mlflow_client, r)) >= 1 for r in finished)

    summary = tune(spec, max_trials=6, algorithm="random", tracking_uri=tracking_uri, directory=str(tmp_path))
    assert summary.parent_run_id == parent.info.run_id and summary.n_trials == 6 and summary.new_trials <= 6 - len(finished)
    after = children(mlflow_client, "ktint-keras-tuner", parent.info.run_id)
    done = [r for r in after if r.data.tags["state"] in ("complete", "pruned")]
    assert sorted(int(r.data.tags["trial"]) for r in done) == list(range(6))  # the interrupted trial ran again
    assert {r.info.run_id for r in finished} <= {r.info.run_id for r in done}
    assert mlflow_client.get_run(parent.info.run_id).info.status == "FINISHED"


def _study_file(tmp_path, **changes):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"study": "kterr", **TINY_STUDY, **changes}))
    return str(path)


@pytest.mark.parametrize(
    "changes, args, words",
    [
        ({"objectives": ["val_accuracy", "n_params"]}, [], ["objectives: keras-tuner searches single-objective studies"]),
        ({"pruner": "median"}, ["--algorithm", "hyperband"], ["pruner: median: hyperband stops poor trials itself"]),
        ({"pruner": {"name": "hyperband", "min_resource": 2}}, ["--algorithm", "hyperband"], ["pruner.min_resource: keras-tuner's hyperband needs 1"]),
        ({"base": "svm", "train": {}, "space": {"model.C": {"type": "float", "low": 0.1, "high": 10, "log": True}}}, ["--algorithm", "hyperband"], ["model.family svm: hyperband"]),
        ({"space": {**TINY_STUDY["space"], "train.epochs": {"type": "int", "low": 1, "high": 3}}}, ["--algorithm", "hyperband"], ["space.train.epochs: hyperband chooses"]),
        ({"train": {"epochs": 2, "ensemble": 2}}, ["--algorithm", "hyperband"], ["train.ensemble: hyperband continues one model"]),
        ({"space": {**TINY_STUDY["space"], "train.ensemble": {"type": "int", "low": 1, "high": 3}}}, ["--algorithm", "hyperband"], ["train.ensemble: hyperband"]),
        ({}, ["--algorithm", "grid"], ["--algorithm: unknown keras-tuner algorithm 'grid'"]),
        ({}, ["--max-trials", "0"], ["--max-trials: expected an integer from 1"]),
    ],
)
def test_study_options_keras_tuner_cannot_honour_fail_at_load(tmp_path, monkeypatch, capsys, changes, args, words):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "m.db"
    code = run_cli("study", "tune", _study_file(tmp_path, **changes), *args, "--tracking-uri", f"sqlite:///{store}", "--directory", str(tmp_path / "kt"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not store.exists() and not (tmp_path / "kt").exists()


def test_the_python_api_refuses_too():
    from cicy_search.search.tuner import tune

    spec = study_spec("kt2", objectives=["val_accuracy", "n_params"])
    with pytest.raises(CicyError, match="single-objective"):
        tune(spec, max_trials=1)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--epochs-budget", "0"], ["--epochs-budget: expected an integer from 1"]),
        (["--epochs-budget", "4", "--seeds", "0"], ["--seeds: expected an integer from 1 to 100"]),
    ],
)
def test_compare_engines_usage_errors(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "m.db"
    assert run_cli("study", "compare-engines", _study_file(tmp_path), *args, "--tracking-uri", f"sqlite:///{store}") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not store.exists()


@pytest.mark.slow
def test_compare_engines_spends_equal_epochs_and_reports(tmp_path, monkeypatch, tracking_uri, mlflow_client, capsys):
    monkeypatch.chdir(tmp_path)
    study = _study_file(
        tmp_path, study="kcmp", train={"epochs": 3},
        sampler={"name": "tpe", "seed": 1, "n_startup_trials": 2}, pruner={"name": "median", "n_startup_trials": 1},
    )
    out, numbers = tmp_path / "r" / "cmp.html", tmp_path / "cmp.json"
    code = run_cli("study", "compare-engines", study, "--epochs-budget", "5", "--seeds", "1", "--tracking-uri", tracking_uri,
                   "--out", str(out), "--json", str(numbers), "--no-png")
    assert code == 0, capsys.readouterr().err
    data = json.loads(numbers.read_text())
    assert [r["engine"] for r in data["runs"]] == ["optuna-tpe", "kt-hyperband", "kt-bayesian"]
    for r in data["runs"]:
        # Equal budgets, from what MLflow recorded: the epochs of every trial run (pruned, continued and cut ones too).
        trial_runs = children(mlflow_client, "kcmp-compare-engines", r["run_id"])
        assert len(trial_runs) == len(r["trials"]) >= 2
        assert sum(len(steps(mlflow_client, t)) for t in trial_runs) == r["epochs_spent"] == 5
        assert [t["epochs"] for t in r["trials"]] == sorted(t["epochs"] for t in r["trials"]) and r["trials"][-1]["epochs"] == 5
        w = r["winner"]
        assert w["value"] == max(t["value"] for t in r["trials"] if t["value"] is not None)
        assert w["run_id"] in {t.info.run_id for t in trial_runs} and 0 <= r["test_value"] <= 1
    hb = next(r for r in data["runs"] if r["engine"] == "kt-hyperband")
    assert [t["epochs"] for t in hb["trials"]][:3] == [1, 2, 3]  # hyperband's first round: one epoch a trial
    page = out.read_text()
    assert "<script src=" not in page and "plotly.js v" in page and "figure-best_val_accuracy_against_the_budget_1" in page
    parent = mlflow_client.get_run(data["runs"][0]["run_id"]).data.tags["mlflow.parentRunId"]
    names = {a.path for a in mlflow_client.list_artifacts(parent, "report")}
    assert "report/cmp.html" in names
    assert mlflow_client.get_run(parent).info.status == "FINISHED"


@pytest.mark.slow
def test_a_search_whose_trials_all_fail_stops_with_one_line(tmp_path, monkeypatch, tracking_uri, mlflow_client, capsys):
    monkeypatch.chdir(tmp_path)
    study = _study_file(
        tmp_path, study="ktfail", model={"head": "regression"}, train={"epochs": 2, "optimizer": "sgd"},
        space={"train.learning_rate": {"type": "float", "low": 1e29, "high": 1e30, "log": True}},
    )
    assert run_cli("study", "tune", study, "--max-trials", "10", "--tracking-uri", tracking_uri, "--directory", str(tmp_path / "kt")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: keras-tuner stopped: the last 3 trials failed (training diverged") and "\n" not in err
    exp = mlflow_client.get_experiment_by_name("ktfail-keras-tuner")
    runs = mlflow_client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("role") == "study")
    trials = [r for r in runs if r is not parent]
    assert parent.info.status == "FAILED" and len(trials) == 3
    assert all(r.info.status == "FAILED" and "training diverged" in r.data.tags["failure_reason"] for r in trials)


