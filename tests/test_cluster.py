"""One study on a cluster, for real: PostgreSQL storage, an ``mlflow server`` process on a loopback
port, worker processes, a worker killed with SIGKILL mid-trial. Then the deployment files (docker/,
deploy/), checked as far as a machine without a Docker engine, Slurm or a Kubernetes cluster allows.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import optuna
import pytest
import yaml

from cicy_search.search import study as studies
from cicy_search.search import studyfile, worker
from cicy_search import tracking
from cicy_search.errors import CicyError
from cicy_search.search.objective import trial_seed
from cicy_search.search.storage import LOST, with_driver

from .conftest import run_cli
from .services import MlflowServer, free_port

ROOT = Path(__file__).resolve().parent.parent
TINY = {
    "seed": 5,
    "base": "dense",
    "data": {"limit": 300},
    "train": {"epochs": 1},
    "space": {
        "model.depth": {"type": "int", "low": 1, "high": 2},
        "model.width": {"type": "int", "low": 8, "high": 32, "log": True},
        "train.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
    "sampler": {"name": "random"},
    "budget": {"n_trials": 5},
}
# Lost trials are noticed after seconds, not the default minute and a half.
FAST_HEARTBEAT = {"CICY_HEARTBEAT_INTERVAL": "1", "CICY_GRACE_PERIOD": "10"}


def study_file(folder: Path, name: str, **changes) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"study": name, **TINY, **changes}))
    return path


def worker_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, **FAST_HEARTBEAT, "CICY_SEARCH_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(
        with_driver(postgres.new("cicy_mlflow")),
        folder / "artifacts",
        folder / "server.log",
        allowed_hosts="localhost:*,127.0.0.1:*,mlflow:5000",
    )
    yield server
    server.stop()


@pytest.mark.xdist_group("cluster_mlflow_server")  # one server for the module
@pytest.mark.postgres
def test_the_mlflow_server_with_the_recipes_pool_takes_a_burst_of_concurrent_batches(mlflow_server, monkeypatch):
    """32 workers' log_batch requests at once to one server worker (PostgreSQL backend). MLflow's log_batch holds a
    connection while it opens another: with its default pool (5 + 10) such a burst stalled 30 s and failed
    ("QueuePool limit ... reached", 34 of 160 requests here); the recipes' pool (``SERVER_POOL``) takes it."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.entities import Metric, Param, RunTag

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a failed request shows, not retried away
    client = tracking.client(mlflow_server.uri)
    experiment = tracking.experiment_id(client, "burst")
    runs = [client.create_run(experiment).info.run_id for _ in range(32)]
    now = int(time.time() * 1000)

    def write(run_id):
        for k in range(3):
            client.log_batch(run_id, params=[Param(f"p{k}.{j}", str(j)) for j in range(20)], metrics=[Metric("m", k, now, k)],
                             tags=[RunTag("batch", str(k))])  # fmt: skip

    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(write, runs))  # raises the first failed request
    assert time.monotonic() - started < 30  # no request waited out the pool's timeout
    for run_id in runs:
        run = client.get_run(run_id)
        assert len(run.data.params) == 60 and run.data.tags["batch"] == "2" and run.data.metrics["m"] == 2


def test_the_recipes_give_the_mlflow_server_the_pool_and_postgres_the_connections_it_needs():
    """docker/compose.yaml and deploy/kubernetes run the server with bench.cluster.SERVER_POOL (what the tests' and
    benches' servers use), and PostgreSQL allows every server worker its burst besides the workers' connections."""
    from bench.cluster import SERVER_POOL

    burst = int(SERVER_POOL["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]) + int(SERVER_POOL["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"])
    assert burst >= 2 * 40  # two connections a request, 40 requests at once a server worker
    services = compose()["services"]
    assert {k: str(services["mlflow"]["environment"][k]) for k in SERVER_POOL} == SERVER_POOL
    assert "--workers=${MLFLOW_WORKERS:-2}" in services["mlflow"]["command"]
    assert services["postgres"]["command"][-1] == "max_connections=${POSTGRES_MAX_CONNECTIONS:-300}" and 300 >= 2 * burst + 50
    folder = ROOT / "deploy" / "kubernetes"
    server = next(d for d in yaml.safe_load_all((folder / "mlflow.yaml").read_text()) if d and d["kind"] == "Deployment")
    container = server["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e["value"] for e in container["env"] if e["name"] in SERVER_POOL} == SERVER_POOL
    workers = int(next(a for a in container["args"] if a.startswith("--workers=")).split("=")[1])
    database = next(d for d in yaml.safe_load_all((folder / "postgres.yaml").read_text()) if d and d["kind"] == "StatefulSet")
    args = database["spec"]["template"]["spec"]["containers"][0]["args"]
    assert int(args[args.index("-c") + 1].split("=")[1]) >= workers * burst + 100


def _kill_one_mid_trial(storage: str, procs: dict[int, subprocess.Popen], seconds: float) -> int:
    """SIGKILL the first worker seen training (its trial has an MLflow run); returns that trial's number."""
    rdb = optuna.storages.RDBStorage(with_driver(storage))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for p in procs.values():
            assert p.poll() is None, f"a worker exited early with {p.returncode}"
        study = optuna.load_study(study_name="shared", storage=rdb)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            pid = int(t.user_attrs.get("worker", "x:0").rsplit(":", 1)[1])
            if pid in procs and "mlflow_run_id" in t.user_attrs:
                os.kill(pid, signal.SIGKILL)
                procs[pid].wait(10)
                return t.number
        time.sleep(0.2)
    raise TimeoutError("no worker started training in time")


@pytest.mark.xdist_group("cluster_mlflow_server")  # one server for the module
@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_share_one_study_and_a_killed_workers_trial_is_retried(tmp_path, postgres, mlflow_server):
    storage = postgres.new("cicy_optuna")
    path = study_file(tmp_path, "shared")
    assert run_cli("study", "create", str(path), "--storage", storage, "--tracking-uri", mlflow_server.uri) == 0
    cmd = [sys.executable, "-m", "cicy_search.cli", "worker", str(path), "--storage", storage, "--threads", "1"]
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    procs = {}
    for log in logs:
        p = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=worker_env(tmp_path / "home"))
        procs[p.pid] = p
    try:
        victim = _kill_one_mid_trial(storage, procs, 240)
        for p in procs.values():
            p.wait(420)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    output = "\n".join(log.read_text()[-3000:] for log in logs)
    killed = [p for p in procs.values() if p.returncode == -signal.SIGKILL]
    assert len(killed) == 1 and all(p.returncode == 0 for p in procs.values() if p not in killed), output

    study = optuna.load_study(study_name="shared", storage=optuna.storages.RDBStorage(with_driver(storage)))
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    # The budget is the study's: 5 complete trials from both workers together (and at most one more for the other
    # worker, if both checked the budget at the same moment: the check takes no lock), plus the lost one. Two
    # workers show what three did: the survivor retries the killed one's trial and ends the parent run.
    assert set(states) == {"COMPLETE", "FAIL"} and 5 <= states["COMPLETE"] <= 5 + 1 and states["FAIL"] == 1, states
    assert [t.number for t in trials] == list(range(len(trials)))
    lost = trials[victim]
    assert lost.state.name == "FAIL"
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim)
    assert retry.state.name == "COMPLETE" and retry.params == lost.params and retry.number > victim
    assert retry.user_attrs["worker"] != lost.user_attrs["worker"]
    assert {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials} == {str(pid) for pid in procs}

    client = tracking.client(mlflow_server.uri)
    exp = client.get_experiment_by_name("shared")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parent = study.user_attrs["mlflow_parent_run_id"]
    children = {r.info.run_id: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
    # Every trial tracked exactly once, each run pointing back at its trial.
    assert sorted(t.user_attrs["mlflow_run_id"] for t in trials) == sorted(children)
    for t in trials:
        run = children[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["trial"] == str(t.number)
        assert run.data.params["seed"] == str(trial_seed(5, t.number)) == str(t.user_attrs["seed"])
        assert run.data.tags["threads"] == "1" and run.data.tags["device"] == "cpu"
        assert run.data.tags["worker"] == t.user_attrs["worker"] and run.data.tags["host"]
    dead = children[lost.user_attrs["mlflow_run_id"]]
    assert dead.info.status == "FAILED" and dead.data.tags["failure_reason"] == LOST
    assert children[retry.user_attrs["mlflow_run_id"]].data.tags["retry_of"] == str(victim)
    assert Counter(r.info.status for r in children.values()) == {"FINISHED": states["COMPLETE"], "FAILED": 1}

    # The parent run summed up the trials of all workers and was ended by the last one, the budget met.
    summary = client.get_run(parent)
    assert summary.info.status == "FINISHED" and summary.data.tags["budget_met"] == "true"
    assert summary.data.tags["best_run_id"] == study.best_trial.user_attrs["mlflow_run_id"]
    complete = sorted(t.number for t in trials if t.state.name == "COMPLETE")
    assert sorted(m.step for m in client.get_metric_history(parent, "trial_val_accuracy")) == complete
    assert {a.path for a in client.list_artifacts(parent, "study_report")} >= {"study_report/study-shared.html"}


@pytest.mark.xdist_group("cluster_mlflow_server")  # one server for the module
@pytest.mark.postgres
def test_the_tracking_server_accepts_only_the_host_names_it_is_told(mlflow_server):
    def status(host: str) -> int:
        url = f"{mlflow_server.uri}/api/2.0/mlflow/experiments/search?max_results=1"
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers={"Host": host}), timeout=10).status
        except urllib.error.HTTPError as e:
            return e.code

    # Compose workers say Host: mlflow:5000, which is only accepted because --allowed-hosts lists it.
    assert status("mlflow:5000") == 200
    assert status(f"127.0.0.1:{mlflow_server.port}") == 200
    assert status("node17.cluster:5000") == 403


class _RefusingServer(BaseHTTPRequestHandler):
    """What MLflow 3 answers a Host header outside --allowed-hosts: /health OK, the API 403."""

    def do_GET(self):
        ok = self.path == "/health"
        body = b"OK" if ok else b"Invalid Host header - possible DNS rebinding attack detected"
        self.send_response(200 if ok else 403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_a_tracking_server_that_refuses_our_host_name_is_one_clear_line():
    server = HTTPServer(("127.0.0.1", 0), _RefusingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(CicyError) as e:
            studies.check_tracking(tracking.client(f"http://127.0.0.1:{server.server_port}"))
    finally:
        server.shutdown()
    assert "refused a request" in str(e.value) and "--allowed-hosts" in str(e.value) and "\n" not in str(e.value)


WRAPPER = """import sys
from cicy_search.cli import main
try:
    main(sys.argv[1:])
finally:
    print("tensorflow imported:", "tensorflow" in sys.modules, file=sys.stderr)
"""


def test_a_worker_fails_fast_with_one_line_when_storage_or_tracking_is_unreachable(tmp_path):
    path = study_file(tmp_path, "unreachable")
    sqlite = f"sqlite:///{tmp_path / 'o.db'}"
    studies.create(studyfile.load(path), storage=sqlite, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    cases = {
        "storage": ["--storage", f"postgresql://cicy:s3cret@127.0.0.1:{free_port()}/optuna"],
        "tracking": ["--storage", sqlite, "--tracking-uri", f"http://127.0.0.1:{free_port()}"],
    }
    start = time.monotonic()
    procs = {
        case: subprocess.Popen(
            [sys.executable, "-c", WRAPPER, "worker", str(path), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=worker_env(tmp_path / "home"),
        )  # fmt: skip
        for case, args in cases.items()
    }
    results = {case: (p.wait(120), p.communicate()[1]) for case, p in procs.items()}
    for case, (code, err) in results.items():
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 2, (case, err)
        assert lines[1] == "tensorflow imported: False"  # it stopped before the expensive part
    assert results["storage"][1].startswith("error: Optuna storage postgresql://cicy:***@127.0.0.1:")
    assert "is unreachable" in results["storage"][1] and "s3cret" not in results["storage"][1]
    assert results["tracking"][1].startswith("error: MLflow tracking server http://127.0.0.1:")
    assert time.monotonic() - start < 90


def test_study_create_is_idempotent_and_workers_need_the_same_study(tmp_path, tracking_uri, mlflow_client, capsys):
    path = study_file(tmp_path, "created")
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    args = ["study", "create", str(path), "--storage", storage, "--tracking-uri", tracking_uri]
    assert run_cli(*args) == 0 and "budget 5" in capsys.readouterr().out
    first = studies.load("created", storage=storage).user_attrs
    assert run_cli(*args, "--n-trials", "8") == 0 and "budget 8" in capsys.readouterr().out
    again = studies.load("created", storage=storage).user_attrs
    assert again["budget"] == 8 and again["mlflow_parent_run_id"] == first["mlflow_parent_run_id"]
    exp = mlflow_client.get_experiment_by_name("created")
    assert len(mlflow_client.search_runs([exp.experiment_id])) == 1

    (tmp_path / "other").mkdir()
    changed = study_file(tmp_path / "other", "created", seed=6)
    assert run_cli("worker", str(changed), "--storage", storage) == 2
    assert "created from a different study file (differs in: seed)" in capsys.readouterr().err
    missing = study_file(tmp_path, "missing")
    assert run_cli("worker", str(missing), "--storage", storage) == 2
    err = capsys.readouterr().err
    assert "no study 'missing'" in err and "cicy-search study create" in err and len(err.strip().splitlines()) == 1


GPU_PROBE = """import json, os
from cicy_search.search import worker
from cicy_search.errors import CicyError
worker.configure_environment(gpu="3", threads=2)
import tensorflow as tf
out = {"cuda": os.environ["CUDA_VISIBLE_DEVICES"], "growth": os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH")}
out["tags"] = worker.configure_tensorflow(threads=2)
out["threads"] = [tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads()]
try:
    worker.configure_tensorflow(gpu="3")
except CicyError as e:
    out["gpu_error"] = str(e)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_gpu_and_thread_settings_are_set_before_tensorflow_starts(tmp_path):
    out = subprocess.run([sys.executable, "-c", GPU_PROBE], capture_output=True, text=True, timeout=180, env=worker_env(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["cuda"] == "3" and probe["growth"] == "true"
    assert probe["threads"] == [2, 2] and probe["tags"]["threads"] == "2"
    assert probe["tags"]["gpu"] == "3" and probe["tags"]["worker"].rsplit(":", 1)[1].isdigit()
    # This machine has no GPU: a worker asked for one stops instead of training on the CPU.
    assert "TensorFlow sees no GPU with CUDA_VISIBLE_DEVICES=3" in probe["gpu_error"]


def test_worker_index_comes_from_the_scheduler(monkeypatch):
    for env in ("CICY_WORKER_INDEX", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "SLURM_PROCID"):
        monkeypatch.delenv(env, raising=False)
    assert worker.worker_index() > 0
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    assert worker.worker_index() == 4
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert worker.worker_index() == 8


# --- deployment files: no Docker engine, Slurm or cluster here, so parse and run what can be run ---


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def test_compose_file_services_healthchecks_ports_and_secrets():
    doc = compose()
    services = doc["services"]
    assert set(services) == {"postgres", "mlflow", "create", "dashboard", "worker", "worker-gpu"}
    for name in ("postgres", "mlflow", "dashboard"):
        assert services[name]["healthcheck"]["test"], name
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # nothing listens beyond this host by default
        env = service.get("environment", {})
        assert not [k for k in env if "PASSWORD" in k and not k.endswith("_FILE")], name
    assert doc["secrets"]["postgres_password"]["file"].endswith("./secrets/postgres_password}")
    assert (ROOT / "docker" / "secrets" / ".gitignore").read_text().split() == ["*", "!.gitignore"]
    worker_service = services["worker"]
    assert "ports" not in worker_service and "container_name" not in worker_service  # scalable
    assert worker_service["deploy"]["replicas"] == "${WORKERS:-2}"
    assert worker_service["depends_on"]["create"]["condition"] == "service_completed_successfully"
    assert services["create"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert worker_service["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "--allowed-hosts=mlflow:5000,localhost:*,127.0.0.1:*" in services["mlflow"]["command"]
    gpu = services["worker-gpu"]
    assert gpu["build"]["target"] == "gpu" and gpu["environment"]["CICY_GPU"] == "0"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for name in ("worker", "worker-gpu"):  # time for a stopped worker to fail its trial in Optuna and MLflow
        assert services[name]["stop_grace_period"] == "3m"
    for name, service in services.items():  # no URL (with its password) expanded into a command line
        assert "CICY_STORAGE" not in json.dumps(service.get("command", [])).replace("os.environ['CICY_STORAGE']", ""), name
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        out = subprocess.run([docker, "compose", "-f", str(ROOT / "docker" / "compose.yaml"), "config", "-q"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_dockerfile_has_cpu_and_gpu_targets_and_a_non_root_user():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim-bookworm AS cpu" in text and "FROM cpu AS gpu" in text
    assert "tensorflow[and-cuda]==2.21.0" in text and "USER cicy" in text.rsplit("FROM", 1)[1]
    ignore = [line for line in (ROOT / "docker" / "Dockerfile.dockerignore").read_text().split("\n") if line and line[0] != "#"]
    assert ignore[0] == "*" and "!cicy_search/" in ignore and ".venv" not in " ".join(ignore[1:])


def test_entrypoint_builds_the_database_urls_from_the_password_file(tmp_path):
    from sqlalchemy.engine import make_url

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    fake = bin_dir / "cicy-search"
    fake.write_text('#!/bin/sh\necho "$CICY_STORAGE|$MLFLOW_BACKEND_STORE_URI|$*|${POSTGRES_PASSWORD:-unset}"\n')
    fake.chmod(0o755)
    secret = tmp_path / "password"
    secret.write_text("p@ss/w:rd")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "POSTGRES_PASSWORD_FILE": str(secret), "POSTGRES_USER": "cicy"}
    out = subprocess.run(["sh", str(ROOT / "docker" / "entrypoint.sh"), "worker", "s.yaml"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    storage, backend, args, leaked = out.stdout.strip().split("|")
    assert make_url(storage).password == "p@ss/w:rd" and make_url(storage).database == "optuna"
    assert make_url(backend).database == "mlflow" and make_url(backend).host == "postgres"
    assert args == "worker s.yaml" and leaked == "unset"


def test_kubernetes_manifests_parse_with_the_expected_kinds():
    folder = ROOT / "deploy" / "kubernetes"
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs = [d for f in kustomization["resources"] for d in yaml.safe_load_all((folder / f).read_text()) if d]
    kinds = Counter(d["kind"] for d in docs)
    assert kinds == {"ConfigMap": 1, "Service": 2, "StatefulSet": 1, "PersistentVolumeClaim": 1, "Deployment": 1, "Job": 2}
    assert "Secret" not in kinds  # the password Secret is created by hand, never committed
    jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Job"}
    create = jobs["cicy-study-create"]["spec"]["template"]["spec"]["containers"][0]
    assert create["args"][:2] == ["study", "create"]
    workers = jobs["cicy-workers"]["spec"]
    assert workers["parallelism"] > 1 and workers["completionMode"] == "Indexed"
    container = workers["template"]["spec"]["containers"][0]
    assert container["args"][0] == "worker" and container["image"].endswith(":gpu")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    refs = [e["valueFrom"]["secretKeyRef"]["name"] for d in docs for e in _env(d) if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs and set(refs) == {"cicy-postgres"}
    mlflow = next(d for d in docs if d["kind"] == "Deployment")
    assert any(a.startswith("--allowed-hosts=") and "mlflow:5000" in a for a in _containers(mlflow)[0]["args"])
    kubectl = shutil.which("kubectl")
    if kubectl:  # kustomize renders offline; no cluster needed
        out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
        assert Counter(d["kind"] for d in rendered) == kinds
        assert {d["metadata"].get("namespace") for d in rendered} == {"cicy-search"}


def _containers(doc: dict) -> list:
    spec = doc.get("spec", {})
    return spec.get("template", {}).get("spec", {}).get("containers", [])


def _env(doc: dict) -> list:
    return [e for c in _containers(doc) for e in c.get("env", [])]


def test_slurm_array_script_parses_and_starts_its_workers(tmp_path):
    script = ROOT / "deploy" / "slurm" / "workers.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "#SBATCH --array=" in text and "#SBATCH --gres=gpu:1" in text and "apptainer exec --nv" in text
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "cicy-search").write_text('#!/bin/sh\necho "$CICY_WORKER_INDEX $* ($CICY_STORAGE)"\n')
    (venv / "cicy-search").chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin", "CICY_VENV": str(tmp_path / "venv"), "CICY_STORAGE": "postgresql://cicy@db/optuna",
        "SLURM_ARRAY_TASK_ID": "1", "SLURM_CPUS_PER_TASK": "8", "WORKERS_PER_GPU": "2", "CUDA_VISIBLE_DEVICES": "3",
    }  # fmt: skip
    out = subprocess.run(["bash", str(script), "studies/x.yaml"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    # The storage URL (it may hold a password) travels in the environment, never on a command line.
    assert sorted(out.stdout.strip().splitlines()) == [
        f"{i} worker studies/x.yaml --gpu 3 --threads 4 (postgresql://cicy@db/optuna)" for i in (2, 3)
    ]
    assert "#SBATCH --signal=B:TERM@" in text
    no_storage = {k: v for k, v in env.items() if k != "CICY_STORAGE"}
    out = subprocess.run(["bash", str(script), "studies/x.yaml"], capture_output=True, text=True, env=no_storage, timeout=30)
    assert out.returncode != 0 and "export CICY_STORAGE" in out.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("after", [2, 1], ids=["all-started", "while-starting"])
def test_slurm_script_passes_sigterm_on_and_waits_for_its_workers(tmp_path, after):
    """A time limit or preemption sends SIGTERM; the workers must get it and the time to close their trials, also a
    worker the script starts as the signal comes (before, it could miss it and run on: 16 hangs in 100 runs)."""
    script = ROOT / "deploy" / "slurm" / "workers.sbatch"
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    # A stand-in worker: on SIGTERM it takes a second to "close its trial", writes that down, exits 143.
    (venv / "cicy-search").write_text(
        "#!/bin/bash\n"
        'trap \'sleep 1; echo closed > "$OUT/closed.$CICY_WORKER_INDEX"; exit 143\' TERM\n'
        'echo started > "$OUT/started.$CICY_WORKER_INDEX"\n'
        "while true; do sleep 0.1; done\n"
    )
    (venv / "cicy-search").chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin", "CICY_VENV": str(tmp_path / "venv"), "CICY_STORAGE": "sqlite:///x.db", "OUT": str(tmp_path),
        "SLURM_ARRAY_TASK_ID": "0", "SLURM_CPUS_PER_TASK": "2", "WORKERS_PER_GPU": "2",
    }  # fmt: skip
    proc = subprocess.Popen(["bash", str(script), "studies/x.yaml"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(tmp_path.glob("started.*"))) < after:
        pass  # no sleep: the signal comes as soon as the worker has started
    assert len(list(tmp_path.glob("started.*"))) >= after
    proc.send_signal(signal.SIGTERM)  # what --signal=B:TERM@180 sends to the batch shell only
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    started = {p.suffix for p in tmp_path.glob("started.*")}
    assert started <= {p.suffix for p in tmp_path.glob("closed.*")} <= {".0", ".1"}  # waited for each that started
