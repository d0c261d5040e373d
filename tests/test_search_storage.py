"""Storages: heartbeat settings, the lost-trial callback, the budget lock, URLs that cannot work.

SQLite and journal files always; PostgreSQL when CICY_TEST_POSTGRES_URL names one (see .ci/run).
"""

import threading
import time
import warnings

import optuna
import pytest

from cicy_search.search import storage as storages
from cicy_search.search import study as studies
from cicy_search import compat, tracking
from cicy_search.errors import CicyError

from .conftest import dead_trial

FAIL, COMPLETE, WAITING = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING


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
    journal = storages.open_storage(f"journal:{tmp_path / 'o.log'}", heartbeat_interval=4, grace_period=11)
    assert isinstance(journal, optuna.storages.JournalStorage) and (journal.heartbeat_interval, journal.grace_period) == (4, 11)
    assert isinstance(journal.heartbeat_stale_trial_callback, storages.RetryStaleTrial) and compat.heartbeat_enabled(journal)
    assert type(storages.open_storage(f"journal:{tmp_path / 'p.log'}")) is type(journal)  # one class, however often opened
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


# What the lost trial's run had been given: nothing (a run gets its params with its first metric batch, so a trial
# may be lost before), some of its params, all of them.
WRITTEN = {"no-params": {}, "some": {"seed": 7}, "all": {"seed": 7, "model.depth": 3}}


@pytest.mark.waits
def test_a_lost_trial_is_failed_retried_with_its_params_and_its_run_closed(storage_url, tracking_uri, mlflow_client):
    storage = storages.open_storage(storage_url, heartbeat_interval=1, grace_period=2, tracking_uri=tracking_uri)
    lost = {}  # one study a case, so that one wait serves them all
    for case, written in WRITTEN.items():
        study = optuna.create_study(study_name=f"lost-{case}", storage=storage)
        run = tracking.Run.start(mlflow_client, "lost-trials", run_name="trial-0")
        run.log_params(written)
        dead = dead_trial(study, run.run_id, config={"seed": 7, "model": {"depth": 3}})  # no data section: no split sizes
        lost[case] = study, run, dead
    time.sleep(3.5)  # past the 2 s grace period since each one's one beat (SQLite stores its time in whole seconds)
    for case, (study, run, dead) in lost.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        assert [t.state for t in trials] == [FAIL, WAITING], case
        retry = trials[1]
        assert retry.params == dead.params and retry.user_attrs == {"retry_of": 0}, case
        assert retry.system_attrs["failed_trial"] == 0, case
        closed = mlflow_client.get_run(run.run_id)
        assert closed.info.status == "FAILED" and closed.data.tags["failure_reason"] == storages.LOST, case
        assert closed.data.params == {"seed": "7", "model.depth": "3", "trial.number": "0"}, case  # what it trained, from the trial
        assert studies.trials_table(study)[0]["fail_reason"] == storages.LOST, case
        # Noticing it again changes nothing, in this process or another's view of the storage: failed once, retried once.
        other = optuna.load_study(study_name=study.study_name, storage=storages.open_storage(storage_url, heartbeat_interval=1, grace_period=2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
            optuna.storages.fail_stale_trials(other)
        assert len(study.get_trials(deepcopy=False)) == 2 and len(other.get_trials(deepcopy=False)) == 2, case


@pytest.mark.parametrize("data_section", [{"limit": 200}, {"limit": 500, "train": 0.5, "val": 0.3, "test": 0.2}, {"stratify": True}])
def test_a_lost_runs_params_include_the_split_sizes_a_finished_run_has(tmp_path, tracking_uri, mlflow_client, data_section):
    from cicy_search.config import flatten, resolve
    from cicy_search.training import prepare

    config = resolve({"data": data_section})
    prepared = prepare(config)
    expected = {f"data.n_{k}": str(len(prepared.x[k])) for k in ("train", "val", "test")}  # what run_tracked logs
    study = optuna.create_study(study_name="sizes", storage=storages.open_storage(f"sqlite:///{tmp_path / 'o.db'}"))
    run = tracking.Run.start(mlflow_client, "lost-sizes", run_name="trial-0")
    dead = dead_trial(study, run.run_id, config=config)
    assert storages.close_lost_run(tracking_uri, run.run_id, dead)
    params = mlflow_client.get_run(run.run_id).data.params
    assert {k: params[k] for k in expected} == expected
    assert set(params) == {*flatten(config), *expected, "trial.number"}


@pytest.mark.waits
@pytest.mark.parametrize("beats", [0, 1, 3])
def test_a_journal_trial_is_stale_only_after_the_grace_period_since_its_last_beat(tmp_path, beats):
    """A journal file's heartbeat (``HeartbeatJournalStorage``): the last beat, or the start before the first,
    is what ages; a beat after the trial ended is ignored; two workers failing one trial at once fail it once."""
    url = f"journal:{tmp_path / 'o.log'}"
    storage = storages.open_storage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="beats", storage=storage)
    trial = study.ask()
    study_id = storage.get_study_id_from_name("beats")
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    for _ in range(beats):
        time.sleep(0.7)
        storage.record_heartbeat(trial_id)
    time.sleep(1.2)
    assert storage.stale_trial_ids(study_id) == []  # 1.2 s since its last sign of life
    time.sleep(1.2)
    assert storage.stale_trial_ids(study_id) == [trial_id]
    other = storages.open_storage(url, heartbeat_interval=1, grace_period=2)
    both = [optuna.load_study(study_name="beats", storage=s) for s in (storage, other)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        threads = [threading.Thread(target=optuna.storages.fail_stale_trials, args=(s,)) for s in both]
        [t.start() for t in threads]
        [t.join() for t in threads]
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [FAIL, WAITING] and trials[1].user_attrs == {"retry_of": 0}
    storage.record_heartbeat(trial_id)  # the heartbeat thread's last beat, after the trial was failed: ignored
    assert storage.stale_trial_ids(study_id) == []
    assert (storages.HEARTBEAT_ATTR in storage.get_trial(trial_id).system_attrs) == (beats > 0)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask and tell, not optimize: no heartbeat thread wanted
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_journals_index_answers_as_optunas_journal_does(tmp_path, seed):
    """``FinishedIndex``: two workers' storages on one journal file, against Optuna's own ``JournalStorage`` reading the
    same file, after each of 150 random steps (trials started, enqueued, finished in any order in every state, two
    studies; the second worker now and then opened afresh, its index built from a study under way): the same trials
    in the same order for every set of states asked, and the same counts per state."""
    import random
    from collections import Counter

    from optuna.storages.journal import JournalFileBackend

    S = optuna.trial.TrialState
    rng = random.Random(seed)
    path = tmp_path / "o.log"
    workers = [storages.open_storage(f"journal:{path}") for _ in range(2)]
    reference = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    names = ["a", "b"]
    for name in names:
        optuna.create_study(study_name=name, storage=workers[0])
    asked = []  # (study, trial) of the trials started and not yet finished
    queries = [None, (S.COMPLETE,), (S.RUNNING,), (S.WAITING,), (S.COMPLETE, S.PRUNED), [S.FAIL, S.PRUNED, S.COMPLETE]]

    def seen(trials):
        return [(t.number, t.state, t.values, t.params, t.user_attrs, t.intermediate_values) for t in trials]

    for step in range(150):
        if rng.random() < 0.1:
            workers[1] = storages.open_storage(f"journal:{path}")
        storage = rng.choice(workers)
        study = optuna.load_study(study_name=rng.choice(names), storage=storage)
        roll = rng.random()
        if roll < 0.1:
            study.enqueue_trial({"x": rng.random()})
        elif roll < 0.45 or not asked:
            trial = study.ask()
            trial.suggest_float("x", 0, 1)
            trial.report(rng.random(), 0)
            asked.append((study, trial))
        else:
            owner, trial = asked.pop(rng.randrange(len(asked)))  # any running trial, not only the oldest
            state = rng.choice([S.COMPLETE, S.COMPLETE, S.PRUNED, S.FAIL])
            owner.tell(trial, rng.random() if state == S.COMPLETE else None, state=state)
        study_ids = {name: reference.get_study_id_from_name(name) for name in names}
        for name in names:
            expected_all = reference.get_all_trials(study_ids[name], deepcopy=False)
            for worker in workers:
                assert worker.count_states(study_ids[name]) == Counter(t.state for t in expected_all), (step, name)
                for states in queries:
                    expected = seen(reference.get_all_trials(study_ids[name], deepcopy=False, states=states))
                    assert seen(worker.get_all_trials(study_ids[name], deepcopy=False, states=states)) == expected, (step, name, states)
                assert seen(worker.get_all_trials(study_ids[name], states=(S.COMPLETE,))) == seen(
                    reference.get_all_trials(study_ids[name], states=(S.COMPLETE,)))
    finished = [t for w in workers for i in study_ids.values() for t in w.get_all_trials(i, deepcopy=False) if t.state.is_finished()]
    assert len(finished) > 60 and {t.state for t in finished} == {S.COMPLETE, S.PRUNED, S.FAIL}


@pytest.mark.waits
@pytest.mark.timeout(60)  # a lock that is never freed would block forever
def test_the_study_lock_excludes_a_second_holder_and_dies_with_its_holder(rdb_url):
    first, second = storages.StudyLock(rdb_url, "s"), storages.StudyLock(rdb_url, "s")
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
