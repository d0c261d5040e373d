"""Storages: heartbeat settings, the lost-trial callback, the budget lock, the budget loop.

SQLite and journal files always; PostgreSQL when CICY_TEST_POSTGRES_URL names one (see .ci/run).
The budget loop is tested with a plain function as objective: no model, seconds per test.
"""

import threading
import time
import warnings

import optuna
import pytest

from cicy_search import storage as storages
from cicy_search import study as studies
from cicy_search import tracking
from cicy_search.errors import CicyError

from .services import Databases, postgres_or_skip

FAIL, COMPLETE, WAITING = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING


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


def test_heartbeat_settings_come_from_arguments_then_environment(monkeypatch):
    assert storages.heartbeat_settings() == (30, 90)
    monkeypatch.setenv("CICY_HEARTBEAT_INTERVAL", "2")
    monkeypatch.setenv("CICY_GRACE_PERIOD", "7")
    assert storages.heartbeat_settings() == (2, 7)
    assert storages.heartbeat_settings(5, 20) == (5, 20)
    with pytest.raises(CicyError, match="must be longer than the interval"):
        storages.heartbeat_settings(10, 10)
    monkeypatch.setenv("CICY_GRACE_PERIOD", "soon")
    with pytest.raises(CicyError, match="CICY_GRACE_PERIOD='soon': expected whole seconds"):
        storages.heartbeat_settings()


def test_storage_kinds_and_clear_errors(tmp_path):
    rdb = storages.open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=3, grace_period=9)
    assert (rdb.heartbeat_interval, rdb.grace_period) == (3, 9)
    assert isinstance(rdb.heartbeat_stale_trial_callback, storages.RetryStaleTrial)
    journal = storages.open_storage(f"journal:{tmp_path / 'o.log'}")
    assert isinstance(journal, optuna.storages.JournalStorage)
    assert storages.is_journal(f"{tmp_path}/x.log") and not storages.is_journal("sqlite:///x.db")
    with pytest.raises(CicyError, match="expected a database URL"):
        storages.open_storage("optuna.db")
    assert storages.with_driver("postgresql://u:p@h/db").startswith("postgresql+psycopg2://")
    assert storages.redact("postgresql://cicy:s3cret@db:5432/optuna") == "postgresql://cicy:***@db:5432/optuna"


def test_unreachable_postgresql_is_one_line_within_seconds():
    start = time.monotonic()
    with pytest.raises(CicyError) as e:
        storages.open_storage("postgresql://cicy:s3cret@127.0.0.1:9/optuna")
    message = str(e.value)
    assert message.startswith("Optuna storage postgresql://cicy:***@127.0.0.1:9/optuna is unreachable")
    assert "s3cret" not in message and "\n" not in message
    assert time.monotonic() - start < 15


def _dead_trial(study, run_id: str | None = None) -> optuna.trial.FrozenTrial:
    """A RUNNING trial that beat once and then stopped: what a worker killed mid-trial leaves."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = study.ask()
    trial.suggest_float("x", 0, 10)
    if run_id:
        trial.set_user_attr("mlflow_run_id", run_id)
    study._storage.record_heartbeat(trial._trial_id)
    return study._storage.get_trial(trial._trial_id)


def test_a_lost_trial_is_failed_retried_with_its_params_and_its_run_closed(rdb_url, tracking_uri, mlflow_client):
    storage = storages.open_storage(rdb_url, heartbeat_interval=1, grace_period=2, tracking_uri=tracking_uri)
    study = optuna.create_study(study_name="lost", storage=storage)
    run = tracking.Run.start(mlflow_client, "lost-trials", run_name="trial-0")
    dead = _dead_trial(study, run.run_id)
    time.sleep(3.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [FAIL, WAITING]
    retry = trials[1]
    assert retry.params == dead.params and retry.user_attrs == {"retry_of": 0}
    assert retry.system_attrs["failed_trial"] == 0
    closed = mlflow_client.get_run(run.run_id)
    assert closed.info.status == "FAILED" and closed.data.tags["failure_reason"] == storages.LOST
    assert studies.trials_table(study)[0]["fail_reason"] == storages.LOST
    # Noticing it again changes nothing: the trial is failed once and retried once.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    assert len(study.get_trials(deepcopy=False)) == 2


@pytest.mark.timeout(60)  # a lock that is never freed would block forever
def test_the_budget_lock_excludes_a_second_holder_and_dies_with_its_holder(rdb_url):
    first, second = storages.BudgetLock(rdb_url, "s"), storages.BudgetLock(rdb_url, "s")
    assert first.kind in ("sqlite", "postgresql")
    got = threading.Event()

    def take():
        second.acquire()
        got.set()

    first.acquire()
    waiter = threading.Thread(target=take)
    waiter.start()
    assert not got.wait(1.0)  # blocked while the first holds it
    first.release()
    first.release()  # idempotent
    assert got.wait(10)
    waiter.join()
    # A holder that disappears without unlocking (connection or file closed) frees the lock.
    if second.kind == "postgresql":
        second._held.invalidate()
        second._held = None
    else:
        second.release()
    first.acquire()
    first.close()
    second.close()


@pytest.mark.timeout(120)
def test_the_budget_loop_waits_for_a_lost_trial_and_runs_its_retry(tmp_path):
    storage = storages.open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="loop", storage=storage)
    dead = _dead_trial(study)
    seen, waits = [], []
    # The "dead" trial's worker keeps beating until the loop is waiting on it, then dies: however slow this
    # machine, the loop first runs trial 1 while the dead one still holds its place, then has to wait.
    died = threading.Event()

    def beat():
        while not died.wait(0.2):
            storage.record_heartbeat(dead._trial_id)

    beating = threading.Thread(target=beat)
    beating.start()

    def on_wait(c):
        waits.append(c)
        died.set()

    def objective(trial):
        seen.append((trial.number, trial.user_attrs.get("retry_of")))
        return trial.suggest_float("x", 0, 10)

    lock = storages.BudgetLock(f"sqlite:///{tmp_path / 'o.db'}", "loop")
    try:
        ran = studies.optimize_to_budget(study, objective, budget=2, lock=lock, poll=0.2, on_wait=on_wait, worker_id="here:1")
    finally:
        died.set()
        beating.join()
        lock.close()
    trials = study.get_trials(deepcopy=False)
    # Trial 1 takes the free place; then the lost trial holds the other until the heartbeat fails
    # it, and its retry (trial 2, same x) takes that place: exactly the budget, nothing extra.
    assert ran == 2 and [t.state for t in trials] == [FAIL, COMPLETE, COMPLETE]
    assert seen == [(1, None), (2, 0)]
    assert trials[2].params == dead.params and trials[2].user_attrs["worker"] == "here:1"
    assert len(waits) == 1 and (waits[0].finished, waits[0].running) == (1, 1)


def test_the_budget_loop_stops_at_the_budget_and_at_its_own_share(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="share", storage=storages.open_storage(url))
    lock = storages.BudgetLock(url, "share")
    assert studies.optimize_to_budget(study, lambda t: t.suggest_float("x", 0, 1), budget=5, lock=lock, n_trials=2) == 2
    assert studies.optimize_to_budget(study, lambda t: t.suggest_float("x", 0, 1), budget=5, lock=lock) == 3
    assert studies.optimize_to_budget(study, lambda t: t.suggest_float("x", 0, 1), budget=5, lock=lock) == 0

    def broken(trial):
        raise ValueError("no")

    assert studies.optimize_to_budget(study, broken, budget=6, lock=lock, max_failures=2) == 3
    lock.close()
    assert studies.count_finished(study) == 5


def test_the_budget_check_counts_the_trials_in_one_statement(rdb_url, tmp_path):
    """Finished, running and waiting trials counted by the database (one statement), as reading them all would."""
    import sqlalchemy

    study = optuna.create_study(study_name="count", storage=storages.open_storage(rdb_url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    pruned, failed, running = study.ask(), study.ask(), study.ask()
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    study.tell(failed, state=FAIL)
    running.set_user_attr("config", {"big": list(range(100))})
    study.enqueue_trial({"x": 0.5})
    engine = study._storage._backend.engine
    statements: list[str] = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731 (before_cursor_execute: conn, cursor, statement, ...)
    sqlalchemy.event.listen(engine, "before_cursor_execute", listen)
    try:
        c = studies.counts(study)
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", listen)
    assert (c.finished, c.running, c.waiting) == (4, 1, 1)
    assert len(statements) == 1 and "count" in statements[0].lower()
    assert studies.count_finished(study) == 4
    journal = optuna.create_study(storage=storages.open_storage(f"journal:{tmp_path / 'o.log'}"))
    journal.ask()
    assert storages.count_states(journal) is None and studies.counts(journal).running == 1  # read from the trials


def test_journal_storage_has_no_heartbeat_so_running_trials_do_not_hold_the_budget(tmp_path):
    url = f"journal:{tmp_path / 'o.log'}"
    study = optuna.create_study(study_name="journal", storage=storages.open_storage(url))
    study.ask()  # a trial left RUNNING by a dead worker: nothing will ever fail it
    ran = studies.optimize_to_budget(
        study, lambda t: t.suggest_float("x", 0, 1), budget=2, lock=storages.BudgetLock(url, "journal"), heartbeat=False
    )
    assert ran == 2 and studies.count_finished(study) == 2


@pytest.mark.parametrize(
    "url, message",
    [
        ("foo", "storage 'foo': expected a database URL"),
        ("optuna.db", "expected a database URL"),
        ("sqlite:///{tmp}/missing/o.db", "folder {tmp}/missing does not exist"),
        ("sqlite:///{tmp}", "is a folder"),
        ("journal:{tmp}/missing/o.log", "folder {tmp}/missing does not exist"),
        ("{tmp}/missing/o.log", "folder {tmp}/missing does not exist"),
    ],
)
def test_urls_that_cannot_work_are_refused_before_anything_is_created(tmp_path, url, message):
    with pytest.raises(CicyError) as e:
        storages.check_url(url.replace("{tmp}", str(tmp_path)))
    assert message.replace("{tmp}", str(tmp_path)) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CicyError):
        storages.open_storage(url.replace("{tmp}", str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "reasons, gives_up, ran",
    [
        (["out of memory"] * 6, True, 3),  # the same error three times in a row, nothing finished: give up
        (["a", "b", "b", "b", "b"], True, 4),
        ([None, None, None, None], True, 3),  # no reason recorded is one reason too
        (["a", "b", "a", "b", "a", "b", "a"], False, 5),  # never three alike: max_failures (4) stops it
        (["ok", "boom", "boom", "boom", "boom", "boom"], False, 5),  # a trial finished: not every trial fails
    ],
)
def test_the_budget_loop_gives_up_when_every_trial_fails_the_same_way(tmp_path, reasons, gives_up, ran):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="fails", storage=storages.open_storage(url))
    calls = []

    def objective(trial):
        reason = reasons[len(calls)]
        calls.append(reason)
        x = trial.suggest_float("x", 0, 1)
        if reason == "ok":
            return x
        if reason is not None:
            trial.set_user_attr("fail_reason", reason)
        raise RuntimeError(reason or "?")

    lock = storages.BudgetLock(url, "fails")
    try:
        if gives_up:
            with pytest.raises(CicyError) as e:
                studies.optimize_to_budget(study, objective, budget=10, lock=lock, max_failures=4, give_up_after=3)
            reason = reasons[ran - 1] or "no reason recorded"
            assert str(e.value) == (
                f"study 'fails': the last 3 trials all failed with the same error and none finished, so the study stops: {reason}"
            )
        else:
            assert studies.optimize_to_budget(study, objective, budget=10, lock=lock, max_failures=4, give_up_after=3, n_trials=ran) == ran
        assert len(calls) == ran
    finally:
        lock.close()


@pytest.mark.timeout(120)
def test_without_a_lock_concurrent_workers_meet_the_budget_and_overshoot_by_at_most_one_each(rdb_url):
    """``drive``'s rule (no lock): each worker checks finished + running < budget on its own."""
    optuna.create_study(study_name="free", storage=storages.open_storage(rdb_url))
    ran, errors = [], []

    def worker():
        try:
            study = optuna.load_study(study_name="free", storage=storages.open_storage(rdb_url))
            ran.append(studies.optimize_to_budget(study, lambda t: (time.sleep(0.05), t.suggest_float("x", 0, 1))[1], budget=12))
        except Exception as e:  # pragma: no cover - shown by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    study = optuna.load_study(study_name="free", storage=storages.open_storage(rdb_url))
    assert not errors and len(ran) == 3 and sum(ran) == len(study.trials)
    assert 12 <= studies.count_finished(study) <= 12 + 2 and all(t.state == COMPLETE for t in study.trials)
