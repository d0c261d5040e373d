import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# The MLflow servers the tests start (tests/services.py, bench/) inherit this: without it each one also starts
# MLflow's job runner, about eight processes that each import mlflow, for jobs no test submits.
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _share_the_cores() -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``) every worker is a process with its own TensorFlow,
    whose pools would each take every core: each worker gets its share instead, for its own training and
    for the processes its tests start (they inherit the environment). Set before TensorFlow is imported."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = _cores()
        for env in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            os.environ.setdefault(env, str(max(1, cores // workers)))


_share_the_cores()

import pytest  # noqa: E402

from .services import Databases, postgres_or_skip  # noqa: E402


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker more than the cores (pyproject caps it at 4). Many tests wait (for a grace period, a
    server, a signalled process) rather than compute: the extra worker fills those waits (docs/performance.md, "The
    test suite", compares 2, 3 and 4 workers on 2 cores)."""
    return _cores() + 1


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks to schedule
def pytest_collection_modifyitems(items):
    """Tests marked slow start first, so that under pytest-xdist no worker is left with a long test at the end
    while the others have finished. Tests marked waits (they mostly sleep through a grace period or a heartbeat)
    are spread evenly among the slow ones: run one after another (at the end, where the fast tests are), they had
    two workers of three waiting at once and the cores idle. The order within each kind is kept."""
    slow, waits = (lambda item: item.get_closest_marker("slow") is not None), (lambda item: item.get_closest_marker("waits") is not None)
    first = spread([i for i in items if slow(i) or waits(i)], waits)
    items[:] = first + [i for i in items if not (slow(i) or waits(i))]


def spread(items: list, picked) -> list:
    """``items`` with those ``picked`` moved to evenly spaced places among the others, each kind in its order."""
    chosen, others = [i for i in items if picked(i)], [i for i in items if not picked(i)]
    out = list(others)
    for k, item in enumerate(chosen):  # the k-th chosen goes after (k + 1/2) / len(chosen) of the others
        out.insert(round((k + 0.5) * len(others) / len(chosen)) + k, item)
    return out


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory):
    """A real SQLite MLflow store with its tables and nothing else: creating a store runs MLflow's migrations
    (seconds), a copy of this one (``store_copy``) is ready at once."""
    from cicy_search import tracking

    path = tmp_path_factory.mktemp("mlflow-empty") / "mlflow.db"
    tracking.client(f"sqlite:///{path}").search_experiments()
    return path


def store_copy(database, to) -> str:
    """A copy of the SQLite database file ``database`` (with what its write-ahead log holds) at ``to``: its URI."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(database)) as source, contextlib.closing(sqlite3.connect(to)) as copy:
        source.backup(copy)
    return f"sqlite:///{to}"


@pytest.fixture(scope="session")
def tracking_uri(empty_mlflow_db, tmp_path_factory):
    """One real SQLite MLflow store for the session."""
    return store_copy(empty_mlflow_db, tmp_path_factory.mktemp("mlflow") / "mlflow.db")


@pytest.fixture(scope="session")
def mlflow_client(tracking_uri):
    from cicy_search import tracking

    return tracking.client(tracking_uri)


@pytest.fixture(autouse=True)
def _local_home(tmp_path, monkeypatch):
    """Keep every test's default local store out of the working tree."""
    monkeypatch.setenv("CICY_SEARCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CICY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def tiny(family="dense", limit=600, epochs=1, **model):
    """A resolved config that trains in a second or two on a slice of the real data."""
    from cicy_search.config import resolve

    return resolve(
        {
            "name": f"tiny-{family}",
            "data": {"limit": limit},
            "model": {"family": family, **model},
            "train": {} if family == "svm" else {"epochs": epochs, "batch_size": 32},
        }
    )


# A study file's body (all but its name) whose trials train in a second or two.
TINY_STUDY = {
    "base": "dense",
    "data": {"limit": 400},
    "train": {"epochs": 2},
    "space": {
        "model.depth": {"type": "int", "low": 1, "high": 3},
        "model.width": {"type": "int", "low": 8, "high": 32, "log": True, "per": "model.depth"},
        "train.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
    "sampler": {"name": "random", "seed": 1},
    "budget": {"n_trials": 3},
}


def study_spec(name, **changes):
    """The parsed study file ``TINY_STUDY`` named ``name``, with ``changes`` replacing whole top-level keys."""
    from cicy_search.search import studyfile

    return studyfile.parse({"study": name, **TINY_STUDY, **changes})


def run_cli(*args):
    """Run the CLI in-process; returns (exit code, captured stdout+stderr is read with capsys)."""
    from cicy_search.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium for render checks: skipped (visibly) without it, a failure when CI=true."""
    from cicy_search.reporting import browser

    path = browser.find()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no Chromium: .ci/run must apt-get install chromium")
        pytest.skip("no headless Chromium (apt-get install chromium): report render checks skipped")
    return path


@pytest.fixture(scope="module")
def postgres():
    dbs = Databases(postgres_or_skip())
    yield dbs
    dbs.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def rdb_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return request.getfixturevalue("postgres").new("cicy_storage")


@pytest.fixture(params=["sqlite", "journal", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage_url(request, tmp_path):
    """Every kind of storage ``storage.open_storage`` gives a heartbeat: SQLite, a journal file, PostgreSQL."""
    if request.param == "journal":
        return f"journal:{tmp_path / 'optuna.log'}"
    return request.getfixturevalue("postgres").new("cicy_storage") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'optuna.db'}"


def dead_trial(study, run_id: str | None = None, config: dict | None = None):
    """A RUNNING trial (a FrozenTrial) that beat once and then stopped: what a worker killed mid-trial leaves."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = study.ask()
    trial.suggest_float("x", 0, 10)
    if config is not None:
        trial.set_user_attr("config", config)
    if run_id:
        trial.set_user_attr("mlflow_run_id", run_id)
    study._storage.record_heartbeat(trial._trial_id)
    return study._storage.get_trial(trial._trial_id)
