"""The budget loop (``search.budget``), with a plain function as objective: no model, seconds per test.

SQLite and journal files always; PostgreSQL when CICY_TEST_POSTGRES_URL names one (see .ci/run).
"""

import os
import signal
import threading
import time

import optuna
import pytest

from cicy_search import tracking
from cicy_search.search import storage as storages
from cicy_search.search.budget import Share, count_finished, counts, optimize_to_budget
from cicy_search.errors import CicyError

from .conftest import dead_trial

FAIL, COMPLETE, RUNNING = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING


@pytest.mark.waits
@pytest.mark.timeout(120)
@pytest.mark.parametrize("url", ["sqlite:///{tmp}/o.db", "journal:{tmp}/o.log"], ids=["sqlite", "journal"])
def test_the_budget_loop_waits_for_a_lost_trial_and_runs_its_retry(tmp_path, url):
    url = url.format(tmp=tmp_path)
    storage = storages.open_storage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="loop", storage=storage)
    dead = dead_trial(study)
    seen, waits = [], []
    # The "dead" trial's worker keeps beating until the loop is waiting on it, then dies: however slow this
    # machine, the loop first runs trial 1 while the dead one still holds its place, then has to wait.
    died = threading.Event()

    def beat():
        while not died.wait(0.2):
            storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("loop"), dead.number))

    beating = threading.Thread(target=beat)
    beating.start()

    def on_wait(c):
        waits.append(c)
        died.set()

    def objective(trial):
        seen.append((trial.number, trial.user_attrs.get("retry_of")))
        return trial.suggest_float("x", 0, 10)

    try:
        ran = optimize_to_budget(Share(study, budget=2, worker_id="here:1"), objective, poll=0.2, on_wait=on_wait)
    finally:
        died.set()
        beating.join()
    trials = study.get_trials(deepcopy=False)
    # Trial 1 takes the free place; then the lost trial holds the other until the heartbeat fails
    # it, and its retry (trial 2, same x) takes that place: exactly the budget, nothing extra.
    assert ran == 2 and [t.state for t in trials] == [FAIL, COMPLETE, COMPLETE]
    assert seen == [(1, None), (2, 0)]
    assert trials[2].params == dead.params and trials[2].user_attrs["worker"] == "here:1"
    assert len(waits) == 1 and (waits[0].finished, waits[0].running) == (1, 1)


@pytest.mark.waits
@pytest.mark.timeout(120)
@pytest.mark.parametrize("url", ["sqlite:///{tmp}/o.db", "journal:{tmp}/o.log"], ids=["sqlite", "journal"])
@pytest.mark.parametrize("lost", [True, False], ids=["lost", "alive"])
def test_a_trial_running_when_the_budget_is_met_is_waited_for_and_retried_if_lost(tmp_path, url, lost):
    """Workers that checked the budget at the same moment can meet it with an extra trial while another trial
    is still running. A worker waits for that trial before it leaves: a live one finishes, a lost one is failed
    after the grace period and its retry runs, instead of the study keeping a RUNNING trial for good."""
    url = url.format(tmp=tmp_path)
    storage = storages.open_storage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="met", storage=storage)
    running = dead_trial(study)
    study.optimize(lambda t: t.suggest_float("x", 0, 10), n_trials=2)  # the budget (2) is met beside it
    waits, seen = [], []
    done = threading.Event()

    def live():  # its worker beats on, then finishes the trial
        for _ in range(8):
            storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("met"), running.number))
            time.sleep(0.25)
        study.tell(running.number, 1.0)
        done.set()

    worker = threading.Thread(target=live)
    if not lost:
        worker.start()

    def objective(trial):
        seen.append((trial.number, trial.user_attrs.get("retry_of")))
        return trial.suggest_float("x", 0, 10)

    ran = optimize_to_budget(Share(study, budget=2, worker_id="here:1"), objective, poll=0.2, on_wait=waits.append)
    if not lost:
        worker.join()
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert len(waits) == 1 and (waits[0].finished, waits[0].running) == (2, 1)
    if lost:  # failed once its heartbeat was 2 s old, and retried with its params: a third finished trial
        assert ran == 1 and seen == [(3, 0)] and states == [FAIL, COMPLETE, COMPLETE, COMPLETE]
        assert study.trials[3].params == running.params
        assert (study.trials[0].datetime_complete - running.datetime_start).total_seconds() >= 2  # not before its grace
    else:  # it finished in its own worker: nothing failed, nothing more ran, and the loop left once it had
        assert ran == 0 and seen == [] and states == [COMPLETE] * 3 and done.is_set()


def test_the_budget_loop_stops_at_the_budget_and_at_its_own_share(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="share", storage=storages.open_storage(url))
    assert optimize_to_budget(Share(study, budget=5, n_trials=2), lambda t: t.suggest_float("x", 0, 1)) == 2
    assert optimize_to_budget(Share(study, budget=5), lambda t: t.suggest_float("x", 0, 1)) == 3
    assert optimize_to_budget(Share(study, budget=5), lambda t: t.suggest_float("x", 0, 1)) == 0

    def broken(trial):
        raise ValueError("no")

    assert optimize_to_budget(Share(study, budget=6, max_failures=2), broken) == 3
    assert count_finished(study) == 5


def test_the_budget_check_counts_the_trials_in_one_statement(rdb_url, tmp_path):
    """Finished, running and waiting trials counted by the database (one statement), as reading them all would."""
    import sqlalchemy
    from optuna.storages.journal import JournalFileBackend

    storage = storages.open_storage(rdb_url)
    study = optuna.create_study(study_name="count", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    pruned, failed, running = study.ask(), study.ask(), study.ask()
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    study.tell(failed, state=FAIL)
    running.set_user_attr("config", {"big": list(range(100))})
    study.enqueue_trial({"x": 0.5})
    engine = storage.engine
    statements: list[str] = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731 (before_cursor_execute: conn, cursor, statement, ...)
    sqlalchemy.event.listen(engine, "before_cursor_execute", listen)
    try:
        c = counts(study)
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", listen)
    assert (c.finished, c.running, c.waiting) == (4, 1, 1)
    assert len(statements) == 1 and "count" in statements[0].lower()
    assert count_finished(study) == 4
    journal = optuna.create_study(storage=storages.open_storage(f"journal:{tmp_path / 'o.log'}"))
    journal.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    journal.ask()
    assert storages.count_states(journal) == {COMPLETE: 2, RUNNING: 1}  # from the journal's index
    plain = optuna.create_study(storage=optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "p.log"))))
    plain.ask()
    assert storages.count_states(plain) is None and counts(plain).running == 1  # read from the trials


def test_without_a_heartbeat_running_trials_do_not_hold_the_budget(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    # Optuna's own journal storage: no heartbeat (open_storage gives one)
    study = optuna.create_study(study_name="journal", storage=optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "o.log"))))
    study.ask()  # a trial left RUNNING by a dead worker: nothing will ever fail it
    ran = optimize_to_budget(Share(study, budget=2), lambda t: t.suggest_float("x", 0, 1))
    assert ran == 2 and count_finished(study) == 2


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

    if gives_up:
        with pytest.raises(CicyError) as e:
            optimize_to_budget(Share(study, budget=10, max_failures=4, give_up_after=3), objective)
        reason = reasons[ran - 1] or "no reason recorded"
        assert str(e.value) == (
            f"study 'fails': the last 3 trials all failed with the same error and none finished, so the study stops: {reason}"
        )
    else:
        assert optimize_to_budget(Share(study, budget=10, max_failures=4, give_up_after=3, n_trials=ran), objective) == ran
    assert len(calls) == ran


@pytest.mark.waits
@pytest.mark.timeout(120)
def test_concurrent_workers_meet_the_budget_and_overshoot_by_at_most_one_each(rdb_url):
    """``drive``'s rule (no lock): each worker checks finished + running < budget on its own."""
    optuna.create_study(study_name="free", storage=storages.open_storage(rdb_url))
    ran, errors = [], []

    def worker():
        try:
            study = optuna.load_study(study_name="free", storage=storages.open_storage(rdb_url))
            ran.append(optimize_to_budget(Share(study, budget=12), lambda t: (time.sleep(0.05), t.suggest_float("x", 0, 1))[1]))
        except Exception as e:  # pragma: no cover - shown by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    study = optuna.load_study(study_name="free", storage=storages.open_storage(rdb_url))
    assert not errors and len(ran) == 3 and sum(ran) == len(study.trials)
    assert 12 <= count_finished(study) <= 12 + 2 and all(t.state == COMPLETE for t in study.trials)


class InterruptingSampler(optuna.samplers.RandomSampler):
    """Ctrl-C from inside ``study.ask`` (``before_trial``: the trial exists, RUNNING) or ``study.tell``
    (``after_trial``: before the trial's state is written), where Optuna calls its sampler."""

    def __init__(self, where: str):
        super().__init__(seed=0)
        self.where = where

    def before_trial(self, study, trial):
        if self.where == "ask":
            signal.raise_signal(signal.SIGINT)

    def after_trial(self, study, trial, state, values):
        if self.where == "tell":
            signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize("where", ["ask", "tell", "callback", "wait"])
def test_a_signal_while_optuna_records_a_trial_leaves_none_running(tmp_path, where):
    """A Ctrl-C that lands while Optuna creates or records a trial (or in a callback after it) waits until that is
    written, then ends the loop before another trial starts: no trial is left RUNNING in the storage. One that lands
    while the loop waits for other workers' trials acts at once."""
    storage = storages.open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(study_name="signal", storage=storage, sampler=InterruptingSampler(where))
    calls = []

    def objective(trial):
        calls.append(trial.number)
        return trial.suggest_float("x", 0, 1)

    callbacks = [lambda s, t: signal.raise_signal(signal.SIGINT)] if where == "callback" else []
    if where == "wait":
        study.ask()  # another worker's trial runs and holds the budget's one place
    # The "wait" case's Ctrl-C comes from outside, as a kill does (the kernel hands it to the main thread).
    kill = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if where == "wait":
            kill.start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            optimize_to_budget(Share(study, budget=1 if where == "wait" else 3), objective, callbacks=callbacks, poll=30)
        waited = time.monotonic() - start
    finally:
        kill.cancel()  # a loop that ended before it must not leave a Ctrl-C on its way to the test run
        signal.signal(signal.SIGINT, previous)
        tracking.interrupted(False)
    states = [t.state for t in study.trials]
    if where == "ask":  # the trial was made; the signal acted as its objective started, and Optuna failed it
        assert states == [FAIL] and calls == []
    elif where == "wait":  # at once, not after the 30 s poll; the other worker's trial is its own business
        assert states == [RUNNING] and calls == [] and waited < 25
    else:  # the trial ran and was recorded; no other started
        assert states == [COMPLETE] and calls == [0]
