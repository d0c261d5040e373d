"""Scale by simulation: many workers, many trials, one PostgreSQL and one MLflow server.

    .venv/bin/python -m bench.scale            # the full sweep
    .venv/bin/python -m bench.scale --quick    # a CI-sized check

The bench starts its own PostgreSQL (``initdb`` in a temporary folder, a loopback port) and an ``mlflow
server`` on it, and stops both on exit and on Ctrl-C. Workers are processes running the real worker path
(``study.drive``: the budget loop, heartbeats, the study's summary run, the background MLflow uploader)
with an objective whose training is a sleep: the trial's params are sampled by the study's sampler, every
epoch reports its value to the pruner and logs its metrics, and each trial has its MLflow run, params,
config (its description), dataset inputs and final status. No worker imports TensorFlow (each reports it).

1. Throughput: N workers (1 to 64) with trials of T seconds run ``--trials-each`` trials each on a fresh
   study; ``efficiency`` is the busy fraction, slept seconds / (N x wall time from the job's start to its
   last trial's end): 1.0 is the ideal N x 60 / T trials per minute.
2. Growth: one study grown to ``--grow`` trials. Between measurements it is filled with copies of its
   own real complete trials (``prefill``: the same rows a finished trial leaves, copied in SQL; no MLflow
   runs), then ``--grow-workers`` workers run real trials; the per-trial storage and tracking time is
   recorded against the number of finished trials.

``--storage postgresql journal`` runs every job on both Optuna storages in the same run (the study in the bench's
PostgreSQL, or in a journal file, ``journal:PATH``; the mlflow server stays on PostgreSQL), alternating which goes
first; a journal study is grown with ``Study.add_trials``.

Each trial's time outside its sleep is split (exclusive timers in the worker): Optuna storage calls on the
trial's thread, sampler (its own work, excluding the storage reads it makes), MLflow
calls on the trial's thread, its waits for the uploader (``upload_wait``: the previous trial's writes, at the end
of the first epoch, and the run's link, as ``objective.Objective`` waits), and, off the trial's thread, MLflow
calls in the uploader and heartbeats; and
per method (``profile``: Optuna storage and MLflow client methods, ms and calls per trial).
Every job runs in each of ``--variants`` in the same run, alternating which goes first (``VARIANTS``: the
product as it is, and the bench's simulated trial making the MLflow requests of earlier versions). The product
has one behaviour: to compare it before and after a change, run the bench on both commits (``git worktree add``)
and compare the two results files. The objective is simulated, not ``objective.Objective`` with a sleeping
training function, because that imports TensorFlow in every worker process (64 of them at the largest size) and
the bench measures the services, not training. Results:
``bench/results/scale.json`` and ``bench/results/scale.html`` (``reporting.html``: offline, with the
figures as plotly JSON and the tables as CSV in ``bench/results/scale/``).
"""

from __future__ import annotations

import argparse
import functools
import glob
import json
import math
import os
import pwd
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from bench.processes import CpuMeter, free_port, stop_process_group

ROOT = Path(__file__).resolve().parent.parent
STUDY_FILE = ROOT / "studies" / "quickstart.yaml"  # TPE (multivariate), median pruner, 12 epochs, 5 parameters
N_PARAMS = 5
RECENT = 1000  # n_recent_trials of the bounded TPE ("after")
# What a job runs with: a trial's MLflow requests ("fewest": the config as the run's description, set with its creation, instead of a config.yaml upload,
# metric batches and the study's summary writes at most every tracking.FLUSH_SECONDS; "few": as before those cuts,
# the config uploaded, metric batches every 5 s and a summary write after each trial; "more": as "few" but without
# its three cuts: the params sent apart from the first metric batch, a model summary without a model, each ended run
# read back to print its address). The study file's TPE sees the last RECENT finished trials. The variants that
# switched product behaviour ("before", "lock", "reads": the old budget lock, uncoalesced summary writes, no journal
# index) went with those switches; their results stay in bench/results as measured.
STORAGES = ("postgresql", "journal")  # the studies' Optuna storage (--storage): the bench's PostgreSQL, a journal file
VARIANTS = {
    "after": {"requests": "fewest"},
    "requests": {"requests": "more"},
    "few": {"requests": "few"},
}
EARLIER_FLUSH_SECONDS = 5.0  # metric batches before "fewest" (the study's summary was written after each trial)


# ----------------------------------------------------------------------------------------------- services


class Postgres:
    """A throwaway PostgreSQL cluster (Debian's binaries) on a loopback port, trusted local logins."""

    def __init__(self, folder: Path, max_connections: int):
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in Path(p).parent.name.split(".")])
        if not binaries:
            raise SystemExit("bench.scale needs PostgreSQL's server binaries (apt-get install postgresql)")
        bin_dir = Path(binaries[-1])
        # Its own folder in /tmp: the server's user must reach it (pytest's and tempfile's folders are private).
        self.folder = Path(tempfile.mkdtemp(prefix="cicy-scale-postgres-"))
        user = None
        if os.getuid() == 0:  # the server refuses to run as root
            user = "postgres"
            entry = pwd.getpwnam(user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        data = self.folder / "data"
        made = subprocess.run([bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                              user=user, capture_output=True, text=True)  # fmt: skip
        if made.returncode:
            raise RuntimeError(f"initdb failed: {made.stderr.strip()[-1000:]}")
        self.port = free_port()
        self.max_connections = max_connections
        cmd = [bin_dir / "postgres", "-D", data, "-p", str(self.port), "-k", self.folder,
               "-c", "listen_addresses=127.0.0.1", "-c", f"max_connections={max_connections}"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, user=user, stdout=open(folder / "postgres.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.connect("postgres").close()
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"PostgreSQL did not start: {(folder / 'postgres.log').read_text()[-2000:]}") from None
                time.sleep(0.3)

    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def connect(self, db: str):
        import psycopg2

        conn = psycopg2.connect(self.url(db), connect_timeout=5)
        conn.autocommit = True
        return conn

    def create(self, db: str) -> str:
        conn = self.connect("postgres")
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()
        return self.url(db)

    def query(self, db: str, sql: str):
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone()[0]
        finally:
            conn.close()

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then the cluster's folder is removed."""
        try:
            stop_process_group(self.proc, signal.SIGINT, 30)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


class Peak(threading.Thread):
    """Samples the server's client connections once a second; ``take()`` returns the peak since the last take."""

    def __init__(self, pg: Postgres):
        super().__init__(daemon=True)
        self.pg, self.peak, self.done = pg, 0, threading.Event()

    def run(self) -> None:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        while not self.done.wait(1.0):
            try:
                self.peak = max(self.peak, self.pg.query("postgres", sql))
            except Exception:
                pass

    def take(self) -> int:
        peak, self.peak = self.peak, 0
        return peak


# ------------------------------------------------------------------------------------ the simulated worker


class Timers:
    """Exclusive time per category and thread kind (``trial`` for the main thread, ``bg`` for the others)."""

    def __init__(self):
        self.totals: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.methods: dict[str, list] = {}  # "category Class.method kind" -> [exclusive seconds, calls]
        self._local = threading.local()
        self._lock = threading.Lock()

    def timed(self, fn, category: str, method: str | None = None):
        """``fn`` timed into ``category`` (exclusive of the timed calls it makes) and, given, into ``method``."""
        timers = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            stack = timers._local.__dict__.setdefault("stack", [])
            stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                nested = stack.pop()
                if stack:
                    stack[-1] += elapsed
                kind = "trial" if threading.current_thread() is threading.main_thread() else "bg"
                key = f"{category}_{kind}"
                with timers._lock:
                    timers.totals[key] = timers.totals.get(key, 0.0) + elapsed - nested
                    timers.calls[key] = timers.calls.get(key, 0) + 1
                    if method is not None:
                        entry = timers.methods.setdefault(f"{method} {kind}", [0.0, 0])
                        entry[0] += elapsed - nested
                        entry[1] += 1

        return timed

    def wrap(self, owner, name: str, category: str) -> None:
        setattr(owner, name, self.timed(getattr(owner, name), category, f"{category} {getattr(owner, '__name__', owner)}.{name}"))

    def wait(self, future, category: str = "upload_wait"):
        """``future.result()``, its wait counted under ``category`` (the trial's thread waiting for the uploader)."""
        return self.timed(future.result, category)()

    def snapshot(self) -> dict[str, float]:
        """Seconds per category, and calls (``<category>_calls``)."""
        with self._lock:
            return {**self.totals, **{f"{k}_calls": v for k, v in self.calls.items()}}

    def method_snapshot(self) -> dict[str, list]:
        with self._lock:
            return {k: list(v) for k, v in self.methods.items()}


def install_timers() -> Timers:
    """Time Optuna's storage (RDB or journal), the samplers and MLflow's client, in this process."""
    import optuna
    from mlflow import MlflowClient

    timers = Timers()
    for cls in (optuna.storages.RDBStorage, optuna.storages.JournalStorage):
        for name in [n for n in vars(cls) if not n.startswith("__")]:
            if callable(getattr(cls, name)) and not isinstance(vars(cls)[name], (staticmethod, classmethod, property)):
                timers.wrap(cls, name, "storage")
    for cls in (optuna.samplers.TPESampler, optuna.samplers.RandomSampler):
        for name in ("infer_relative_search_space", "sample_relative", "sample_independent", "before_trial", "after_trial"):
            if name in vars(cls):
                timers.wrap(cls, name, "sampler")
    timers.wrap(time, "sleep", "sleep")  # the trial's sleep and the budget loop's waits are not overhead
    for name in [n for n in vars(MlflowClient) if not n.startswith("_")]:
        if callable(vars(MlflowClient)[name]):
            timers.wrap(MlflowClient, name, "tracking")
    return timers


class SleepObjective:
    """``objective.Objective`` with training replaced by a sleep of ``seconds`` (in ``epochs`` steps).

    The trial does what a real one does to the services: samples the study's space, stores its seed and
    config, opens its MLflow run (nested under the study's run, its config as the description, params, dataset
    inputs, the trial link) through the uploader, reports each epoch to the pruner and logs its metrics (the
    params with the first batch, as ``tracking.runner.run_tracked`` does), then its final metrics and its end (a
    simulated trial keeps no model). Its value is a smooth function of the parameters.
    """

    def __init__(self, spec, client, parent_run_id: str, *, seconds: float, epochs: int, timers: Timers, worker: str, requests: str = "fewest"):
        from cicy_search import tracking

        self.spec, self.client, self.parent_run_id, self.requests = spec, client, parent_run_id, requests
        self.seconds, self.epochs, self.timers, self.worker = seconds, epochs, timers, worker
        self.uploader = tracking.uploader()
        self.records: list[dict] = []
        self._open: dict | None = None
        self._inputs: dict[str, list] = {}

    def inputs(self, config: dict) -> list:
        """The run's dataset inputs, as ``run_tracked`` logs them (the split made once per data section)."""
        key = json.dumps(config["data"], sort_keys=True)
        if key not in self._inputs:
            from cicy_search import data, tracking

            _, split = data.select(config["data"])
            index = {k: getattr(split, k) for k in ("train", "val", "test")}
            self._inputs[key] = tracking.dataset_inputs(config["data"], data.dataset_hash(config["data"]["dataset"]), index)
        return self._inputs[key]

    def close_record(self) -> None:
        """End the open record: time and calls since its trial started, less the sleep."""
        rec, self._open = self._open, None
        if rec is None:
            return
        wall = time.perf_counter() - rec.pop("t0")
        now = self.timers.snapshot()
        before = rec.pop("before")
        for key, value in now.items():
            if key.endswith("_calls"):
                rec[key] = value - before.get(key, 0)
            else:
                rec[f"{key}_ms"] = round((value - before.get(key, 0.0)) * 1000, 2)
        rec["overhead_ms"] = round(wall * 1000 - rec.pop("sleep_trial_ms", 0.0), 2)
        rec.pop("sleep_bg_ms", None)
        self.records.append(rec)

    def __call__(self, trial):
        import optuna

        from cicy_search.search import space
        from cicy_search import tracking
        from cicy_search.config import dump_yaml, flatten
        from cicy_search.search.objective import trial_seed

        self.close_record()
        self._open = {"number": trial.number, "t0": time.perf_counter(), "before": self.timers.snapshot(), "slept_s": 0.0}
        spec = self.spec
        seed = trial_seed(spec.seed, trial.number)
        values = space.sample(spec.params, trial, spec.base)
        config = spec.config_for(values, seed=seed, name=f"{spec.name}-{trial.number}")
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("config", config)
        settled = self.uploader.submit(lambda: None)
        tags = {"study": spec.name, "trial": str(trial.number), "sampler": spec.sampler["name"],
                "pruner": spec.pruner["name"], "worker": self.worker, "simulated": "sleep"}  # fmt: skip
        fewest, more = self.requests == "fewest", self.requests == "more"
        run = tracking.Run.start(self.client, spec.name, run_name=f"trial-{trial.number}",
                                 tags={**tags, **(tracking.config_note(config) if fewest else {})},
                                 parent_run_id=self.parent_run_id, uploader=self.uploader)  # fmt: skip
        run.log_params({**flatten(config), "trial.number": trial.number}, with_metrics=not more)
        run.log_inputs(self.inputs(config))
        linked = run.later(lambda: trial.set_user_attr("mlflow_run_id", run.run_id), "link")
        if not fewest:
            run.log_artifacts({"config.yaml": dump_yaml(config)})
        flush = tracking.FLUSH_SECONDS if fewest else EARLIER_FLUSH_SECONDS
        quality = self.quality(trial)
        prune = spec.pruner["name"] != "none" and len(spec.objectives) == 1
        value = 0.0
        for epoch in range(self.epochs):
            time.sleep(self.seconds / self.epochs)
            self._open["slept_s"] += self.seconds / self.epochs
            if epoch == 0:
                self.timers.wait(settled)
            value = quality * (1 - math.exp(-(epoch + 1) / 3))
            run.log_metrics({"epoch_loss": 1 - value, "epoch_accuracy": value, "epoch_val_loss": 1.1 - value,
                             "epoch_val_accuracy": value}, step=epoch, flush_after=flush)  # fmt: skip
            if prune:
                trial.report(value, epoch)
                if trial.should_prune():
                    self.timers.wait(linked)
                    run.end("KILLED", tags={"state": "pruned"})
                    raise optuna.TrialPruned()
        self.timers.wait(linked)
        run.log_metrics({"val_accuracy": value, "train_seconds": self.seconds, "epochs_run": self.epochs}, step=self.epochs, flush_after=math.inf)
        if more:  # the model summary every trial wrote, as its own upload
            run.log_artifacts({"model_summary.txt": f"simulated: {values}\n"})
        run.end("FINISHED", tags={"state": "complete"})
        return value if len(spec.objectives) == 1 else [value] * len(spec.objectives)

    @staticmethod
    def quality(trial) -> float:
        """Between 0.5 and 0.95, best at 30 % of every parameter's (log) range."""
        distance = 0.0
        for name, dist in trial.distributions.items():
            if hasattr(dist, "choices"):
                u = dist.choices.index(trial.params[name]) / max(1, len(dist.choices) - 1)
            else:
                lo, hi, x = dist.low, dist.high, trial.params[name]
                if getattr(dist, "log", False):
                    lo, hi, x = math.log(lo), math.log(hi), math.log(x)
                u = (x - lo) / (hi - lo) if hi > lo else 0.0
            distance += (u - 0.3) ** 2
        return 0.5 + 0.45 * math.exp(-distance)


def worker_main() -> None:
    """A pool worker: reads jobs (JSON lines) on stdin, runs each to its study's budget, answers one line each."""
    import dataclasses

    import optuna

    from cicy_search import tracking
    from cicy_search.search import study as studies
    from cicy_search.search.storage import open_storage
    from cicy_search.search.studyfile import load
    from cicy_search.tracking.summary import StudySummary

    answer = os.fdopen(os.dup(1), "w")  # the answers' channel: whatever libraries print goes to stderr instead
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    timers = install_timers()
    base = load(STUDY_FILE)
    storages: dict[str, object] = {}
    flush_seconds = tracking.FLUSH_SECONDS
    # A trial's record ends before the worker's last act (the study run's final summary write and end, once per
    # worker and job), so a job of few trials a worker does not count it as a trial's tracking.
    current: dict = {}
    finish = StudySummary.finish
    StudySummary.finish = lambda self, **kw: (current["objective"].close_record(), finish(self, **kw))[1]
    index = int(os.environ.get("CICY_WORKER_INDEX", "0"))
    print(json.dumps({"ready": True, "tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}), file=answer, flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        raw = {**base.raw, "study": job["study"], "pruner": job.get("pruner", base.raw.get("pruner"))}
        sampler = {**base.sampler, "n_recent_trials": RECENT}
        spec = dataclasses.replace(base, name=job["study"], raw=raw, pruner=job.get("pruner", base.pruner), sampler=sampler)
        # Before "fewest" the summary was written after each trial (coalesced only while a write was queued).
        tracking.FLUSH_SECONDS = flush_seconds if job.get("requests", "fewest") == "fewest" else 0.0
        # "more": MLflow reads back each run set_terminated ends, to print its address (tracking.client turns it off)
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "false" if job.get("requests", "fewest") == "more" else "true"
        ran, loaded, caught_up, objective, error = 0, 0.0, 0.0, None, None
        methods_before = timers.method_snapshot()
        try:
            key = f"{job['storage']} {job['tracking_uri']}"  # its lost trials' runs are closed on that server
            if key not in storages:
                storages[key] = open_storage(job["storage"], tracking_uri=job["tracking_uri"])
            t0 = time.time()
            study = optuna.load_study(study_name=job["study"], storage=storages[key])
            loaded = time.time() - t0
            # Trials this process has not seen yet (a new worker: the whole study; the growth rows: the copies just
            # added) are read once, then only unfinished and new ones: timed here, apart from the trials' own costs.
            t0 = time.time()
            study.get_trials(deepcopy=False)
            caught_up = time.time() - t0
            study.pruner = spec.pruner_object()  # as worker.join does
            client = tracking.client(job["tracking_uri"])
            worker = f"{socket.gethostname()}:{os.getpid()}"
            objective = SleepObjective(spec, client, study.user_attrs["mlflow_parent_run_id"], seconds=job["seconds"],
                                       epochs=job["epochs"], timers=timers, worker=worker, requests=job.get("requests", "fewest"))  # fmt: skip
            current["objective"] = objective
            work = studies.StudyRun(study, spec=spec, budget=int(study.user_attrs["budget"]), client=client, uploader=objective.uploader,
                                    worker=index, worker_id=worker, report=False)  # fmt: skip
            ran = studies.drive(work, objective)
        except Exception as e:  # reported to the bench
            error = f"{type(e).__name__}: {str(e)[:500]}"
        errors = []
        if objective is not None:
            objective.close_record()
            errors = objective.uploader.flush(120)
        methods = {k: [v[0] - methods_before.get(k, [0.0, 0])[0], v[1] - methods_before.get(k, [0.0, 0])[1]]
                   for k, v in timers.method_snapshot().items()}  # fmt: skip
        print(json.dumps({"ran": ran, "load_s": round(loaded, 3), "catch_up_s": round(caught_up, 3), "records": objective.records if objective else [], "error": error,
                          "tracking_errors": errors[:5], "tensorflow": "tensorflow" in sys.modules,
                          "methods": {k: v for k, v in methods.items() if v[1]}}), file=answer, flush=True)  # fmt: skip


class Pool:
    """``size`` worker processes started once (imports paid once); a job goes to the first ``n``."""

    def __init__(self, size: int, folder: Path):
        env = {**os.environ, "CICY_SEARCH_HOME": str(folder / "home"), "PYTHONUNBUFFERED": "1"}
        self.procs = []
        self.log = open(folder / "workers.log", "wb")
        for i in range(size):
            self.procs.append(subprocess.Popen([sys.executable, "-m", "bench.scale", "--worker"], cwd=ROOT, text=True,
                                               env={**env, "CICY_WORKER_INDEX": str(i)}, stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, stderr=self.log, start_new_session=True))  # fmt: skip
        hellos = [self._answer(p) for p in self.procs]
        self.tensorflow = any(h["tensorflow"] or h["keras"] for h in hellos)

    def _answer(self, proc) -> dict:
        line = proc.stdout.readline()
        if not line:
            self.log.flush()
            tail = Path(self.log.name).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"a worker exited with {proc.wait()}: {tail}")
        return json.loads(line)

    def run(self, job: dict, n: int) -> list[dict]:
        for p in self.procs[:n]:
            p.stdin.write(json.dumps(job) + "\n")
            p.stdin.flush()
        answers = [self._answer(p) for p in self.procs[:n]]
        if any(a["tensorflow"] for a in answers):
            raise RuntimeError("a simulated worker imported TensorFlow: the search and tracking path must not")
        return answers

    def close(self) -> None:
        """Idle workers exit when their stdin closes; busy ones (Ctrl-C mid-job) are killed after 10 s."""
        for p in self.procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop_process_group(p, signal.SIGKILL, 10)


# -------------------------------------------------------------------------------------------- measurements


class Bench:
    def __init__(self, pg: Postgres, tracking_uri: str, pool: Pool, peak: Peak, storage: str, meter: CpuMeter | None = None,
                 mlflow_db: str = "mlflow"):  # fmt: skip
        self.pg, self.tracking_uri, self.pool, self.peak, self.storage = pg, tracking_uri, pool, peak, storage
        self.meter, self.mlflow_db = meter, mlflow_db

    def create(self, name: str, budget: int, pruner: dict | None = None):
        import dataclasses

        from cicy_search.search import study as studies
        from cicy_search.search.studyfile import load

        base = load(STUDY_FILE)
        spec = dataclasses.replace(base, name=name, raw={**base.raw, "study": name}, pruner=pruner or base.pruner)
        return studies.create(spec, storage=self.storage, tracking_uri=self.tracking_uri, n_trials=budget)

    def job(self, study, workers: int, seconds: float, epochs: int, variant: str, pruner: dict | None = None) -> dict:
        import optuna

        from cicy_search import compat

        job = {"study": study.study_name, "storage": self.storage, "tracking_uri": self.tracking_uri, "seconds": seconds,
               "epochs": epochs, **VARIANTS[variant], **({"pruner": pruner} if pruner else {})}  # fmt: skip
        self.peak.take()
        cpu_before = self.meter.read() if self.meter else None
        start = time.time()
        answers = self.pool.run(job, workers)
        wall = time.time() - start
        cpu = self.meter.since(cpu_before) if self.meter else {}
        study = optuna.load_study(study_name=study.study_name, storage=compat.study_storage(study))
        trials = study.get_trials(deepcopy=False)
        states = [t.state.name for t in trials]
        records = sorted((r for a in answers for r in a["records"]), key=lambda r: r["number"])
        return {
            "workers": workers,
            "trial_s": seconds,
            "variant": variant,
            **VARIANTS[variant],
            "wall_s": round(wall, 2),
            "slept_s": round(sum(r["slept_s"] for r in records), 2),
            "finished": states.count("COMPLETE") + states.count("PRUNED"),
            "failed": states.count("FAIL"),
            "budget": int(study.user_attrs["budget"]),
            "peak_connections": self.peak.take(),
            "load_study_s_max": max(a["load_s"] for a in answers),
            "catch_up_s_max": max(a["catch_up_s"] for a in answers),
            "tracking_errors": [e for a in answers for e in a["tracking_errors"]][:5],
            "tensorflow_in_workers": any(a["tensorflow"] for a in answers),
            "worker_errors": [a["error"] for a in answers if a["error"]][:5],
            "profile": profile(answers, len(records)),
            "cpu_s": cpu,  # CPU seconds during the job: workers, mlflow server, PostgreSQL, this process, the machine
            "records": records,
        }


def profile(answers: list[dict], trials: int, top: int = 12) -> list[dict]:
    """Where the time outside the sleep went, per method (exclusive), over all workers: ms and calls per trial."""
    totals: dict[str, list] = {}
    for a in answers:
        for key, (seconds, calls) in a.get("methods", {}).items():
            if key.startswith("sleep "):
                continue
            entry = totals.setdefault(key, [0.0, 0])
            entry[0] += seconds
            entry[1] += calls
    rows = [{"method": k, "ms_per_trial": round(v[0] * 1000 / max(1, trials), 2), "calls_per_trial": round(v[1] / max(1, trials), 2)}
            for k, v in totals.items()]  # fmt: skip
    return sorted(rows, key=lambda r: -r["ms_per_trial"])[:top]


def summarise(records: list[dict]) -> dict:
    """Per-trial medians and means (milliseconds) of the overhead and its parts."""
    if not records:
        return {}
    def stats(values: list[float]) -> dict:
        values = sorted(values)
        return {"median": round(statistics.median(values), 2), "mean": round(statistics.fmean(values), 2),
                "p90": round(values[math.ceil(0.9 * len(values)) - 1], 2)}  # fmt: skip

    keys = sorted({k for r in records for k in r if k.endswith(("_ms", "_calls"))})
    out = {k.removesuffix("_ms"): stats([r.get(k, 0.0) for r in records]) for k in keys}
    out["sampler_per_suggestion"] = stats([r.get("sampler_trial_ms", 0.0) / N_PARAMS for r in records])
    return out


def throughput_row(result: dict) -> dict:
    row = {k: v for k, v in result.items() if k != "records"}
    ideal = result["workers"] * 60 / result["trial_s"]
    row["ideal_trials_per_min"] = round(ideal, 1)
    row["efficiency"] = round(result["slept_s"] / (result["workers"] * result["wall_s"]), 3)
    row["trials_per_min"] = round(len(result["records"]) / result["wall_s"] * 60, 1)
    row["overshoot"] = result["finished"] - result["budget"]
    row["per_trial"] = summarise(result["records"])
    if result.get("cpu_s"):
        # What one trial costs the machine in CPU, and the trials/min its cores could give if nothing else ran.
        trials = max(1, len(result["records"]))
        row["cpu_per_trial_s"] = {k: round(v / trials, 3) for k, v in result["cpu_s"].items() if not k.startswith("machine_")}
        total = sum(row["cpu_per_trial_s"].values())
        row["cpu_ceiling_trials_per_min"] = round((os.cpu_count() or 1) * 60 / total, 1) if total else None
    return row


COPIED_TABLES = {  # Optuna's RDB tables that hang off a trial, and their columns besides the key and trial_id
    "trial_params": "param_name, param_value, distribution_json",
    "trial_values": "objective, value, value_type",
    "trial_intermediate_values": "step, intermediate_value, intermediate_value_type",
    "trial_user_attributes": "key, value_json",
    "trial_system_attributes": "key, value_json",
}


def prefill(pg: Postgres, db: str | None, study, target: int) -> int:
    """Copy the study's own complete trials (every row a finished trial leaves) until it holds ``target`` trials.

    On PostgreSQL in SQL, in one transaction: ``Study.add_trial`` managed about 5 trials a second here, too slow for
    10,000. A journal file (``db`` None) gets them through ``Study.add_trials``: one appended record a trial.
    """
    import optuna

    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    missing = target - len(finished)
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    if missing <= 0 or not complete:
        return 0
    if db is None:
        study.add_trials([complete[i % len(complete)] for i in range(missing)])
        return missing
    conn = pg.connect(db)
    conn.autocommit = False
    with conn, conn.cursor() as cur:
        cur.execute("SELECT study_id FROM studies WHERE study_name = %s", (study.study_name,))
        study_id = cur.fetchone()[0]
        cur.execute("SELECT trial_id FROM trials WHERE study_id = %s AND state = 'COMPLETE' ORDER BY number", (study_id,))
        templates = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT coalesce(max(number), -1) FROM trials WHERE study_id = %s", (study_id,))
        last = cur.fetchone()[0]
        cur.execute("CREATE TEMP TABLE copies (n int, src int) ON COMMIT DROP")
        cur.execute("INSERT INTO copies SELECT g, (%s::int[])[1 + g %% %s] FROM generate_series(1, %s) g", (templates, len(templates), missing))
        cur.execute(
            "INSERT INTO trials (number, study_id, state, datetime_start, datetime_complete) "
            "SELECT %s + c.n, %s, t.state, t.datetime_start, t.datetime_complete FROM copies c JOIN trials t ON t.trial_id = c.src",
            (last, study_id),
        )
        cur.execute("ALTER TABLE copies ADD COLUMN new_id int")
        cur.execute("UPDATE copies c SET new_id = t.trial_id FROM trials t WHERE t.study_id = %s AND t.number = %s + c.n", (study_id, last))
        for table, columns in COPIED_TABLES.items():
            cur.execute(f"INSERT INTO {table} (trial_id, {columns}) SELECT c.new_id, {', '.join('x.' + c.strip() for c in columns.split(','))} "
                        f"FROM copies c JOIN {table} x ON x.trial_id = c.src")  # fmt: skip
    conn.close()
    return missing


def growth(benches: dict[str, Bench], sizes: list[int], workers: int, trials_each: int, seconds: float, epochs: int, variants: list[str], log) -> list[dict]:
    """One study per storage (``benches``: storage kind -> Bench), grown in step; at each size every variant runs on each."""
    import optuna

    studies = {kind: bench.create(f"grow_{secrets.token_hex(2)}", budget=1) for kind, bench in benches.items()}
    rows = []
    for turn, size in enumerate(sizes):
        copied, fill_s = {}, {}
        for kind, bench in benches.items():
            t0 = time.time()
            copied[kind] = prefill(bench.pg, _database(bench.storage), studies[kind], size)
            fill_s[kind] = time.time() - t0
        jobs = [(variant, kind) for variant in variants for kind in benches]
        for variant, kind in jobs if turn % 2 == 0 else jobs[::-1]:
            bench, study = benches[kind], studies[kind]
            finished = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)))
            study.set_user_attr("budget", finished + workers * trials_each)
            result = bench.job(study, workers, seconds, epochs, variant)
            journal, db = journal_path(bench.storage), _database(bench.storage)
            row = {k: v for k, v in result.items() if k != "records"}
            row.update(storage=kind, finished_before=finished, copied=copied[kind], fill_s=round(fill_s[kind], 1), per_trial=summarise(result["records"]),
                       db_bytes=journal.stat().st_size if journal else bench.pg.query(db, "SELECT pg_database_size(current_database())"),
                       mlflow_db_bytes=bench.pg.query(bench.mlflow_db, "SELECT pg_database_size(current_database())"),
                       efficiency=round(result["slept_s"] / (workers * result["wall_s"]), 3))  # fmt: skip
            rows.append(row)
            copied[kind] = 0
            p = row["per_trial"]
            log(f"grow {finished:>6} finished, {variant}, {kind}: overhead/trial median {p['overhead']['median']:.0f} ms "
                f"(storage {p.get('storage_trial', {}).get('median', 0):.0f}, sampler {p['sampler_per_suggestion']['median']:.1f}/suggestion, "
                f"tracking {p.get('tracking_trial', {}).get('median', 0):.0f} + "
                f"{p.get('upload_wait_trial', {}).get('median', 0):.0f} waiting for the uploader + "
                f"{p.get('tracking_bg', {}).get('median', 0):.0f} bg); {'journal' if journal else 'db'} {row['db_bytes'] / 1e6:.0f} MB; "
                f"a worker's first read of the study (load_study + the unseen trials) {row['load_study_s_max'] + row['catch_up_s_max']:.1f} s")
    return rows


def _database(storage: str) -> str | None:
    """The bench PostgreSQL's database name of a storage URL; None for a journal file."""
    return None if journal_path(storage) else storage.rpartition("/")[2]


def journal_path(storage: str) -> Path | None:
    from cicy_search.search.storage import is_journal

    return Path(storage.removeprefix("journal:")) if is_journal(storage) else None


def _median(row: dict, part: str) -> float:
    return row["per_trial"].get(part, {}).get("median", 0.0)


def figures(results: dict, path: Path) -> None:
    """The sweep as one offline HTML page (``reporting.html.Report``), its figures as plotly JSON and tables as CSV beside it."""
    import pandas as pd
    import plotly.graph_objects as go

    from cicy_search.reporting.html import Report

    report = Report("bench.scale: simulated workers on one PostgreSQL and one mlflow server",
                    intro=f"{results.get('cpu_count')} CPUs; load average {results.get('load_before')} before, "
                          f"{results.get('load_after')} after. Variants: {VARIANTS}.")  # fmt: skip
    rate, busy = go.Figure(), go.Figure()
    throughput = results.get("throughput", [])
    for (seconds, variant), rows in _groups(throughput).items():
        x = [r["workers"] for r in rows]
        rate.add_trace(go.Scatter(x=x, y=[r["trials_per_min"] for r in rows], name=f"{seconds:g} s, {variant}", mode="lines+markers"))
        busy.add_trace(go.Scatter(x=x, y=[r["efficiency"] for r in rows], name=f"{seconds:g} s, {variant}", mode="lines+markers"))
    for seconds in sorted({r["trial_s"] for r in throughput}):
        x = sorted({r["workers"] for r in throughput if r["trial_s"] == seconds})
        rate.add_trace(go.Scatter(x=x, y=[n * 60 / seconds for n in x], name=f"ideal {seconds:g} s", mode="lines", line={"dash": "dash"}))
    rate.update_layout(title="trials/min vs workers (dashed: ideal)", xaxis={"type": "log", "title": "workers"}, yaxis={"type": "log"})
    busy.update_layout(title="busy fraction (slept / workers x wall) vs workers", xaxis={"type": "log", "title": "workers"}, yaxis={"range": [0, 1]})
    columns = ["workers", "trial_s", "variant", "storage", "trials_per_min", "ideal_trials_per_min", "efficiency", "overshoot", "peak_connections"]
    table = pd.DataFrame([{**{c: r.get(c) for c in columns}, "overhead_ms": _median(r, "overhead"), "storage_ms": _median(r, "storage_trial"),
                           "sampler_ms": _median(r, "sampler_trial"),
                           "tracking_ms": _median(r, "tracking_trial"), "upload_wait_ms": _median(r, "upload_wait_trial"),
                           "tracking_bg_ms": _median(r, "tracking_bg")} for r in throughput])  # fmt: skip
    if throughput:
        report.add("Throughput", text="Medians per trial of the time outside the sleep (overhead) and its parts.", figures=[rate, busy], table=table)
    grown = results.get("growth", [])
    if grown:
        cost, size = go.Figure(), go.Figure()
        for variant in dict.fromkeys(_label(r) for r in grown):
            rows = sorted((r for r in grown if _label(r) == variant), key=lambda r: r["finished_before"])
            x = [r["finished_before"] for r in rows]
            for part in ("overhead", "storage_trial", "sampler_trial", "tracking_bg"):
                cost.add_trace(go.Scatter(x=x, y=[_median(r, part) for r in rows], name=f"{part}, {variant}", mode="lines+markers"))
            size.add_trace(go.Scatter(x=x, y=[r["db_bytes"] / 1e6 for r in rows], name=f"Optuna storage, {variant}", mode="lines+markers"))
        cost.update_layout(title="ms per trial (median) vs finished trials", xaxis={"title": "finished trials"})
        size.update_layout(title="database size (MB) vs finished trials", xaxis={"title": "finished trials"})
        table = pd.DataFrame([{"finished": r["finished_before"], "variant": _label(r), "overhead_ms": _median(r, "overhead"),
                               "storage_ms": _median(r, "storage_trial"), "storage_calls": _median(r, "storage_trial_calls"),
                               "sampler_ms_per_suggestion": r["per_trial"]["sampler_per_suggestion"]["median"],
                               "tracking_ms": _median(r, "tracking_trial"), "upload_wait_ms": _median(r, "upload_wait_trial"),
                               "tracking_bg_ms": _median(r, "tracking_bg"),
                               "db_mb": round(r["db_bytes"] / 1e6, 1)} for r in grown])  # fmt: skip
        report.add("Growth", text="One study grown by copying its own trials; a few workers run real trials at each size.",
                   figures=[cost, size], table=table)  # fmt: skip
    profiled = [r for r in throughput + grown if r.get("profile")]
    if profiled:
        rows = [{"job": f"{r['workers']} x {r['trial_s']:g} s" + (f", {r['finished_before']} finished" if "finished_before" in r else ""),
                 "variant": _label(r), **p} for r in profiled for p in r["profile"]]  # fmt: skip
        report.add("Where the time goes", text="Per method, exclusive, summed over the workers and divided by the trials "
                   "(trial: the trial's thread; bg: heartbeat and uploader threads).", table=pd.DataFrame(rows))  # fmt: skip
    report.save(path, png=False)


def _label(row: dict) -> str:
    """A job's variant, and its storage when not the default PostgreSQL."""
    return row["variant"] + (f", {row['storage']}" if row.get("storage", "postgresql") != "postgresql" else "")


def _groups(rows: list[dict]) -> dict:
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["trial_s"], _label(r)), []).append(r)
    return {k: sorted(v, key=lambda r: r["workers"]) for k, v in groups.items()}


def save(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a CI-sized check: 1 and 3 workers, 1 s trials, a 60-trial study")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=float, nargs="*", default=[1, 10, 60], help="trial lengths (60 s and more: the largest worker count only)")
    parser.add_argument("--trials-each", type=int, default=3, help="trials per worker in a throughput job (60 s trials: 2)")
    parser.add_argument("--grow", type=int, nargs="*", default=[0, 1000, 2500, 5000, 10000], help="study sizes the growth is measured at")
    parser.add_argument("--grow-workers", type=int, default=4, help="workers of the growth measurements (few: latency, not saturation)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["after"],
                        help="what each job is measured with (see VARIANTS): the product as it is ('after'); with a "
                             "trial's MLflow requests as before the last cuts ('few') or the ones before ('requests')")
    parser.add_argument("--storage", nargs="+", choices=list(STORAGES), default=["postgresql"],
                        help="the studies' Optuna storage: the bench's PostgreSQL, or a journal file in its folder (the "
                             "mlflow server stays on PostgreSQL); with both, every job runs on each in the same run")
    parser.add_argument("--max-connections", type=int, default=600, help="PostgreSQL's: the workers' (2-3 each on a "
                        "PostgreSQL study) and up to 80 per mlflow server worker (bench.cluster.SERVER_POOL)")
    parser.add_argument("--mlflow-workers", type=int, nargs="+", default=[4],
                        help="the mlflow server's workers; with several counts, one server each (its own database) and "
                             "every job on each in the same run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.seconds, args.trials_each, args.grow, args.grow_workers = [1, 3], [1], 2, [0, 60], 3
        args.mlflow_workers = sorted({min(n, 2) for n in args.mlflow_workers})

    def log(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {text}", flush=True)

    # Ctrl-C and SIGTERM both unwind through the ExitStack, which stops the workers, mlflow and PostgreSQL.
    signal.signal(signal.SIGTERM, _interrupt)
    import optuna

    from bench.cluster import start_mlflow
    from cicy_search.search.storage import with_driver

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict = {"cpu_count": os.cpu_count(), "load_before": os.getloadavg(), "args": {k: str(v) for k, v in vars(args).items()}}
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cicy-scale-")))
        log(f"PostgreSQL (max_connections {args.max_connections}) and mlflow server ({' and '.join(map(str, args.mlflow_workers))} workers) in {folder}")
        pg = Postgres(folder, args.max_connections)
        stack.callback(pg.stop)
        peak = Peak(pg)
        peak.start()
        stack.callback(peak.done.set)
        storages = {kind: pg.create("optuna") if kind == "postgresql" else f"journal:{folder / 'optuna.log'}" for kind in dict.fromkeys(args.storage)}
        servers = {}  # server workers -> (process, tracking URI, its database)
        for n in dict.fromkeys(args.mlflow_workers):
            db = "mlflow" if not servers else f"mlflow_{n}w"
            (folder / db).mkdir()
            servers[n] = (*start_mlflow(with_driver(pg.create(db)), folder / db, workers=n), db)
            stack.callback(stop_process_group, servers[n][0], signal.SIGTERM, 30)
        size = max(args.workers + [args.grow_workers])
        t0 = time.time()
        pool = Pool(size, folder)
        stack.callback(pool.close)
        results["pool"] = {"workers": size, "start_s": round(time.time() - t0, 1), "tensorflow_imported": pool.tensorflow}
        log(f"{size} workers ready in {time.time() - t0:.0f} s; TensorFlow imported by any: {pool.tensorflow}")
        benches = {}  # "storage" or, with several server sizes, "storage, N server workers" -> Bench
        for n, (server, tracking_uri, db) in servers.items():
            meter = CpuMeter({"workers": [p.pid for p in pool.procs], "mlflow_server": [server.pid], "postgres": [pg.proc.pid],
                              "bench": [os.getpid()]}, alone=("bench",))  # fmt: skip
            for kind, storage in storages.items():
                label = kind if len(servers) == 1 else f"{kind}, {n} server workers"
                benches[label] = Bench(pg, tracking_uri, pool, peak, storage, meter, mlflow_db=db)
        # Every worker's first trial pays one-off costs (connections, the MLflow experiment's lookup), and each server
        # worker's first requests theirs: not measured.
        for bench in {b.tracking_uri: b for b in benches.values()}.values():
            bench.job(bench.create(f"warmup_{secrets.token_hex(2)}", budget=size), size, 0.01, 1, "after", pruner={"name": "none"})
        log(f"warm-up done: every worker ran a trial on each of the {len(servers)} servers")
        results["throughput"] = []
        turn = 0
        for seconds in args.seconds:
            each = args.trials_each if seconds < 60 else min(2, args.trials_each)
            for n in args.workers if seconds < 60 else args.workers[-1:]:  # a minute a trial: the largest count only
                turn += 1
                jobs = [(variant, kind) for variant in args.variants for kind in benches]
                for variant, kind in jobs if turn % 2 else jobs[::-1]:  # the variants (and storages) alternate which goes first
                    study = benches[kind].create(f"tp_{n}w_{seconds:g}s_{variant}_{secrets.token_hex(2)}", budget=n * each)
                    row = {"storage": kind, **throughput_row(benches[kind].job(study, n, seconds, 4, variant, pruner={"name": "none"}))}
                    results["throughput"].append(row)
                    save(results, args.out)  # as it goes: an interrupted sweep keeps what it measured
                    log(f"{n:>3} workers x {seconds:g} s, {variant}, {kind}: {row['trials_per_min']:.1f} trials/min of "
                        f"{row['ideal_trials_per_min']:.0f} ideal, busy {row['efficiency']:.0%}, overhead/trial median "
                        f"{row['per_trial']['overhead']['median']:.0f} ms, "
                        f"overshoot {row['overshoot']}, peak connections {row['peak_connections']}"
                        + (f"; worker errors: {row['worker_errors']}" if row["worker_errors"] else ""))  # fmt: skip
                    log("  most time per trial: " + ", ".join(f"{p['method']} {p['ms_per_trial']:.0f} ms ({p['calls_per_trial']:g} calls)" for p in row["profile"][:5]))
                    log("  CPU per trial: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in row["cpu_per_trial_s"].items())
                        + f"; the {os.cpu_count()} cores' ceiling at that cost: {row['cpu_ceiling_trials_per_min']} trials/min; machine busy "
                        f"{row['cpu_s']['machine_busy']:.0f} CPU-s, stolen {row['cpu_s']['machine_steal']:.0f} s, in {row['wall_s']:.0f} s")  # fmt: skip
        results["growth"] = growth(benches, args.grow, args.grow_workers, 2, 1.0, 12, args.variants, log) if args.grow else []
        results["load_after"] = os.getloadavg()
    results["figure"] = str(args.out.with_suffix(".html").name)
    save(results, args.out)
    figures(results, args.out.with_suffix(".html"))
    log(f"written to {args.out} and {args.out.with_suffix('.html')}")
    return results


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker_main()
    else:
        try:
            main()
        except KeyboardInterrupt:
            sys.exit(130)
