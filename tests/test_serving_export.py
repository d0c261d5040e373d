"""``cicy-search export``: a real study (Optuna SQLite + MLflow SQLite), its best model exported, registered and served.

The models here train for two epochs on 400 matrices, so their Hodge numbers are wrong; predictions are
compared with the bundle's own predictions for the same matrices, never with the true values.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest

from cicy_search import bundle, data, training
from cicy_search.search import studyfile
from cicy_search.serving import export as exporting
from cicy_search.search import study as studies
from cicy_search.errors import CicyError
from cicy_search.serving.predict import predict_frame, predict_file

from .conftest import run_cli
from .services import free_port

# The module-scoped fixtures here are made once: pytest-xdist runs all these tests on one worker.
pytestmark = pytest.mark.xdist_group("serving_export")

STUDY = "export-tiny"
MODEL_NAME = "cicy-export-tiny"
KNOWN = [[[5]], [[4, 5]], [[3], [3]], [[2, 3], [2, 3]]]  # quintic, quintic with [n | q], bicubic, bicubic with [n | q]


@pytest.fixture(scope="module")
def made(tmp_path_factory, tracking_uri):
    """A two-trial study on h11 and h21, its best trial exported and registered (alias champion)."""
    root = tmp_path_factory.mktemp("export")
    storage = f"sqlite:///{root / 'optuna.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CICY_SEARCH_HOME", str(root / "home"))  # where the study experiment keeps its artifacts
        spec = studyfile.parse(
            {
                "study": STUDY,
                "base": "dense",
                "data": {"limit": 400, "targets": ["h11", "h21"]},
                "train": {"epochs": 2},
                "space": {"model.depth": {"type": "int", "low": 1, "high": 2}},
                "sampler": {"name": "random", "seed": 1},
                "budget": {"n_trials": 2},
            }
        )
        study = studies.run(spec, storage=storage, tracking_uri=tracking_uri).study
        result = exporting.export(STUDY, root / "out", storage=storage, register=MODEL_NAME, tracking_uri=tracking_uri)
    return {"root": root, "storage": storage, "study": study, "result": result, "out": root / "out"}


def test_export_writes_the_bundle_recomputes_the_logged_scores_and_reads_the_test_split(made, mlflow_client):
    out, study, result = made["out"], made["study"], made["result"]
    best = study.best_trial
    assert result.trial == best.number and result.run_id == best.user_attrs["mlflow_run_id"] and not result.retrained
    assert {"model.keras", "config.yaml", "targets.json", "metrics.json", "source.json", "mlflow_model"} <= {
        p.name for p in out.iterdir()
    }
    run = mlflow_client.get_run(result.run_id)
    logged = run.data.metrics
    written = json.loads((out / "metrics.json").read_text())

    # Recompute from the folder alone: reload the model, rebuild the split its config describes, score it.
    loaded = bundle.load(out)
    assert loaded.config == best.user_attrs["config"]
    prepared = training.prepare(loaded.config)
    recomputed = training.evaluate(loaded.model, prepared, loaded.config["model"]["head"])
    for key in ("val_accuracy", "val_h11_accuracy", "val_h21_accuracy", "val_h11_mae", "train_accuracy"):
        assert recomputed[key] == logged[key] == written["metrics"][key], key
    # A study trial logs no test scores (nothing may select on them): the export is where they are read, once.
    assert not any(k.startswith("test_") for k in logged) and not any(k.startswith("test_") for k in written["logged_metrics"])
    for key in ("test_accuracy", "test_h11_accuracy", "test_h21_accuracy", "test_h11_mae"):
        assert recomputed[key] == written["metrics"][key], key
    assert result.mismatched == [] and result.notes == []
    assert written["split"]["seed"] == loaded.config["data"]["seed"] and written["split"]["limit"] == 400
    assert written["split"]["n_test"] == len(prepared.index["test"]) == int(run.data.params["data.n_test"])

    source = json.loads((out / "source.json").read_text())
    assert source["dataset_hash"] == data.dataset_hash("original") == run.data.tags["dataset_hash"]
    assert source["study"] == STUDY and source["trial"] == best.number and source["seed"] == best.user_attrs["seed"]


def test_registered_alias_points_at_the_new_version_and_predicts_like_the_bundle(made, mlflow_client, tracking_uri, tmp_path):
    registered = made["result"].registered
    version = mlflow_client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert registered["uri"] == f"models:/{MODEL_NAME}@champion" and int(version.version) == registered["version"]
    assert version.run_id == made["result"].run_id and "/pyfunc/" in version.source

    source = tmp_path / "known.json"
    source.write_text(json.dumps(KNOWN + [[[1, -1]]]))
    from_bundle = predict_file(made["out"], source).records
    from_registry = predict_file(f"models:/{MODEL_NAME}@champion", source, tracking_uri=tracking_uri).records
    by_version = predict_file(f"models:/{MODEL_NAME}/{version.version}", source, tracking_uri=tracking_uri).records
    assert from_registry == from_bundle == by_version
    assert from_bundle[0]["h11"] == from_bundle[1]["h11"] and from_bundle[2]["h21"] == from_bundle[3]["h21"]
    assert from_bundle[4]["error"] == "entry (0,1) = -1 is negative" and from_bundle[4]["h11"] is None

    # The MLflow pyfunc gives the same numbers through mlflow's own loader.
    mlflow.set_tracking_uri(tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    frame = pyfunc.predict(pd.DataFrame({"matrix": [json.dumps(m) for m in KNOWN]}))
    assert frame["h11"].tolist() == [r["h11"] for r in from_bundle[:4]]
    assert pyfunc.metadata.signature.inputs.input_names() == ["matrix"]

    with pytest.raises(CicyError, match="not found"):
        predict_file(f"models:/{MODEL_NAME}@nope", source, tracking_uri=tracking_uri)


def test_cli_retrain_export_reproduces_the_trial_as_a_new_tracked_run(made, mlflow_client, tracking_uri, capsys):
    out = made["root"] / "retrained"
    code = run_cli("export", STUDY, "--storage", made["storage"], "--out", str(out), "--retrain", "--tracking-uri", tracking_uri)
    assert code == 0
    printed = capsys.readouterr().out
    assert "(retrained)" in printed and "test_accuracy=" in printed
    source = json.loads((out / "source.json").read_text())
    run = mlflow_client.get_run(source["mlflow_run_id"])
    assert source["retrained"] and run.data.tags["role"] == "retrain"
    assert run.data.tags["retrain_of_run"] == made["result"].run_id
    written = json.loads((out / "metrics.json").read_text())
    assert written["metrics"]["test_accuracy"] == run.data.metrics["test_accuracy"]
    assert bundle.load(out).config == bundle.load(made["out"]).config


def test_export_errors_are_one_line(made, tracking_uri, capsys):
    args = ["--storage", made["storage"], "--tracking-uri", tracking_uri]
    other = next(t.number for t in made["study"].trials if t.number != made["study"].best_trial.number)
    cases = [
        (["export", STUDY, "--out", str(made["out"]), *args], "not an empty folder"),
        (["export", "no-such-study", "--out", str(made["root"] / "x"), *args], "no study 'no-such-study'"),
        (["export", STUDY, "--out", str(made["root"] / "y"), "--trial", str(other), *args], "is not the best trial"),
        (["export", STUDY, "--out", str(made["root"] / "z"), "--register", "a/b", *args], "cannot contain '/'"),
        (["export", STUDY, "--out", str(made["root"] / "z"), "--register", "ok", "--alias", "latest", *args], "reserved"),
    ]
    for argv, reason in cases:
        assert run_cli(*argv) == 2
        err = capsys.readouterr().err.strip()
        assert reason in err and len(err.splitlines()) == 1
    assert not any((made["root"] / d).exists() for d in "xyz")


def test_pick_trial_needs_a_number_on_a_pareto_front():
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="front")
    for values in ([0.9, 100.0], [0.8, 10.0], [0.7, 50.0]):  # the third is dominated by the second
        study.add_trial(optuna.trial.create_trial(values=values))
    with pytest.raises(CicyError, match=r"2 trials on its Pareto front \(0, 1\): choose one with --trial"):
        exporting.pick_trial(study)
    assert exporting.pick_trial(study, 1).number == 1
    with pytest.raises(CicyError, match="trial 2 is not on the Pareto front"):
        exporting.pick_trial(study, 2)


def _post(url: str, body: dict, timeout: float = 60) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_mlflow_models_serve_answers_a_json_request(made, tracking_uri, tmp_path):
    port = free_port()
    bin_dir = Path(sys.executable).parent  # uvicorn is started by name: the venv's bin must be on PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL_NAME}@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "server did not answer /ping within 180 s"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read()
                break
            except OSError:
                time.sleep(1)
        body = {"dataframe_records": [{"matrix": m} for m in KNOWN] + [{"matrix": [[1, 2], [3]]}, {"matrix": "[[5]]"}]}
        answer = _post(f"http://127.0.0.1:{port}/invocations", body)["predictions"]
        expected = predict_frame(bundle.load(made["out"]), [m["matrix"] for m in body["dataframe_records"]])
        assert answer == expected.to_dict(orient="records")
        assert answer[4] == {"h11": None, "h21": None, "error": "ragged rows: row 1 has 1 entries, row 0 has 2"}
        # The signature's example request works as written.
        example = json.loads((made["out"] / "mlflow_model" / "serving_input_example.json").read_text())
        assert len(_post(f"http://127.0.0.1:{port}/invocations", example)["predictions"]) == 2
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)
        log.close()
