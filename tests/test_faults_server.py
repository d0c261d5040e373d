"""A real ``mlflow server`` killed in the middle of a study: the study process still ends on SIGTERM (it does not
wait for the server to return), and once the server is back the resumed study closes the runs of the trials
that had finished in Optuna while their last writes were lost."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from cicy_search import tracking
from cicy_search.search import study as studies
from cicy_search.tracking import links

from . import services
from .conftest import TINY_STUDY, run_cli

ROOT = Path(__file__).resolve().parent.parent
HANG = 120  # seconds after which a process that should have ended is taken to hang (before: until the server returned)


def _server(folder, port=None, monkeypatch=None):
    if port is not None:
        monkeypatch.setattr(services, "free_port", lambda: port)
    return services.MlflowServer(
        f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts", folder / f"server-{time.monotonic_ns()}.log", allowed_hosts="127.0.0.1:*"
    )


def _wait_for(check, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def test_a_tracking_server_killed_mid_study_loses_no_finished_trial(tmp_path, monkeypatch):
    server = _server(tmp_path)
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    path = tmp_path / "gone.yaml"
    path.write_text(yaml.safe_dump({"study": "gone", **TINY_STUDY, "budget": {"n_trials": 40}}))
    try:
        assert run_cli("study", "create", str(path), "--storage", storage, "--tracking-uri", server.uri) == 0
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update(PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
        worker = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", "cicy_search", "study", "run", str(path), "--storage", storage],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip

        def finished():
            return sum(t.state.is_finished() for t in studies.load("gone", storage=storage).trials)

        _wait_for(lambda: finished() >= 2, 300, "two finished trials")
        services.stop_process_group(server.proc, signal.SIGKILL)  # the server goes away mid-study
        time.sleep(5)  # the study goes on writing into the void for a while
        os.killpg(worker.pid, signal.SIGTERM)
        sent = time.monotonic()
        try:
            out, _ = worker.communicate(timeout=HANG)
            print(f"the study ended {time.monotonic() - sent:.1f} s after SIGTERM")  # reported, not asserted
        except subprocess.TimeoutExpired:
            os.kill(worker.pid, signal.SIGABRT)  # faulthandler: where every thread waits
            out, _ = worker.communicate(timeout=30)
            pytest.fail(f"the study did not end on SIGTERM while its tracking server was away: {out[-6000:]}")
        assert worker.returncode == 143 and "terminated (SIGTERM)" in out, out[-3000:]
        assert "Traceback" not in out, out[-3000:]

        port = int(server.uri.rsplit(":", 1)[1])
        server = _server(tmp_path, port, monkeypatch)  # back, on the same address and store
        study = studies.load("gone", storage=storage)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(done) >= 2
        client = tracking.client(server.uri)
        monkeypatch.setattr(links, "REPAIR_AFTER_SECONDS", 0.0)
        links.resume(study, server.uri)
        for trial in study.trials:
            if trial.state.is_finished() and links.run_id(trial):
                run = client.get_run(links.run_id(trial))
                assert run.info.status != "RUNNING", (trial.number, trial.state)
                if trial.state == optuna.trial.TrialState.COMPLETE:
                    assert run.data.metrics.get("val_accuracy") == pytest.approx(trial.value)
    finally:
        server.stop()
