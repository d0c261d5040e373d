"""A clean ``study run`` writes nothing to stderr when it is not a terminal: no progress bars, no library's warning
lines (Optuna's contour plot warns about parameters with one value so far, early in every study)."""

import os
import subprocess
import sys

import pytest
import yaml

from .conftest import TINY_STUDY, store_copy


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_clean_study_run_leaves_stderr_empty(tmp_path, kind, empty_mlflow_db):
    file = tmp_path / "quiet.yaml"
    # One searched setting drawn from two values: two trials may share it, which is what made Optuna warn.
    space = {"model.depth": {"type": "int", "low": 1, "high": 2}, "train.learning_rate": TINY_STUDY["space"]["train.learning_rate"]}
    body = {**TINY_STUDY, "data": {"limit": 300}, "train": {"epochs": 1}, "space": space, "budget": {"n_trials": 3}}
    file.write_text(yaml.safe_dump({"study": "quiet", **body}))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'optuna.log'}"
    if kind == "journal":  # an MLflow store with its tables made: the sqlite case's run makes its own (MLflow logs that)
        store_copy(empty_mlflow_db, tmp_path / "mlflow.db")
    command = [sys.executable, "-m", "cicy_search", "study", "run", str(file), "--storage", storage,
               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": os.getcwd()}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3/3 finished" in done.stdout and "study report: artifact" in done.stdout
    assert done.stderr == ""
