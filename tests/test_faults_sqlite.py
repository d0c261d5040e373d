"""A SQLite store (Optuna's or MLflow's) with overwritten pages is refused with one line naming the file, before
anything writes to it: the file is byte for byte what it was."""

import contextlib
import hashlib
import os
import sqlite3

import optuna
import pytest

from cicy_search import tracking
from cicy_search.errors import CicyError
from cicy_search.search import storage as storages

from .conftest import run_cli, store_copy

# One worker makes this module's fixtures once (pytest-xdist --dist loadgroup).
pytestmark = pytest.mark.xdist_group("faults_sqlite")


def _clean_copy(source, target):
    """A copy without a write-ahead log (SQLite's backup), so that damage to the file is all there is."""
    store_copy(source, target)
    with contextlib.closing(sqlite3.connect(target)) as dst:
        dst.execute("PRAGMA journal_mode=DELETE")
    return target


@pytest.fixture(scope="module")
def optuna_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("optuna")
    url = f"sqlite:///{folder / 'live.db'}"
    study = optuna.create_study(study_name="s", storage=storages.open_storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=30)
    return _clean_copy(folder / "live.db", folder / "clean.db")


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    client = tracking.client(f"sqlite:///{folder / 'live.db'}")
    run = client.create_run(client.create_experiment("e"))
    client.log_batch(run.info.run_id, metrics=[], params=[], tags=[])
    return _clean_copy(folder / "live.db", folder / "clean.db")


def _page_size(path):
    return int.from_bytes(path.read_bytes()[16:18], "big")


def _overwrite(data: bytes, at: int, size: int, byte: int | None) -> bytes:
    junk = os.urandom(size) if byte is None else bytes([byte]) * size
    return data[:at] + junk + data[at + size :]


DAMAGES = {
    "header": lambda d, p: _overwrite(d, 0, 16, None),
    "page 2 header ff": lambda d, p: _overwrite(d, p, 12, 0xFF),
    "page 2 zeroed": lambda d, p: _overwrite(d, p, p, 0),
    "page 3 random": lambda d, p: _overwrite(d, 2 * p, p, None),
    "last page random": lambda d, p: _overwrite(d, len(d) - p, p, None),
    "cut to half": lambda d, p: d[: (len(d) // p // 2) * p],
}


def _damaged(clean, tmp_path, how):
    path = tmp_path / "store.db"
    path.write_bytes(DAMAGES[how](clean.read_bytes(), _page_size(clean)))
    return path


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.parametrize("how", list(DAMAGES))
def test_a_damaged_optuna_store_is_refused_before_anything_is_written(optuna_db, tmp_path, capsys, how):
    path = _damaged(optuna_db, tmp_path, how)
    before = _digest(tmp_path)
    assert run_cli("study", "status", "s", "--storage", f"sqlite:///{path}") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: a damaged SQLite database (") and err.endswith("nothing was written to it; restore it from a copy")
    assert "\n" not in err
    with pytest.raises(CicyError, match="a damaged SQLite database"):
        storages.open_storage(f"sqlite:///{path}")
    assert _digest(tmp_path) == before


@pytest.mark.parametrize("how", list(DAMAGES))
def test_a_damaged_mlflow_store_is_refused_before_anything_is_written(mlflow_db, tmp_path, capsys, how):
    path = _damaged(mlflow_db, tmp_path, how)
    before = _digest(tmp_path)
    assert run_cli("train", "dense", "--epochs", "1", "--tracking-uri", f"sqlite:///{path}") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: a damaged SQLite database (") and "\n" not in err, err
    assert _digest(tmp_path) == before


def test_intact_stores_open(optuna_db, mlflow_db, tmp_path):
    study = optuna.load_study(study_name="s", storage=storages.open_storage(f"sqlite:///{optuna_db}"))
    assert len(study.trials) == 30
    assert tracking.client(f"sqlite:///{mlflow_db}").search_experiments(filter_string="name = 'e'")


@pytest.mark.parametrize("open_elsewhere", [False, True])
def test_the_check_leaves_the_folder_of_a_wal_store_as_it_found_it(tmp_path, open_elsewhere):
    """A read-only connection to a WAL database makes its -wal and -shm files; the check removes the ones it made,
    and leaves those of a process that has the database open."""
    path = tmp_path / "wal.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
    db.close()
    other = sqlite3.connect(path) if open_elsewhere else None
    if other is not None:
        other.execute("SELECT * FROM t").fetchall()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert before == (["wal.db", "wal.db-shm", "wal.db-wal"] if open_elsewhere else ["wal.db"])
    tracking.check_sqlite(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if other is not None:
        assert other.execute("SELECT * FROM t").fetchall() == [(1,)]
        other.close()
