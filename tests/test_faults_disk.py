"""A full disk mid-study (a file-size limit on the process): the study stops after three trials in a row fail to
write their stores, with one ``error:`` line and exit code 2; the stores stay readable, and a rerun with room
again repairs the runs the full disk left open and finishes the study."""

import os
import resource
import signal
import sqlite3
import subprocess
import sys

import optuna
import pytest
import yaml

from cicy_search import tracking
from cicy_search.errors import CicyError, out_of_space
from cicy_search.search import storage as storages
from cicy_search.search.budget import Share, optimize_to_budget
from cicy_search.search import study as studies
from cicy_search.tracking import links

from .conftest import TINY_STUDY, run_cli, store_copy

# Room for the parent run and a few trials' rows over the MLflow store's empty size, not for twelve trials.
ROOM = 60_000


def _study_run(tmp_path, file, limit):
    def preexec():  # writes past the limit fail with EFBIG (SIGXFSZ would kill the process instead)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-m", "cicy_search", "study", "run", str(file),
               "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, preexec_fn=preexec)


@pytest.mark.slow
def test_a_full_disk_stops_the_study_with_one_line_and_a_rerun_repairs_it(tmp_path, monkeypatch, capsys, empty_mlflow_db):
    file = tmp_path / "disk.yaml"
    body = {**TINY_STUDY, "data": {"limit": 300}, "train": {"epochs": 1}, "budget": {"n_trials": 12}}
    file.write_text(yaml.safe_dump({"study": "disk", **body}))
    store_copy(empty_mlflow_db, tmp_path / "mlflow.db")  # the store's tables, made with no limit
    limit = (tmp_path / "mlflow.db").stat().st_size + ROOM

    full = _study_run(tmp_path, file, limit)
    assert full.returncode == 2, full.stderr[-3000:]
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    # Three trials in a row failed to write MLflow's store, or Optuna's own store refused a trial's end first.
    assert len(errors) == 1 and "a store could not be written: " in errors[0], full.stderr[-3000:]
    assert errors[0].endswith("a full disk or a file-size limit? free space, then run the same command to resume")
    assert "disk I/O error" in errors[0] or "database or disk is full" in errors[0]
    assert "Traceback" not in full.stderr and "╭" not in full.stderr
    assert full.stdout.count(" fail ") <= 3  # at most three failures in a row, then it stopped

    for db in ("optuna.db", "mlflow.db"):  # readable and whole
        with sqlite3.connect(tmp_path / db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    study = studies.load("disk", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    finished = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert 0 < len(finished) < 12

    # Room again: the same command resumes (here, in this process). A trial whose end Optuna could not record is
    # failed as lost after the heartbeat's grace period (seconds here) and retried.
    monkeypatch.setenv("CICY_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("CICY_GRACE_PERIOD", "3")
    again = run_cli("study", "run", str(file), "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert again == 0, capsys.readouterr().err[-3000:]
    study = studies.load("disk", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 12
    client = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # A run whose last writes the full disk refused is left RUNNING; a rerun closes it from Optuna's record once it
    # is links.REPAIR_AFTER_SECONDS old (it might be another worker's, still writing): the repair, without the wait.
    links.repair(study, client, older_than=0)
    for t in complete:  # every finished trial's run is ended, with its parameters and metrics
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED", (t.number, run.info.status)
        assert run.data.params and run.data.metrics, t.number


DISK = "(sqlite3.OperationalError) disk I/O error"


@pytest.mark.parametrize(
    "reasons, ran",
    [
        (["ok", "ok", DISK, DISK, DISK, "ok"], 5),  # a full store stops the study even after trials finished
        (["ok", DISK, "boom", DISK, DISK, DISK], 6),  # three in a row, not three in all
        (["ok", "database or disk is full", "database or disk is full", "database or disk is full"], 4),
    ],
)
def test_trials_failing_to_write_a_full_store_stop_the_study_after_three_in_a_row(tmp_path, reasons, ran):
    study = optuna.create_study(study_name="full", storage=storages.open_storage(f"sqlite:///{tmp_path / 'o.db'}"))
    calls = []

    def objective(trial):
        reason = reasons[len(calls)]
        calls.append(reason)
        if reason == "ok":
            return trial.suggest_float("x", 0, 1)
        trial.set_user_attr("fail_reason", reason)
        raise RuntimeError(reason)

    with pytest.raises(CicyError) as e:
        optimize_to_budget(Share(study, budget=10, max_failures=8, give_up_after=3), objective)
    assert len(calls) == ran
    assert str(e.value) == (
        f"study 'full': the last 3 trials failed because a store could not be written: {reasons[ran - 1]}; "
        "a full disk or a file-size limit? free space, then run the same command to resume"
    )


def test_out_of_space_finds_the_cause_under_the_wrappers():
    import sqlite3

    try:
        try:
            raise sqlite3.OperationalError("disk I/O error")
        except sqlite3.OperationalError as inner:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from inner
    except optuna.exceptions.StorageInternalError:
        try:
            raise AssertionError("Should not reach.")
        except AssertionError as last:
            assert out_of_space(last) == "disk I/O error"
    assert out_of_space(OSError(27, "File too large")) == "[Errno 27] File too large"
    assert out_of_space(RuntimeError("out of memory")) is None and out_of_space("no reason recorded") is None


@pytest.mark.waits
@pytest.mark.timeout(120)
def test_a_trial_that_never_recorded_a_heartbeat_is_failed_and_retried(tmp_path):
    # What a full disk leaves: a trial RUNNING whose worker could not write its first heartbeat. Optuna's RDB
    # storage alone never takes it for stale, and the budget loop would wait for it forever.
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="beatless", storage=storages.open_storage(url, heartbeat_interval=1, grace_period=2))
    study.ask()  # RUNNING, no heartbeat
    ran = optimize_to_budget(Share(study, budget=1), lambda t: t.suggest_float("x", 0, 1), poll=0.2)
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE] and ran == 1
    assert study.get_trials()[1].user_attrs.get("retry_of") == 0
