"""The spool of a study trial's MLflow writes (``tracking.spool``): a real ``mlflow server`` killed in the middle of a
study, the study going on (and stopping at the limit) with its runs' writes in the spool, and the server back: every
complete trial then has its whole run, params, every epoch metric and a best trial's model, and replaying again
writes nothing twice."""

import io
import json
import shutil
import signal
import time

import optuna
import pytest
from rich.console import Console

from cicy_search import tracking
from cicy_search.errors import CicyError
from cicy_search.search import study as studies
from cicy_search.tracking import links, spool

from . import services
from .conftest import store_copy, study_spec


def mlflow_server(folder, port=None, monkeypatch=None):
    """``mlflow server`` on a SQLite store in ``folder``; ``port``: the address of one that was stopped."""
    if port is not None:
        monkeypatch.setattr(services, "free_port", lambda: port)
    return services.MlflowServer(
        f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts", folder / f"server-{time.monotonic_ns()}.log", allowed_hosts="127.0.0.1:*"
    )


def complete_runs(study, client) -> dict[int, object]:
    """Every COMPLETE trial's MLflow run, checked whole: FINISHED, its config as params, every epoch's metrics."""
    runs = {}
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        rid = links.run_id(t, study)
        assert rid, f"trial {t.number} has no MLflow run"
        run = client.get_run(rid)
        epochs = int(run.data.metrics["epochs_run"])
        assert run.info.status == "FINISHED" and run.data.tags["state"] == "complete", (t.number, run.info.status)
        assert run.data.tags["trial"] == str(t.number) and "tracking_errors" not in run.data.tags, run.data.tags
        assert run.data.params["trial.number"] == str(t.number)
        assert run.data.params["model.depth"] == str(t.params["model.depth"])
        assert run.data.metrics["val_accuracy"] == pytest.approx(t.value)
        for key in ("epoch_loss", "epoch_val_accuracy"):
            assert [m.step for m in client.get_metric_history(rid, key)] == list(range(epochs)), (t.number, key)
        runs[t.number] = run
    return runs


@pytest.mark.slow
def test_a_study_spools_while_its_server_is_away_stops_at_the_limit_and_loses_nothing(tmp_path, monkeypatch, empty_mlflow_db):
    store_copy(empty_mlflow_db, tmp_path / "mlflow.db")  # the server's store, its tables made
    server = mlflow_server(tmp_path)
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    spec = study_spec("away", budget={"n_trials": 6})
    monkeypatch.setattr(spool, "MAX_TRIALS", 2)
    try:
        study = studies.create(spec, storage=storage, tracking_uri=server.uri)
        folder = studies.spool_folder(storage, spec.name)
        assert folder == tmp_path / "o.db.spool" / "away"
        client = links.resume(study, server.uri, spool_folder=folder)
        printed = io.StringIO()
        work = studies.StudyRun(study, spec=spec, budget=6, client=client, uploader=tracking.uploader(), report=False,
                                spool=spool.Spool(folder, client.tracking_uri), console=Console(file=printed, width=1000))  # fmt: skip
        objective = work.objective()

        def server_gone_after_trial_0(trial):
            if trial.number == 1:
                services.stop_process_group(server.proc, signal.SIGKILL)
            return objective(trial)

        with pytest.raises(CicyError, match=r"has not answered for 2 trials .*their runs wait in .*o\.db\.spool/away: run the same"):
            studies.drive(work, server_gone_after_trial_0)
        said = [line for line in printed.getvalue().splitlines() if line.startswith("warning: MLflow tracking server")]
        assert len(said) == 1 and f"their runs wait in {folder} until it does; the study stops after 2 trials" in said[0], said
        trials = studies.load("away", storage=storage).trials
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3  # training went on without the server
        waiting = spool.Spool(folder, server.uri).pending()
        assert {1, 2} <= set(waiting) <= {0, 1, 2} and waiting[1] == waiting[2] == "not created"

        server = mlflow_server(tmp_path, int(server.uri.rsplit(":", 1)[1]), monkeypatch)  # back, same address and store
        shutil.copytree(folder, tmp_path / "before")
        study = studies.load("away", storage=storage)
        assert links.resume(study, server.uri, spool_folder=folder) is not None
        assert not list(folder.glob("*.json")) and not list(folder.glob("*.files"))  # nothing left in the spool
        runs = complete_runs(study, client)
        assert sorted(runs) == [0, 1, 2]
        best = studies.best_trials(study)[0].number
        assert runs[best].data.tags["model_logged"] == "true"
        assert {a.path for a in client.list_artifacts(runs[best].info.run_id)} >= {"model", "model_summary.txt"}

        # The spool as it was, replayed once more (a replay cut off before it could note its progress): nothing twice.
        counts = {n: len(client.get_metric_history(r.info.run_id, "epoch_loss")) for n, r in runs.items()}
        experiment = runs[0].info.experiment_id
        n_runs = len(client.search_runs([experiment]))
        shutil.rmtree(folder)
        shutil.copytree(tmp_path / "before", folder)
        assert sorted(links.replay(spool.Spool(folder, server.uri), client, study)) == sorted(t for t in waiting if t is not None)
        assert len(client.search_runs([experiment])) == n_runs
        assert {n: len(client.get_metric_history(r.info.run_id, "epoch_loss")) for n, r in runs.items()} == counts
    finally:
        server.stop()


def test_a_replay_cut_off_goes_on_where_it_stopped(tmp_path, tracking_uri, mlflow_client):
    """The file notes how far a replay got after each write; a run made by a replay that stopped before noting it
    is found by its tag, not made twice."""
    from mlflow.entities import Metric, Param, RunTag

    box = spool.Spool(tmp_path / "spool", tracking_uri)
    entry = box.entry(run_id=None, create={"experiment": "spooled", "run_name": "trial-7", "tags": {"trial": "7"}}, trial=7)
    entry.add({"op": "batch", "metrics": [Metric("epoch_loss", 0.5, 1000, 0)], "params": [Param("a", "1")], "tags": []})
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.txt").write_text("w")
    entry.add({"op": "artifacts", "folder": str(tmp_path / "model"), "path": "model"})
    entry.add({"op": "batch", "metrics": [Metric("epoch_loss", 0.25, 2000, 1)], "params": [], "tags": [RunTag("state", "complete")]})
    assert links.replay(box, mlflow_client) == []  # not ended yet: its writer may still add to it
    entry.add({"op": "end", "status": "FINISHED", "end_time": 3000})
    saved = entry.path.read_text()
    assert box.pending() == {7: "not created"}

    assert links.replay(box, mlflow_client) == [7]
    (run,) = mlflow_client.search_runs([mlflow_client.get_experiment_by_name("spooled").experiment_id])
    assert run.info.status == "FINISHED" and run.info.end_time == 3000 and run.data.params == {"a": "1"}
    assert run.data.tags[spool.TAG] == json.loads(saved)["key"] and run.data.tags["state"] == "complete"
    assert [m.value for m in mlflow_client.get_metric_history(run.info.run_id, "epoch_loss")] == [0.5, 0.25]
    assert [a.path for a in mlflow_client.list_artifacts(run.info.run_id, "model")] == ["model/weights.txt"]
    assert box.pending() == {} and list((tmp_path / "spool").iterdir()) == []

    half = json.loads(saved)
    half["done"] = 2  # cut off after its second write, before it noted the run it made
    entry.path.write_text(json.dumps(half))
    shutil.copytree(tmp_path / "model", entry.files / "1")
    assert links.replay(box, mlflow_client) == [7]
    assert len(mlflow_client.search_runs([run.info.experiment_id])) == 1
    assert [m.value for m in mlflow_client.get_metric_history(run.info.run_id, "epoch_loss")] == [0.5, 0.25]


def test_a_server_that_does_not_answer_is_told_from_one_that_refuses(tmp_path):
    from mlflow.exceptions import MlflowException

    gone = MlflowException("API request to http://127.0.0.1:1/api/2.0/mlflow/runs/create failed with exception "
                           "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url")  # fmt: skip
    assert spool.unreachable(gone)
    assert not spool.unreachable(MlflowException("Changing param values is not allowed. Param with key='a' was already logged"))
    assert not spool.answers("http://127.0.0.1:1", seconds=1)


def test_the_spool_folder_and_limit_are_where_the_docs_say(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.delenv(spool.DIR_ENV, raising=False)
    assert studies.spool_folder(f"sqlite:///{tmp_path}/o.db", "a/b") == tmp_path / "o.db.spool" / "a%2Fb"
    assert studies.spool_folder(f"journal:{tmp_path}/x.log", "s") == tmp_path / "x.log.spool" / "s"
    assert studies.spool_folder("postgresql://u@h/db", "s") == tracking.local_home() / "spool" / "s"
    assert tracking.local_home() == (tmp_path / "home").resolve()  # conftest's CICY_SEARCH_HOME
    monkeypatch.setenv(spool.DIR_ENV, str(tmp_path / "shared"))
    assert studies.spool_folder(f"sqlite:///{tmp_path}/o.db", "s") == tmp_path / "shared" / "s"
    assert spool.max_trials() == spool.MAX_TRIALS
    monkeypatch.setenv(spool.MAX_TRIALS_ENV, "3")
    assert spool.max_trials() == 3
    page = " ".join((Path(__file__).parent.parent / "docs" / "tutorials" / "studies.md").read_text().split())
    assert f"After {spool.MAX_TRIALS} trials in a row started without the server (`{spool.MAX_TRIALS_ENV}`" in page
    assert f"`${spool.DIR_ENV}/STUDY` when set" in page and "`mlruns/optuna.db.spool/STUDY`" in page


def test_a_run_whose_writer_was_killed_is_replayed_and_closed_from_optunas_record(tmp_path, tracking_uri, mlflow_client):
    import os

    from mlflow.entities import Metric

    study = optuna.create_study()
    trial = study.ask()
    study.tell(trial, 0.5)
    box = spool.Spool(tmp_path / "spool", tracking_uri)
    entry = box.entry(run_id=None, create={"experiment": "killed", "run_name": "trial-0", "tags": {}}, trial=0)
    entry.add({"op": "batch", "metrics": [Metric("epoch_loss", 0.5, 1000, 0)], "params": [], "tags": []})
    assert links.replay(box, mlflow_client, study) == []  # its writer may still be at work
    old = time.time() - links.REPAIR_AFTER_SECONDS - 1
    os.utime(entry.path, (old, old))
    assert links.replay(box, mlflow_client, study) == [0] and box.pending() == {}
    run = mlflow_client.get_run(links.run_id(study.trials[0], study))
    assert run.info.status == "FINISHED" and run.data.tags["state"] == "complete" and "ended before" in run.data.tags["tracking_errors"]
    assert [m.value for m in mlflow_client.get_metric_history(run.info.run_id, "epoch_loss")] == [0.5]
