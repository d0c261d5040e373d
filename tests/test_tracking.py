"""tracking: the background uploader, runs written through it, dataset inputs, system metrics, UI addresses."""

import json
import time

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bench.processes import free_port
from cicy_search import data, tracking
from cicy_search.errors import CicyError

EXPERIMENT = "test-tracking"


def test_the_uploader_writes_in_order_and_flush_reports_what_failed():
    uploader = tracking.Uploader()
    done = []
    uploader.submit(done.append, 1)
    failed = uploader.submit(lambda: 1 / 0, what="divide")
    uploader.submit(lambda: (time.sleep(0.2), done.append(2)))
    assert uploader.flush(timeout=30) == ["divide: division by zero"]
    assert done == [1, 2] and isinstance(failed.exception(), ZeroDivisionError)
    assert uploader.flush(timeout=30) == []  # reported once


def test_the_uploader_counts_the_cpu_its_writes_take_not_their_waiting():
    uploader = tracking.Uploader()
    uploader.submit(time.sleep, 0.3)  # waiting (a slow server) takes no CPU from training
    uploader.flush(timeout=30)
    waited = uploader.cpu_seconds
    assert waited < 0.05

    def spin(seconds):
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass
        raise RuntimeError("failed after working")  # a failed write's CPU counts too

    uploader.submit(spin, 0.2)
    assert uploader.flush(timeout=30) == ["failed after working"]
    assert 0.2 <= uploader.cpu_seconds - waited < 0.5


def test_a_background_run_is_written_after_the_call_returns_and_names_its_failures(mlflow_client, tmp_path):
    uploader = tracking.Uploader()
    run = tracking.Run.start(mlflow_client, EXPERIMENT, run_name="background", tags={"role": "test"}, uploader=uploader)
    run.log_params({"model.depth": 3})
    for epoch in range(3):
        run.log_metrics({"epoch_loss": 1.0 / (epoch + 1)}, step=epoch, flush_after=0)
    run.later(lambda: open(tmp_path / "missing" / "model.keras"), "artifacts")  # fails in the uploader's thread, not here
    run.later(lambda: run.end_tags.update(model_logged="false"), "decide")
    run.end("FINISHED", tags={"state": "complete"})
    errors = uploader.flush(timeout=60)
    assert len(errors) == 1 and errors[0].startswith("MLflow run background: artifacts:")
    got = mlflow_client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.data.params["model.depth"] == "3" and got.data.tags["role"] == "test"
    assert [m.value for m in sorted(mlflow_client.get_metric_history(run.run_id, "epoch_loss"), key=lambda m: m.step)] == [1.0, 0.5, 1 / 3]
    assert got.data.tags["state"] == "complete" and got.data.tags["model_logged"] == "false"
    assert got.data.tags["tracking_errors"].startswith("artifacts:")


@pytest.mark.parametrize(
    "error, status, tags",
    [
        (None, "FINISHED", {"kept": "yes"}),
        (ValueError("bad width\nsecond line"), "FAILED", {"kept": "yes", "state": "failed", "failure_reason": "bad width"}),
        (KeyboardInterrupt(), "FAILED", {"kept": "yes", "state": "interrupted", "failure_reason": "KeyboardInterrupt"}),
        ("pruned", "KILLED", {"kept": "yes", "state": "pruned"}),
    ],
    ids=["finished", "failed", "interrupted", "pruned"],
)
def test_a_run_as_a_context_manager_ends_with_its_outcome_and_the_error_goes_on(mlflow_client, error, status, tags):
    import optuna

    error = optuna.TrialPruned("at epoch 2") if error == "pruned" else error
    raised = None
    try:
        with tracking.Run.start(mlflow_client, EXPERIMENT, run_name=f"with {status}") as run:
            run.end_tags["kept"] = "yes"
            if error is not None:
                raise error
    except BaseException as e:  # KeyboardInterrupt too: the block's error is never swallowed
        raised = e
    assert raised is error
    got = mlflow_client.get_run(run.run_id)
    assert got.info.status == status and got.info.end_time is not None
    assert {k: v for k, v in got.data.tags.items() if k in ("kept", "state", "failure_reason")} == tags


class Refusing(MlflowClient):
    """A real store that refuses new runs (a server answering 403, a full disk)."""

    def create_run(self, *args, **kwargs):
        raise MlflowException("refused: Invalid Host header")


def test_a_run_that_cannot_be_created_is_reported_once_and_its_writes_raise(tracking_uri):
    broken = Refusing(tracking_uri=tracking_uri)
    uploader = tracking.Uploader()
    run = tracking.Run.start(broken, EXPERIMENT, run_name="nowhere", uploader=uploader)
    run.log_params({"a": 1})
    linked = run.later(lambda: run.run_id, "link")
    run.end("FAILED")
    errors = uploader.flush(timeout=60)
    assert errors == ["MLflow run nowhere in test-tracking: create: refused: Invalid Host header"]
    with pytest.raises(Exception):
        linked.result()


def test_dataset_inputs_have_one_digest_per_split_that_follows_the_rows():
    d = {"dataset": "original", "train": 0.8, "val": 0.1, "test": 0.1, "seed": 0, "stratify": True, "limit": None,
         "keep_products": False, "targets": ["h11"]}
    index = {"train": np.arange(0, 80), "val": np.arange(80, 90), "test": np.arange(90, 100)}
    inputs = tracking.dataset_inputs(d, data.dataset_hash("original"), index)
    assert [i.tags[0].value for i in inputs] == ["training", "validation", "test"]
    assert {i.dataset.name for i in inputs} == {"original"} and all(len(i.dataset.digest) == 16 for i in inputs)
    assert len({i.dataset.digest for i in inputs}) == 3
    profile = json.loads(inputs[0].dataset.profile)
    assert profile["num_rows"] == 80 and profile["sha256"] == data.dataset_hash("original") and profile["seed"] == 0
    again = tracking.dataset_inputs(d, data.dataset_hash("original"), {**index, "train": np.arange(80)})
    other = tracking.dataset_inputs(d, data.dataset_hash("original"), {**index, "train": np.arange(1, 81)})
    assert again[0].dataset.digest == inputs[0].dataset.digest != other[0].dataset.digest


def test_system_metrics_are_sampled_into_the_run(mlflow_client):
    pytest.importorskip("psutil")
    run = tracking.Run.start(mlflow_client, EXPERIMENT, run_name="system")
    monitor = tracking.SystemMetrics(run, interval=0.2)
    time.sleep(0.7)
    monitor.stop()  # plus one last sample: a trial shorter than the interval still gets one
    run.end()
    metrics = mlflow_client.get_run(run.run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(metrics)
    steps = [m.step for m in mlflow_client.get_metric_history(run.run_id, "system/system_memory_usage_megabytes")]
    assert len(steps) >= 2 and steps == sorted(steps)


def test_ui_addresses_come_from_a_server_uri_without_its_credentials():
    assert tracking.ui_url("http://cicy:secret@mlflow-host:5000/") == "http://mlflow-host:5000"
    assert tracking.ui_url("sqlite:///mlruns/mlflow.db") is None
    assert tracking.experiment_url("http://h:5000", "3") == "http://h:5000/#/experiments/3/runs"
    assert tracking.run_url("http://h:5000/", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc"


@pytest.mark.parametrize(
    "name, message",
    [
        ("", "MLflow experiment name '': expected 1 to 500 printable characters"),
        ("   ", "MLflow experiment name '   ': expected 1 to 500 printable characters"),
        ("x" * 600, "expected 1 to 500 printable characters"),
        ("a\nb", "expected 1 to 500 printable characters"),
        (None, "MLflow experiment name None"),
    ],
)
def test_names_mlflow_refuses_are_one_line_not_another_workers_experiment(mlflow_client, name, message):
    from cicy_search.errors import CicyError

    with pytest.raises(CicyError) as e:
        tracking.experiment_id(mlflow_client, name)
    assert message in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 200


def test_an_experiment_another_worker_created_first_is_joined(mlflow_client, monkeypatch):
    first = tracking.experiment_id(mlflow_client, "created-by-another")
    real, calls = mlflow_client.get_experiment_by_name, []

    def racing(name):  # the first look finds nothing: another worker creates it just after, so create fails
        calls.append(name)
        return None if len(calls) == 1 else real(name)

    monkeypatch.setattr(mlflow_client, "get_experiment_by_name", racing)
    assert tracking.experiment_id(mlflow_client, "created-by-another") == first
    assert len(calls) == 2


def test_sqlite_artifacts_go_beside_the_store_whatever_the_working_folder(tmp_path, monkeypatch):
    store = tmp_path / "store"
    store.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    client = tracking.client(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment(tracking.experiment_id(client, "beside"))
    assert exp.artifact_location == (store / "artifacts").as_uri()
    run = tracking.Run.start(client, "beside", run_name="r")
    run.log_artifacts({"note.txt": "x"})
    run.end()
    assert (store / "artifacts").is_dir() and list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("between", ["nothing", "deleted", "deleted and purged from the name"])
def test_runs_after_the_first_skip_the_experiment_lookup_and_a_deleted_experiment_comes_back(mlflow_client, monkeypatch, between):
    name = f"looked-up-once-{between.replace(' ', '-')}"  # the store outlives the test; the known ids live in the process
    real, looked = mlflow_client.get_experiment_by_name, []
    monkeypatch.setattr(mlflow_client, "get_experiment_by_name", lambda name: looked.append(name) or real(name))
    first = tracking.Run.start(mlflow_client, name, run_name="a")
    first.end()
    exp = real(name)
    if between == "deleted and purged from the name":  # the name is free: a new experiment takes it
        mlflow_client.rename_experiment(exp.experiment_id, name + "-old")
    if between != "nothing":
        mlflow_client.delete_experiment(exp.experiment_id)
    second = tracking.Run.start(mlflow_client, name, run_name="b")
    second.end()
    now = real(name)
    assert now.lifecycle_stage == "active" and mlflow_client.get_run(second.run_id).info.experiment_id == now.experiment_id
    assert mlflow_client.get_run(second.run_id).info.status == "FINISHED"
    # One lookup for the first run; the second needs one only when the experiment it knew is gone.
    assert len(looked) == (1 if between == "nothing" else 2)
    assert (now.experiment_id == exp.experiment_id) == (between != "deleted and purged from the name")


@pytest.mark.parametrize(
    "n_metrics, n_params, n_tags, requests",
    [(0, 0, 0, 1), (81, 45, 2, 1), (1000, 0, 0, 1), (1001, 0, 0, 2), (950, 100, 5, 2), (0, 250, 0, 3), (10, 0, 150, 2), (2500, 120, 230, 3)],
)
def test_batches_take_every_value_once_in_order_within_mlflows_limits(n_metrics, n_params, n_tags, requests):
    values = {"metrics": [f"m{i}" for i in range(n_metrics)], "params": [f"p{i}" for i in range(n_params)], "tags": [f"t{i}" for i in range(n_tags)]}
    got = tracking.batches(**values)
    assert len(got) == requests
    for batch in got:
        assert sum(map(len, batch.values())) <= tracking.BATCH_TOTAL
        assert all(len(v) <= tracking.BATCH_LIMITS[k] for k, v in batch.items())
    for kind, expected in values.items():
        assert [v for batch in got for v in batch.get(kind, [])] == expected


@pytest.mark.parametrize("outcome", ["batch", "end", "failed"])
def test_params_with_metrics_go_in_the_first_metric_batch_or_the_end(mlflow_client, monkeypatch, outcome):
    requests = []
    monkeypatch.setattr(mlflow_client, "log_batch", lambda run_id, **kw: (requests.append(sorted(k for k, v in kw.items() if v)),
                                                                          MlflowClient.log_batch(mlflow_client, run_id, **kw))[1])
    params = {f"model.p{i}": i for i in range(150)}  # more than one request holds (100 params)
    try:
        with tracking.Run.start(mlflow_client, EXPERIMENT, run_name=outcome, uploader=tracking.Uploader()) as run:
            run.log_params(params, with_metrics=True)
            run.log_metrics({"epoch_loss": 0.5}, step=0, flush_after=0 if outcome == "batch" else 60)
            if outcome == "failed":
                raise ValueError("diverged")
    except ValueError:
        pass
    run.uploader.flush(timeout=60)
    got = mlflow_client.get_run(run.run_id)
    assert {k: got.data.params[k] for k in params} == {k: str(v) for k, v in params.items()}
    assert [m.value for m in mlflow_client.get_metric_history(run.run_id, "epoch_loss")] == [0.5]
    assert got.info.status == ("FAILED" if outcome == "failed" else "FINISHED")
    # With the metric batch or the end's (2 requests: 150 params); a run that ends with nothing left writes no batch.
    assert requests == [["metrics", "params", "tags"] if outcome == "failed" else ["metrics", "params"], ["params"]]


@pytest.mark.waits
@pytest.mark.parametrize("slow_answers", [0, 1, 2])
def test_a_busy_tracking_server_is_waited_for_and_a_silent_or_refusing_one_is_one_line(monkeypatch, slow_answers):
    """``tracking.client``'s health check: health checks that time out are asked again (a busy server: 64 workers
    starting at once), within a deadline; a server that never answers, or a closed port, is one line."""
    import http.server
    import socket
    import threading

    from cicy_search.tracking import check_reachable, store

    monkeypatch.setattr(store, "ANSWER_SECONDS", 0.5)
    monkeypatch.setattr(store, "PATIENCE_SECONDS", 3.0)
    asked = []

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            if len(asked) <= slow_answers:
                time.sleep(1.0)  # past the client's 0.5 s: it gives up on this one and asks again
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_reachable(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert asked == ["/health"] * (slow_answers + 1)
    if slow_answers:
        return
    # A port that accepts connections but never answers: asked until the deadline, then one line.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    start = time.monotonic()
    try:
        with pytest.raises(CicyError, match=r"^MLflow tracking server http://127\.0\.0\.1:\d+ is unreachable: no answer in 3 s$"):
            check_reachable(f"http://127.0.0.1:{silent.getsockname()[1]}")
    finally:
        silent.close()
    assert 3.0 <= time.monotonic() - start < 10
    # A closed port is not waited for.
    port = free_port()
    start = time.monotonic()
    with pytest.raises(CicyError, match="is unreachable: .*[Cc]onnection refused"):
        check_reachable(f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 2



@pytest.mark.slow
@pytest.mark.parametrize("family", ["dense", "svm"])
def test_a_runs_config_is_its_description_or_when_too_long_its_config_yaml(mlflow_client, monkeypatch, tmp_path, family):
    """The resolved config, set with the run's creation as the description MLflow shows (no upload); a config longer
    than MLflow allows a tag goes into the artifact ``config.yaml`` instead. Either one reads back as the config."""
    import mlflow.utils.validation
    import yaml

    from cicy_search.tracking.runner import MISSES, run_tracked

    from .conftest import tiny

    config = tiny(family, limit=200)
    short = run_tracked(config, mlflow_client=mlflow_client, experiment=EXPERIMENT, log_model=False).run_id
    note = mlflow_client.get_run(short).data.tags[tracking.NOTE]
    assert yaml.safe_load(note.split("```yaml\n")[1].split("```")[0]) == config
    assert [a.path for a in mlflow_client.list_artifacts(short)] == [MISSES]  # no config.yaml
    monkeypatch.setattr(mlflow.utils.validation, "MAX_TAG_VAL_LENGTH", len(note) - 1)
    assert tracking.config_note(config) == {}
    long = run_tracked(config, mlflow_client=mlflow_client, experiment=EXPERIMENT, log_model=False).run_id
    assert tracking.NOTE not in mlflow_client.get_run(long).data.tags
    assert yaml.safe_load(open(mlflow_client.download_artifacts(long, "config.yaml", str(tmp_path))).read()) == config


@pytest.mark.slow
@pytest.mark.parametrize(
    "family, changes",
    [("dense", {}), ("svm", {}), ("dense", {"data": {"targets": ["h11", "h21"]}}), ("dense", {"data": {"physics": True, "targets": ["h11", "h21"]}})],
)
def test_a_finished_run_lists_the_test_matrices_its_model_misses(mlflow_client, tmp_path, family, changes):
    """``test_misses.json``: one record per wrong test matrix, by its id in the list, with the true and predicted
    value of each scored target; as many as the test accuracy says, and none a study trial (no test scores) gets."""
    from cicy_search.config import merge, resolve
    from cicy_search.tracking.runner import MISSES, run_tracked

    from .conftest import tiny

    config = resolve(merge(tiny(family, limit=300), changes))
    tracked = run_tracked(config, mlflow_client=mlflow_client, experiment=EXPERIMENT, log_model=False)
    misses = json.load(open(mlflow_client.download_artifacts(tracked.run_id, MISSES, str(tmp_path))))
    m, targets = tracked.result.metrics, config["data"]["targets"]
    n_test = int(mlflow_client.get_run(tracked.run_id).data.params["data.n_test"])
    assert misses and len({r["id"] for r in misses}) == len(misses)
    for t in targets:  # each target's wrong ones are listed, with the list's true value
        assert sum(r[t] != r[f"{t}_pred"] for r in misses) == round((1 - m[f"test_{t}_accuracy"]) * n_test)
    frame = data.load().frame.set_index("id")
    for r in misses:
        assert any(r[t] != r[f"{t}_pred"] for t in targets)
        assert all(frame.loc[r["id"], t] == r[t] for t in targets)
    # A study trial's run (log_test=False) lists none.
    trial = run_tracked(config, mlflow_client=mlflow_client, experiment=EXPERIMENT, log_model=False, log_test=False)
    assert MISSES not in [a.path for a in mlflow_client.list_artifacts(trial.run_id)]
