"""Studies end to end: real Optuna SQLite storage, real MLflow SQLite store, real Keras on data slices."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from cicy_search.search import study as studies
from cicy_search.search.budget import count_finished
from cicy_search.search import studyfile
from cicy_search.errors import CicyError

from .conftest import TINY_STUDY, run_cli, study_spec

def child_runs(client, study):
    exp = client.get_experiment_by_name(study.user_attrs["mlflow_experiment"])
    parent = study.user_attrs["mlflow_parent_run_id"]
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]


@pytest.mark.slow
def test_trials_and_mlflow_runs_match_one_to_one_and_resume_adds(tmp_path, tracking_uri, mlflow_client):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    spec = study_spec("match")
    summary = studies.run(spec, storage=storage, tracking_uri=tracking_uri)
    study = summary.study
    assert summary.finished == 3 and len(study.trials) == 3
    runs = {r.info.run_id: r for r in child_runs(mlflow_client, study)}
    assert len(runs) == 3
    for t in study.trials:
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["trial"] == str(t.number)
        assert run.data.metrics["val_accuracy"] == pytest.approx(t.value)
        assert run.data.params["model.depth"] == str(t.params["model.depth"])
        widths = [t.params[f"model.width.{i}"] for i in range(t.params["model.depth"])]
        assert run.data.params["model.width"] == str(widths)
        assert float(run.data.params["train.learning_rate"]) == pytest.approx(t.params["train.learning_rate"])
        assert run.data.params["seed"] == str(t.user_attrs["seed"])
        history = mlflow_client.get_metric_history(run.info.run_id, "epoch_val_accuracy")
        assert sorted(h.step for h in history) == [0, 1]
        assert {"study", "trial", "sampler", "host", "process", "device", "dataset_hash", "git_commit"} <= set(run.data.tags)
    # Only trials that were the best so far carry a model; the study's best always does.
    assert runs[study.best_trial.user_attrs["mlflow_run_id"]].data.tags.get("model_logged") == "true"
    assert sum(r.data.tags.get("model_logged") == "true" for r in runs.values()) <= 3

    # Resume: same name, same storage, a larger budget adds trials and duplicates nothing.
    again = studies.run(spec, storage=storage, tracking_uri=tracking_uri, n_trials=5).study
    assert [t.number for t in again.trials] == [0, 1, 2, 3, 4]
    assert len(child_runs(mlflow_client, again)) == 5
    assert again.user_attrs["mlflow_parent_run_id"] == study.user_attrs["mlflow_parent_run_id"]
    seen = [tuple(sorted(t.params.items())) for t in again.trials]
    assert len(set(seen)) == 5  # a resumed sampler does not replay its first draws


def test_an_ensemble_trial_reports_its_members_epochs_one_after_another(tmp_path, tracking_uri, mlflow_client):
    spec = study_spec("ens", train={"epochs": 2, "ensemble": 2}, pruner={"name": "median"}, budget={"n_trials": 1})
    study = studies.run(spec, storage=f"sqlite:///{tmp_path / 'o.db'}", tracking_uri=tracking_uri).study
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and sorted(trial.intermediate_values) == [0, 1, 2, 3]
    (run,) = child_runs(mlflow_client, study)
    history = mlflow_client.get_metric_history(run.info.run_id, "epoch_val_accuracy")
    assert sorted(h.step for h in history) == [0, 1, 2, 3] and run.data.metrics["epochs_run"] == 4
    assert run.data.params["train.ensemble"] == "2" and run.data.tags.get("model_logged") == "true"


@pytest.mark.slow
def test_pruned_trials_are_pruned_in_optuna_and_mlflow(tmp_path, tracking_uri, mlflow_client):
    spec = study_spec("pruned", pruner={"name": "threshold", "lower": 1.01}, budget={"n_trials": 2})
    study = studies.run(spec, storage=f"sqlite:///{tmp_path / 'o.db'}", tracking_uri=tracking_uri).study
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    for run in child_runs(mlflow_client, study):
        assert run.info.status == "KILLED" and run.data.tags["state"] == "pruned"
        assert len(mlflow_client.get_metric_history(run.info.run_id, "epoch_val_accuracy")) == 1


@pytest.mark.slow
def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on(tmp_path, tracking_uri, mlflow_client):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    spec = study_spec(
        "diverge",
        model={"head": "regression"},
        train={"epochs": 2, "optimizer": "sgd"},
        space={"train.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        budget={"n_trials": 2},
    )
    studies.create(spec, storage=storage, tracking_uri=tracking_uri).enqueue_trial({"train.learning_rate": 1e30})
    study = studies.run(spec, storage=storage, tracking_uri=tracking_uri, n_trials=2).study
    first = study.trials[0]
    assert first.state == optuna.trial.TrialState.FAIL
    assert "training diverged" in first.user_attrs["fail_reason"]
    assert count_finished(study) == 2  # failed trials do not use up the budget
    failed = [r for r in child_runs(mlflow_client, study) if r.info.status == "FAILED"]
    assert len(failed) == 1 and "training diverged" in failed[0].data.tags["failure_reason"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"space": {"model.depth": {"type": "int", "low": 5, "high": 1}}}, "bad range, low = 5 > high = 1"),
        ({"space": {"model.kernels": {"type": "categorical", "choices": ["3x3"]}}}, "unknown key model.kernels"),
        ({"space": {"model.dropout": {"type": "float", "low": 0.0, "high": 1.5}}}, "model.dropout: expected a rate"),
        ({"space": {"model.l1": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}}, "log range needs low > 0"),
        ({"space": {"model.depth": {"type": "integer", "low": 1, "high": 3}}}, "space.model.depth.type"),
        ({"sampler": {"name": "bayes"}}, "unknown sampler 'bayes'"),
        ({"sampler": {"name": "tpe", "n_startup": 3}}, "sampler.n_startup: not a setting of the tpe sampler"),
        ({"pruner": {"name": "median", "warmup": 2}}, "pruner.warmup: not a setting"),
        ({"objective": "test_accuracy"}, "never used for selection"),
        ({"objectives": ["val_accuracy", "n_params"], "pruner": "median"}, "cannot prune multi-objective"),
        ({"model": {"family": "svm"}, "space": {"model.C": {"type": "float", "low": 1, "high": 10}}, "objective": "val_loss"}, "SVM has no training loss"),
        ({"enqueue": {"model.depth": 2}}, "enqueue: expected a list of mappings"),
        ({"enqueue": [{}]}, "enqueue[0]: expected a mapping of space keys"),
        ({"enqueue": [{"model.depht": 2}]}, "enqueue[0].model.depht: not a key of the space"),
        ({"enqueue": [{"train.learning_rate": 0.002}, {"model.depth": 4}]}, "enqueue[1].model.depth: 4 is outside [1, 3]"),
        ({"enqueue": [{"model.depth": 1.5}]}, "enqueue[0].model.depth: 1.5 is not an integer"),
        ({"enqueue": [{"model.depth": True}]}, "enqueue[0].model.depth: True is not an integer"),
        ({"enqueue": [{"train.learning_rate": "fast"}]}, "'fast' is not a number"),
        ({"enqueue": [{"model.width": 8}]}, "enqueue[0].model.width: sampled per model.depth"),
        (
            {
                "space": {k: {"type": "categorical", "choices": v} for k, v in (("model.rows_offset", [False, True]), ("model.head", ["classification", "regression"]))},
                "enqueue": [{"model.rows_offset": True, "model.head": "classification"}, {"model.rows_offset": True, "model.head": "regression"}],
            },
            "enqueue[1]: model.rows_offset: offsets a classification head of h11",
        ),
    ],
)
def test_bad_study_files_fail_on_load_with_one_line(change, message):
    with pytest.raises(CicyError) as e:
        studyfile.parse({"study": "bad", **TINY_STUDY, **change})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_study_file_creates_nothing(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"study": "bad", **TINY_STUDY, "space": {"model.widht": {"type": "int", "low": 1, "high": 2}}}))
    storage = tmp_path / "o.db"
    assert run_cli("study", "run", str(path), "--storage", f"sqlite:///{storage}") == 2
    err = capsys.readouterr().err
    assert "model.widht" in err and len(err.strip().splitlines()) == 1
    assert not storage.exists() and not (tmp_path / "home").exists()


def test_shipped_study_files_all_load():
    # cicy4_* need the imported 4-fold list: tests/test_cicy4.py loads them on an imported synthetic one.
    files = sorted(p for p in os.listdir("studies") if p.endswith(".yaml") and not p.startswith("cicy4_"))
    assert {"quickstart.yaml", "dense_h11.yaml", "cnn_h11.yaml", "inception_h11.yaml", "inception_h21.yaml", "svm_h11.yaml"} <= set(files)
    specs = [studyfile.load(f"studies/{f}") for f in files]
    assert any(len(s.objectives) > 1 for s in specs)
    inception = next(s for s in specs if s.name == "inception_h11")
    assert any(p.name == "model.kernels" for p in inception.params)


@pytest.mark.slow
def test_status_and_best_commands(tmp_path, tracking_uri, capsys):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    assert run_cli("study", "best", "nothing", "--storage", storage) == 2
    assert "no study 'nothing'" in capsys.readouterr().err
    studies.run(study_spec("cli", budget={"n_trials": 2}), storage=storage, tracking_uri=tracking_uri)
    assert run_cli("study", "status", "cli", "--storage", storage) == 0
    out = capsys.readouterr().out
    assert out.count("COMPLETE") == 2
    assert run_cli("study", "best", "cli", "--storage", storage) == 0
    assert "best trial" in capsys.readouterr().out


def _wait_for(condition, seconds: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


# The CLI in a process of its own whose trial runs write their epochs' metrics at once, not ``tracking.FLUSH_SECONDS``
# (15 s) into training: the test's signal can come after the first epoch, not after 15 s of training.
EARLY_METRICS = """import sys
from cicy_search import tracking
tracking.FLUSH_SECONDS = 0.2
from cicy_search.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_marks_the_running_trial_failed_in_optuna_and_mlflow(tmp_path, tracking_uri, mlflow_client, sig, code, said):
    """Ctrl-C and SIGTERM (docker stop, eviction, preemption, timeout) end a study the same way: the running
    trial failed in Optuna, its run FAILED with the reason, one line on stderr. The trial cannot end on its
    own (100,000 epochs): the signal is sent once an epoch has been logged, whatever this machine's speed."""
    name = f"signal-{sig.name.lower()}"
    # Long epochs (3000 matrices): a signal that lands in Keras's per-epoch log handling instead of in TensorFlow is
    # swallowed there (``pythonify_logs`` catches everything), and the study trains on.
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump({"study": name, **TINY_STUDY, "data": {"limit": 3000}, "train": {"epochs": 100_000}, "budget": {"n_trials": 1}}))
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    cmd = [sys.executable, "-c", EARLY_METRICS, "study", "run", str(path), "--storage", storage, "--tracking-uri", tracking_uri]
    # Ctrl-C's default action, even when this suite runs in the background (where a shell starts it, and so this
    # child, with SIGINT ignored, and Python then keeps it ignored).
    restore = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if sig == signal.SIGINT else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=restore)
    try:

        def study():
            try:
                return optuna.load_study(study_name=name, storage=storage)
            except KeyError:
                return None

        def run_id(study):
            trials = study.get_trials(deepcopy=False)
            return trials and trials[0].user_attrs.get("mlflow_run_id")

        # Once its trial starts, the process trains flat out until the signal: from then on each poll it waits for
        # costs a core, and the polls read from one storage object.
        created = _wait_for(study, 240, "the study")
        run = _wait_for(lambda: run_id(created), 240, "the trial's MLflow run", poll=0.1)
        _wait_for(lambda: mlflow_client.get_metric_history(run, "epoch_loss"), 360, "an epoch logged", poll=0.1)
        assert proc.poll() is None  # still training: it cannot have finished on its own
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, (out.decode()[-2000:], err.decode()[-2000:])
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(said), err.decode()[-3000:]  # no Optuna traceback
    trial = optuna.load_study(study_name=name, storage=storage).trials[0]
    assert trial.state == optuna.trial.TrialState.FAIL
    finished = mlflow_client.get_run(trial.user_attrs["mlflow_run_id"])
    assert finished.info.status == "FAILED" and finished.data.tags["state"] == "interrupted"
    assert finished.data.tags["failure_reason"] == ("terminated by SIGTERM" if sig == signal.SIGTERM else "KeyboardInterrupt")


def test_a_study_whose_every_trial_fails_the_same_way_stops_with_one_line(tmp_path, tracking_uri, monkeypatch, capsys):
    from cicy_search.tracking import runner

    def broken(config, **kwargs):
        raise RuntimeError("CUDA_ERROR_OUT_OF_MEMORY: out of memory")

    monkeypatch.setattr(runner, "run_tracked", broken)  # the objective imports it when a trial runs
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"study": "always-fails", **TINY_STUDY, "budget": {"n_trials": 20}}))
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    assert run_cli("study", "run", str(path), "--storage", storage, "--tracking-uri", tracking_uri) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: study 'always-fails': the last 3 trials all failed with the same error and none finished, "
        "so the study stops: CUDA_ERROR_OUT_OF_MEMORY: out of memory"
    )
    study = optuna.load_study(study_name="always-fails", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 3


def test_the_new_trials_count_is_this_process_s_own(tmp_path, tracking_uri, monkeypatch, capsys):
    """Another worker's trials finishing meanwhile count toward the budget, not as this process's new trials."""
    from cicy_search.search import objective

    storage = f"sqlite:///{tmp_path / 'o.db'}"

    def fake(self, trial):
        depth = trial.suggest_int("model.depth", 1, 2)
        if trial.number == 0:  # meanwhile another worker completes a trial of the same study
            other = optuna.load_study(study_name="counted", storage=storage)
            other.add_trial(optuna.trial.create_trial(params={"model.depth": 1}, distributions=trial.distributions, value=0.1))
        return 0.5 + 0.1 * depth

    monkeypatch.setattr(objective.Objective, "__call__", fake)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"study": "counted", **TINY_STUDY, "budget": {"n_trials": 3}}))
    assert run_cli("study", "run", str(path), "--storage", storage, "--tracking-uri", tracking_uri) == 0
    assert "2 new trials" in capsys.readouterr().out
    assert len(optuna.load_study(study_name="counted", storage=storage).trials) == 3


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_processes_creating_one_study_on_fresh_stores_at_once_all_join_it(tmp_path):
    """The first process creates the stores, the study and its parent run; the other waits and joins (a third would
    take the second's path again: each process imports MLflow, seconds of CPU)."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"study": "together", **TINY_STUDY}))
    storage, tracking = f"sqlite:///{tmp_path / 'o.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "cicy_search.cli", "study", "create", str(path), "--storage", storage, "--tracking-uri", tracking]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err.decode()[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    (experiment,) = [e for e in client.search_experiments() if e.name == "together"]
    runs = client.search_runs([experiment.experiment_id])
    study = optuna.load_study(study_name="together", storage=storage)
    assert len(runs) == 1 and runs[0].info.run_id == study.user_attrs["mlflow_parent_run_id"]
    assert experiment.artifact_location == (tmp_path / "artifacts").as_uri()  # beside the store, not in the cwd


def test_enqueued_trials_run_first_once_and_the_sampler_fills_the_rest(tmp_path, tracking_uri, capsys):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = {**TINY_STUDY["space"], "model.activation": {"type": "categorical", "choices": ["relu", "tanh"]}}
    enqueue = [{"model.depth": 3, "train.learning_rate": 0.005, "model.activation": "tanh"}, {"model.depth": 1}]
    spec = study_spec("queued", space=space, enqueue=enqueue, budget={"n_trials": 3})
    study = studies.run(spec, storage=storage, tracking_uri=tracking_uri).study
    first, second, third = study.trials
    assert {k: first.params[k] for k in enqueue[0]} == enqueue[0]
    assert second.params["model.depth"] == 1 and {"model.width.0", "train.learning_rate", "model.activation"} <= set(second.params)
    assert third.params["train.learning_rate"] not in (0.005, second.params["train.learning_rate"])  # the sampler's own
    # Resumed (and created again by another worker): the queue is not run twice.
    again = studies.run(spec, storage=storage, tracking_uri=tracking_uri, n_trials=4).study
    assert len(again.trials) == 4 and [t.params["train.learning_rate"] for t in again.trials].count(0.005) == 1


def test_keras_tuner_refuses_enqueued_trials():
    from cicy_search.search import tuner

    with pytest.raises(CicyError, match="enqueue: Optuna runs enqueued trials first"):
        tuner.check(study_spec("queued", enqueue=[{"model.depth": 2}]), "random")
