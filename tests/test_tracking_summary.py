"""The study's MLflow parent run as its summary, from real small studies (Optuna SQLite, MLflow SQLite or server)."""

import json

import optuna
import pytest
import yaml
from optuna.trial import TrialState, create_trial

from cicy_search.search import study as studies
from cicy_search.tracking import summary

from .conftest import TINY_STUDY, run_cli, store_copy, study_spec
from .services import MlflowServer

def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.mark.slow
def test_the_parent_run_summarises_the_study(tmp_path, tracking_uri, mlflow_client, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")  # restored after the test
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    created = studies.create(study_spec("summary"), storage=storage, tracking_uri=tracking_uri)
    parent_id = created.user_attrs["mlflow_parent_run_id"]
    assert mlflow_client.get_run(parent_id).info.status == "SCHEDULED"  # made, not yet worked on

    study = studies.run(study_spec("summary"), storage=storage, tracking_uri=tracking_uri, system_metrics=True).study
    parent = mlflow_client.get_run(parent_id)
    trials = study.trials
    assert parent.info.status == "FINISHED" and parent.data.tags["budget_met"] == "true"
    assert parent.data.tags["trials_finished"] == "3" and parent.data.tags["budget"] == "3"
    # Its times span the study's work.
    assert parent.info.start_time <= min(t.datetime_start.timestamp() * 1000 for t in trials)
    assert parent.info.end_time >= max(t.datetime_complete.timestamp() * 1000 for t in trials)

    # The optimisation history, step = trial number: each trial's value and the best so far.
    values = [t.value for t in trials]
    assert history(mlflow_client, parent_id, "trial_val_accuracy") == list(enumerate(values))
    assert history(mlflow_client, parent_id, "best_val_accuracy") == [(i, max(values[: i + 1])) for i in range(3)]
    assert history(mlflow_client, parent_id, "trials_complete")[-1] == (2, 3.0)
    assert {"trials_pruned", "trials_failed"} <= set(parent.data.metrics)

    # The best trial: tags and a link in the run's description.
    best = study.best_trial
    run_id = best.user_attrs["mlflow_run_id"]
    assert parent.data.tags["best_trial"] == str(best.number) and parent.data.tags["best_run_id"] == run_id
    note = parent.data.tags["mlflow.note.content"]
    assert f"(#/experiments/{parent.info.experiment_id}/runs/{run_id})" in note and "3/3 trials finished" in note

    # The study report, offline, as an artifact; the data set as an input.
    folder = mlflow_client.download_artifacts(parent_id, "study_report", str(tmp_path))
    page = (tmp_path / "study_report" / "study-summary.html").read_text()
    assert "<script src=" not in page and "plotly.js v" in page and folder
    contexts = {i.tags[0].value for i in parent.inputs.dataset_inputs}
    assert contexts == {"training", "validation", "test"}

    # Trials log no test scores; they have the same data inputs, and (asked for) system metrics.
    for t in trials:
        run = mlflow_client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED" and "val_accuracy" in run.data.metrics
        assert not any(k.startswith("test_") for k in run.data.metrics), sorted(run.data.metrics)
        assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {i.dataset.digest for i in parent.inputs.dataset_inputs}
        assert "system/cpu_utilization_percentage" in run.data.metrics
        # The config on every trial (its description); the model and its summary only with a model kept (the best
        # so far when it ended).
        assert yaml.safe_load(run.data.tags["mlflow.note.content"].split("```yaml\n")[1].split("```")[0]) == t.user_attrs["config"]
        artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
        kept = run.data.tags.get("model_logged") == "true"
        assert artifacts == ({"model_summary.txt", "model"} if kept else set())
    assert mlflow_client.get_run(study.best_trial.user_attrs["mlflow_run_id"]).data.tags["model_logged"] == "true"


def test_a_study_stopped_short_of_its_budget_ends_killed_and_resumes(tmp_path, tracking_uri, mlflow_client, monkeypatch):
    import time

    from cicy_search.search import budget

    class Clock:  # each reading a second later: the 1e-6 s timeout has passed at the budget loop's first check
        def __init__(self):
            self.now = time.monotonic()

        def monotonic(self):
            self.now += 1.0
            return self.now

        def __getattr__(self, name):
            return getattr(time, name)

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    spec = study_spec("short", budget={"n_trials": 2})
    with monkeypatch.context() as patched:  # on the real clock a few lines can take under 1e-6 s: a trial then ran
        patched.setattr(budget, "time", Clock())
        study = studies.run(spec, storage=storage, tracking_uri=tracking_uri, timeout=1e-6, report=False).study
    parent = mlflow_client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "KILLED" and parent.data.tags["budget_met"] == "false" and parent.data.tags["trials_finished"] == "0"
    assert not mlflow_client.list_artifacts(parent.info.run_id, "study_report")
    study = studies.run(spec, storage=storage, tracking_uri=tracking_uri, report=False).study
    parent = mlflow_client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["budget_met"] == "true"


def _trial(number, state, values=None, run_id=None):
    t = create_trial(state=state, values=values, user_attrs={"mlflow_run_id": run_id} if run_id else {})
    t.number = number
    return t


def test_history_points_and_best_trials_follow_the_directions():
    up, down = optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE
    trials = [
        _trial(0, TrialState.COMPLETE, [0.5]),
        _trial(1, TrialState.PRUNED),
        _trial(2, TrialState.COMPLETE, [0.7]),
        _trial(3, TrialState.FAIL),
        _trial(4, TrialState.COMPLETE, [0.7]),
    ]
    point = summary.history_point(trials, 1, ["val_accuracy"], [up])
    assert point == {"trials_complete": 3, "trials_pruned": 1, "trials_failed": 1, "best_val_accuracy": 0.5}
    assert summary.history_point(trials, 4, ["val_accuracy"], [up])["trial_val_accuracy"] == 0.7
    assert summary.history_point(trials, 2, ["val_loss"], [down])["best_val_loss"] == 0.5
    assert [t.number for t in summary.best(trials, [up])] == [2]  # the earliest of equals, as Optuna's best_trial
    two = [_trial(0, TrialState.COMPLETE, [0.9, 100.0]), _trial(1, TrialState.COMPLETE, [0.8, 10.0]),
           _trial(2, TrialState.COMPLETE, [0.7, 50.0])]
    point = summary.history_point(two, 2, ["val_accuracy", "n_params"], [up, down])
    assert point["pareto_front_size"] == 2 and point["best_val_accuracy"] == 0.9 and point["best_n_params"] == 10.0
    assert [t.number for t in summary.best(two, [up, down])] == [0, 1]


def test_one_best_trial_rule_for_the_summary_the_best_command_and_the_objective():
    """``summary.best`` is what ``study best`` answers (``study.best_trials``), and what the objective's best-so-far
    check (whether a trial logs its model) agrees with, in either spelling of the directions."""
    from cicy_search.search.objective import is_best_so_far

    two = optuna.create_study(directions=["maximize", "minimize"])
    for values in ([0.9, 100.0], [0.8, 10.0], [0.7, 50.0]):
        two.add_trial(create_trial(values=values))
    assert [t.number for t in studies.best_trials(two)] == [0, 1] == [t.number for t in two.best_trials]
    assert not is_best_so_far(two, [0.75, 60.0], ["maximize", "minimize"])  # dominated by trial 2
    assert is_best_so_far(two, [0.85, 20.0], ["maximize", "minimize"])  # on the front
    one = optuna.create_study(direction="minimize")
    for value in (0.5, 0.3, 0.3):
        one.add_trial(create_trial(value=value))
    assert [t.number for t in studies.best_trials(one)] == [1] == [one.best_trial.number]
    assert is_best_so_far(one, [0.3], ["minimize"], number=1) and not is_best_so_far(one, [0.3], ["minimize"], number=2)
    with pytest.raises(Exception, match="no complete trial yet"):
        studies.best_trials(optuna.create_study())


def test_status_and_best_print_the_mlflow_ui_addresses(tmp_path, tracking_uri, mlflow_client, capsys):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = studies.run(study_spec("addresses", budget={"n_trials": 1}), storage=storage, tracking_uri=tracking_uri, report=False).study
    experiment = mlflow_client.get_experiment_by_name("addresses").experiment_id
    best_run = study.best_trial.user_attrs["mlflow_run_id"]
    for command in ("status", "best"):
        assert run_cli("study", command, "addresses", "--storage", storage) == 0
        out = capsys.readouterr().out
        assert f"mlflow ui --backend-store-uri {tracking_uri}" in out  # a local store: how to open the UI on it
        assert f"http://127.0.0.1:5000/#/experiments/{experiment}/runs\n" in out
        assert f"/#/experiments/{experiment}/runs/{best_run}" in out


@pytest.mark.slow
def test_on_a_tracking_server_the_addresses_are_the_servers(tmp_path, capsys, empty_mlflow_db):
    server = MlflowServer(store_copy(empty_mlflow_db, tmp_path / "server.db"), tmp_path / "artifacts", tmp_path / "server.log", "127.0.0.1:*,localhost:*")
    try:
        path = tmp_path / "served.yaml"
        path.write_text(yaml.safe_dump({"study": "served", **TINY_STUDY, "budget": {"n_trials": 1}}))
        storage = f"sqlite:///{tmp_path / 'optuna.db'}"
        assert run_cli("study", "run", str(path), "--storage", storage, "--tracking-uri", server.uri) == 0
        out = capsys.readouterr().out
        # MLflow's own "View run ... at" for every run it ends on a server (read back with one more request): not printed.
        assert "View run" not in out and "View experiment" not in out
        study = optuna.load_study(study_name="served", storage=storage)
        from cicy_search import tracking

        client = tracking.client(server.uri)
        parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
        run_url = f"{server.uri}/#/experiments/{parent.info.experiment_id}/runs/{study.best_trial.user_attrs['mlflow_run_id']}"
        assert f"study runs: {server.uri}/#/experiments/{parent.info.experiment_id}/runs\n" in out and run_url in out
        assert "mlflow ui" not in out and f"({run_url})" in parent.data.tags["mlflow.note.content"]
        assert {a.path for a in client.list_artifacts(parent.info.run_id, "study_report")} >= {"study_report/study-served.html"}
        assert json.loads(next(iter(parent.inputs.dataset_inputs)).dataset.profile)["limit"] == 400
        # The best trial's own artifacts (its model too), written straight to the server's artifact store.
        assert {a.path for a in client.list_artifacts(study.best_trial.user_attrs["mlflow_run_id"])} == {"model_summary.txt", "model"}
    finally:
        server.stop()


def _watched_parent(name, tmp_path, tracking_uri, mlflow_client, monkeypatch):
    """A study with its parent run RUNNING, and the list of ``(time, run id, log_batch keywords)`` its client writes."""
    import time

    study = studies.create(study_spec(name), storage=f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=tracking_uri)
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    mlflow_client.update_run(parent_id, status="RUNNING")
    writes = []
    log_batch = mlflow_client.log_batch
    monkeypatch.setattr(mlflow_client, "log_batch", lambda run_id, **kw: writes.append((time.monotonic(), run_id, kw)) or log_batch(run_id, **kw))
    return study, parent_id, writes


def test_trials_finishing_while_a_summary_write_is_queued_join_it(tmp_path, tracking_uri, mlflow_client, monkeypatch):
    """One write to the parent run for all trials that finished while the uploader was busy, every point kept."""
    import threading

    from cicy_search import tracking

    study, parent_id, writes = _watched_parent("coalesced", tmp_path, tracking_uri, mlflow_client, monkeypatch)
    for _ in range(2):  # two rounds of three trials: one write each
        uploader = tracking.uploader()
        keeper = summary.StudySummary(study, mlflow_client, budget=6, uploader=uploader)
        busy = threading.Event()
        uploader.submit(busy.wait)  # the uploader is behind: the trials below finish while their write waits
        for _ in range(3):
            trial = study.ask()
            study.tell(trial, trial.number / 10)
            keeper.after_trial(study, study.trials[trial.number])
        writes.clear()
        busy.set()
        assert uploader.flush(30) == []
        assert [run_id for _, run_id, _ in writes] == [parent_id]
    values = [t.value for t in study.trials]
    assert history(mlflow_client, parent_id, "trial_val_accuracy") == list(enumerate(values))
    assert history(mlflow_client, parent_id, "best_val_accuracy") == [(i, max(values[: i + 1])) for i in range(6)]


def test_with_many_processes_each_writes_the_summary_less_often(tmp_path, tracking_uri, mlflow_client, monkeypatch):
    """``StudySummary.period``: the flush period while at most ``writers`` trials run, longer in proportion past
    that, so the parent run gets about as many writes however many workers the study has; the points stay
    complete."""
    import time

    from cicy_search import tracking

    study, parent_id, batches = _watched_parent("period", tmp_path, tracking_uri, mlflow_client, monkeypatch)
    monkeypatch.setattr(tracking, "FLUSH_SECONDS", 0.4)
    running = [0]
    uploader = tracking.uploader()
    keeper = summary.StudySummary(study, mlflow_client, budget=4, uploader=uploader, running=lambda: running[0])
    periods = []
    for running[0] in (0, 1, 4, 6, 8, 64):
        periods.append(keeper.period())
    assert periods == pytest.approx([0.4, 0.4, 0.4, 0.6, 0.8, 6.4])
    assert summary.StudySummary(study, mlflow_client, budget=4).period() == 0.4  # no count: this process alone
    for error in (OSError("database is gone"), RuntimeError("x")):  # a storage that fails to count: the flush period

        def failing(error=error):
            raise error

        assert summary.StudySummary(study, mlflow_client, budget=4, running=failing).period() == 0.4
    running[0] = 12  # three times the writers: this process writes every 1.2 s
    for _ in range(2):
        trial = study.ask()
        study.tell(trial, trial.number / 10)
        keeper.after_trial(study, study.trials[trial.number])
    deadline = time.monotonic() + 10
    while sum(bool(kw.get("metrics")) for _, _, kw in batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    first, second = [t for t, _, kw in batches if kw.get("metrics")]
    assert second - first >= 1.1  # not the 0.4 s flush period
    assert keeper.finish() == []
    assert history(mlflow_client, parent_id, "trial_val_accuracy") == [(0, 0.0), (1, 0.1)]


@pytest.mark.waits
def test_a_process_writes_the_summary_at_once_then_at_most_every_flush_period(tmp_path, tracking_uri, mlflow_client, monkeypatch):
    """The first trial's point at once; trials within ``tracking.FLUSH_SECONDS`` of a write wait for one timed write;
    ``flush`` queues that write at once; ``finish`` writes what is still waiting. Every point is written exactly once, at its trial's step."""
    import time

    from cicy_search import tracking

    study, parent_id, batches = _watched_parent("throttled", tmp_path, tracking_uri, mlflow_client, monkeypatch)

    def writes():  # the history points' writes: (when, steps); finish's tags come without metrics
        return [(t, sorted({m.step for m in kw["metrics"]})) for t, _, kw in batches if kw.get("metrics")]

    monkeypatch.setattr(tracking, "FLUSH_SECONDS", 1.5)
    uploader = tracking.uploader()
    keeper = summary.StudySummary(study, mlflow_client, budget=6, uploader=uploader)

    def finish_trial():
        trial = study.ask()
        study.tell(trial, trial.number / 10)
        keeper.after_trial(study, study.trials[trial.number])

    finish_trial()
    assert uploader.flush(30) == [] and [steps for _, steps in writes()] == [[0]]
    finish_trial()
    finish_trial()
    assert uploader.flush(30) == [] and len(writes()) == 1  # within the period: waiting
    deadline = time.monotonic() + 10
    while len(writes()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Waited for the period (1.5 s from the first write's start; its recorded time may come later on a loaded machine,
    # as 0.11 s did beside a training run): unthrottled, the second write would follow the first at once.
    assert [steps for _, steps in writes()] == [[0], [1, 2]] and writes()[1][0] - writes()[0][0] >= 1.0
    uploader.flush(30)
    finish_trial()
    finish_trial()
    assert uploader.flush(30) == [] and len(writes()) == 2
    keeper.flush()  # the waiting trials' write now (bench.tracking at the end of a block)
    assert uploader.flush(30) == [] and [steps for _, steps in writes()] == [[0], [1, 2], [3, 4]]
    keeper.flush()  # nothing waits: no write
    finish_trial()
    assert uploader.flush(30) == [] and len(writes()) == 3  # within the period of the flushed write
    assert keeper.finish() == []  # the last trial's point now, not a period later
    assert [steps for _, steps in writes()] == [[0], [1, 2], [3, 4], [5]]
    time.sleep(1.6)
    assert len(writes()) == 4  # the timers were cancelled
    values = [t.value for t in study.trials]
    assert history(mlflow_client, parent_id, "trial_val_accuracy") == list(enumerate(values))
    assert history(mlflow_client, parent_id, "best_val_accuracy") == [(i, max(values[: i + 1])) for i in range(6)]
    assert mlflow_client.get_run(parent_id).info.status == "FINISHED"
