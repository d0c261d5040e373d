"""The example plugin (examples/matrix_attention) on the example data file, through the command line as a user runs it.

Train, a 3-trial study with pruning on, one more trial from a worker, export, the reports and ``predict`` on the
exported folder run in this process through the CLI's entry point (``cli.main``), from a folder where examples/ is
linked, with examples/ on ``sys.path`` as PYTHONPATH would put it; the plugin's modules, the environment and the
working folder are restored after them. ``predict``'s answers must match the bundle's loaded here. One step runs
in a fresh process, where freshness is the point: a process whose PYTHONPATH does not hold examples/. In it
``cli.main`` runs ``predict``, which fails on the missing plugin with one line and exit code 2, and then the
exported MLflow pyfunc loads (the plugin's code travels with it) and answers as the bundle did.
"""

import contextlib
import csv
import hashlib
import io
import json
import tempfile
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from cicy_search import bundle, plugins
from cicy_search import config as config_module

# One worker runs them all, so that the journey is made once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("plugins_e2e")]

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DATA = EXAMPLES / "data" / "cicy_moduli.csv"
FAMILY = "matrix_attention.model:build"


def fresh(tmp_path, code, *args):
    """``python -c CODE ARGS`` in a fresh process run from ``tmp_path``, whose PYTHONPATH holds the repository only."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
           "CICY_SEARCH_HOME": str(tmp_path / "home"), "CICY_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def in_process(*args):
    """``cicy-search ARGS`` through ``cli.main`` in this process: its exit code and what it printed."""
    from cicy_search.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess(["cicy-search", *args], code, out.getvalue(), err.getvalue())


def ok(done):
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@contextlib.contextmanager
def plugin_forgotten():
    """Whatever imported the example plugin here is forgotten after the block (and before it, so that it is imported
    from ``sys.path`` as a fresh process would): its modules, the plugin loader's cache, the family it registered."""

    def forget():
        for name in [m for m in sys.modules if m == "matrix_attention" or m.startswith("matrix_attention.")]:
            del sys.modules[name]
        plugins._loaded.pop(FAMILY, None)

    families = dict(config_module.FAMILIES)
    forget()
    try:
        yield
    finally:
        forget()
        config_module.FAMILIES.clear()
        config_module.FAMILIES.update(families)


# Run in a fresh process whose PYTHONPATH lacks examples/: first ``predict`` must fail on the missing plugin (before
# anything has put the shipped copy on sys.path), then the exported pyfunc loads with the plugin's shipped code.
FRESH_WITHOUT_EXAMPLES = """import contextlib, io, json, sys
from cicy_search.cli import main
err = io.StringIO()
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
    try:
        main(["predict", "export", "in.json"])
        code = 0
    except SystemExit as e:
        code = e.code
import mlflow, pandas as pd
m = mlflow.pyfunc.load_model(sys.argv[1])
import matrix_attention
print(json.dumps({"predict": {"code": code, "stderr": err.getvalue()},
                  "rows": m.predict(pd.DataFrame({"matrix": [[[5]], [[3], [3]]]})).to_dict(orient="records"),
                  "plugin": matrix_attention.__file__}))
"""


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugin-journey")
    (tmp / "examples").symlink_to(EXAMPLES)
    mlflow, storage = f"sqlite:///{tmp / 'mlflow.db'}", f"sqlite:///{tmp / 'optuna.db'}"
    study = "examples/matrix_attention_study.yaml"
    environ = dict(os.environ)
    (tmp / "in.json").write_text(json.dumps([{"id": "quintic", "matrix": [[5]]}, {"id": "bicubic", "matrix": [[3], [3]]}]))
    with pytest.MonkeyPatch.context() as mp, plugin_forgotten():
        mp.chdir(tmp)
        mp.syspath_prepend(str(EXAMPLES))  # what PYTHONPATH=examples gives a fresh process
        mp.setenv("CICY_SEARCH_HOME", str(tmp / "home"))
        mp.setenv("CICY_CACHE_DIR", str(tmp / "cache"))
        try:
            steps = {
                "train": in_process("train", "examples/matrix_attention.yaml", "--tracking-uri", mlflow, "--epochs", "1"),
                "study": in_process("study", "run", study, "--storage", storage, "--tracking-uri", mlflow),
                "create": in_process("study", "create", study, "--storage", storage, "--tracking-uri", mlflow, "--n-trials", "4"),
                "worker": in_process("worker", study, "--storage", storage, "--tracking-uri", mlflow),
                "export": in_process("export", study, "--storage", storage, "--tracking-uri", mlflow, "--out", "export"),
                "compare": in_process("report", "compare", "matrix_attention_moduli", "--storage", storage, "--tracking-uri", mlflow,
                                      "--out", "compare.html", "--no-png"),
                "report": in_process("report", "study", "matrix_attention_moduli", "--storage", storage, "--out", "study.html", "--no-png"),
            }
            with plugin_forgotten():  # imported again from sys.path, as a fresh process with PYTHONPATH would
                steps["predict"] = in_process("predict", "export", "in.json", "--format", "json")
        finally:  # what the steps set in the environment (the worker's TensorFlow settings) stays with them
            os.environ.clear()
            os.environ.update(environ)
    steps["fresh"] = fresh(tmp, FRESH_WITHOUT_EXAMPLES, str(tmp / "export" / "mlflow_model"))
    return tmp, mlflow, storage, steps


def test_train_logs_the_plugin_params_and_the_data_file(journey):
    tmp, mlflow, _, steps = journey
    ok(steps["train"])
    from mlflow import MlflowClient

    client = MlflowClient(mlflow)
    exp = client.get_experiment_by_name("cicy-search-train")
    (run,) = client.search_runs([exp.experiment_id])
    p = run.data.params
    assert p["model.family"] == "matrix_attention.model:build" and p["data.targets"] == "['n_moduli']"
    assert (p["model.params.width"], p["model.params.heads"], p["model.params.layers"], p["model.params.dropout"]) == ("16", "2", "1", "0.0")
    sha = hashlib.sha256(DATA.read_bytes()).hexdigest()
    assert run.data.tags["dataset_hash"] == sha
    inputs = {i.tags[0].value: json.loads(i.dataset.profile) for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation", "test"} and all(v["sha256"] == sha for v in inputs.values())
    assert sum(v["num_rows"] for v in inputs.values()) == 400 == int(p["data.n_train"]) + int(p["data.n_val"]) + int(p["data.n_test"])
    assert json.loads(run.inputs.dataset_inputs[0].dataset.source)["uri"].endswith("examples/data/cicy_moduli.csv")
    m = run.data.metrics
    assert 0 <= m["val_n_moduli_accuracy"] <= 1 and m["test_n_moduli_accuracy"] == m["test_permuted_n_moduli_accuracy"]
    # The test rows it misses, by the user's own ids (text in this file) and its target's name.
    with tempfile.TemporaryDirectory() as folder:
        misses = json.loads(open(client.download_artifacts(run.info.run_id, "test_misses.json", folder)).read())
    assert len(misses) == round((1 - m["test_n_moduli_accuracy"]) * int(p["data.n_test"]))
    assert all(r["id"].startswith("cicy") and r["n_moduli"] != r["n_moduli_pred"] for r in misses)


def test_a_study_and_a_worker_search_the_plugin_params_with_pruning_on(journey):
    tmp, mlflow, storage, steps = journey
    for step in ("study", "create", "worker"):
        ok(steps[step])
    study = optuna.load_study(study_name="matrix_attention_moduli", storage=storage)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
    assert type(study.pruner).__name__ in ("MedianPruner", "CachedReads")
    assert study.user_attrs["spec"]["pruner"] == {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 1}
    for t in trials:
        assert set(t.params) == {"model.params.width", "model.params.heads", "train.learning_rate"}
        assert 8 <= t.params["model.params.width"] <= 32 and 1 <= t.params["model.params.heads"] <= 4
        assert t.user_attrs["config"]["model"]["params"]["width"] == t.params["model.params.width"]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    from mlflow import MlflowClient

    run = MlflowClient(mlflow).get_run(complete[0].user_attrs["mlflow_run_id"])
    assert run.data.params["model.params.heads"] == str(complete[0].params["model.params.heads"])
    assert run.data.metrics["val_n_moduli_accuracy"] == complete[0].value


def test_export_records_the_plugin_and_predict_matches_the_bundle_also_in_a_fresh_process(journey, monkeypatch):
    tmp, _, _, steps = journey
    ok(steps["export"])
    record = json.loads((tmp / "export" / "input.json").read_text())
    assert record["plugin"] == {"family": "matrix_attention.model:build", "module": "matrix_attention.model", "version": "0.1.0"}
    assert (tmp / "export" / "mlflow_model" / "code" / "matrix_attention" / "model.py").is_file()
    predicted = json.loads(ok(steps["predict"]))
    assert [(r["id"], r["error"]) for r in predicted] == [("quintic", None), ("bicubic", None)]
    monkeypatch.syspath_prepend(str(EXAMPLES))
    with plugin_forgotten():
        loaded = bundle.load(tmp / "export")
        x = np.zeros((2, *loaded.shape), dtype=np.float32)
        x[0, 0, 0], x[1, :2, 0] = 5, 3
        expected = loaded.predict(x)["n_moduli"].tolist()
    assert [r["n_moduli"] for r in predicted] == expected
    assert all(30 <= v <= 69 for v in expected)  # classes of the data file's range
    assert steps["fresh"].returncode == 0, steps["fresh"].stderr[-2000:]
    rows = json.loads(steps["fresh"].stdout.strip().splitlines()[-1])
    assert [r["n_moduli"] for r in rows["rows"]] == expected
    assert rows["plugin"].startswith(str(tmp / "export" / "mlflow_model" / "code"))  # the shipped copy, not examples/


def test_reports_show_the_plugin_study(journey):
    tmp, _, _, steps = journey
    ok(steps["compare"])
    ok(steps["report"])
    assert (tmp / "compare.html").stat().st_size > 0 and (tmp / "study.html").stat().st_size > 0
    table = steps["compare"].stdout
    assert "trial-" in table


def test_a_missing_plugin_on_predict_is_one_line_exit_2(journey):
    _, _, _, steps = journey
    assert steps["fresh"].returncode == 0, steps["fresh"].stderr[-2000:]
    done = json.loads(steps["fresh"].stdout.strip().splitlines()[-1])["predict"]
    assert done["code"] == 2
    assert done["stderr"].strip().splitlines()[-1] == (
        "error: model.family matrix_attention.model:build: cannot import matrix_attention.model: ModuleNotFoundError: "
        "No module named 'matrix_attention' (is its folder on PYTHONPATH, or its package installed?)"
    )


def test_the_example_data_file_is_valid_and_its_target_unknown_to_the_package():
    from cicy_search import data

    src = data.source(str(DATA))
    assert (src.kind, src.dimension, src.targets) == ("file", 3, ("n_moduli",))
    assert "n_moduli" not in data.TARGETS
    with DATA.open() as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    assert len(rows) == 400 and len(data.load(str(DATA)).frame) == 400
