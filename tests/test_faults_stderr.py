"""A clean ``study run`` writes nothing to stderr when it is not a terminal: no progress bars, no library's warning
lines (Optuna's contour plot warns about parameters with one value so far, early in every study)."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from .conftest import TINY_STUDY, store_copy


# Both studies run in one fresh process, one after the other, through the CLI's entry point: whatever either writes
# to stderr is there, and the process pays for its imports once. Each run's stdout ends with a marker line.
TWO_RUNS = """import json, sys
from cicy_search.cli import main
for args in json.loads(sys.argv[1]):
    try:
        main(args)
    except SystemExit as e:
        if e.code:
            raise
    print("--- run ended", flush=True)
"""


@pytest.mark.slow
def test_a_clean_study_run_leaves_stderr_empty(tmp_path, empty_mlflow_db):
    # One searched setting drawn from two values: two trials may share it, which is what made Optuna warn.
    space = {"model.depth": {"type": "int", "low": 1, "high": 2}, "train.learning_rate": TINY_STUDY["space"]["train.learning_rate"]}
    body = {**TINY_STUDY, "data": {"limit": 300}, "train": {"epochs": 1}, "space": space, "budget": {"n_trials": 3}}
    runs = []
    for kind in ("sqlite", "journal"):
        (tmp_path / kind).mkdir()
        file = tmp_path / kind / "quiet.yaml"
        file.write_text(yaml.safe_dump({"study": "quiet", **body}))
        storage = f"sqlite:///{tmp_path / kind / 'optuna.db'}" if kind == "sqlite" else f"journal:{tmp_path / kind / 'optuna.log'}"
        if kind == "journal":  # an MLflow store with its tables made: the sqlite case's run makes its own (MLflow logs that)
            store_copy(empty_mlflow_db, tmp_path / kind / "mlflow.db")
        runs.append(["study", "run", str(file), "--storage", storage, "--tracking-uri", f"sqlite:///{tmp_path / kind / 'mlflow.db'}"])
    command = [sys.executable, "-c", TWO_RUNS, json.dumps(runs)]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": os.getcwd()}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    outs = done.stdout.split("--- run ended\n")
    assert len(outs) == 3 and outs[2] == "", done.stdout[-3000:]
    for out in outs[:2]:
        assert "3/3 finished" in out and "study report: artifact" in out
    assert done.stderr == ""
