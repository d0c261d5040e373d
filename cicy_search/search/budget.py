"""The budget loop: trials until the study holds its budget of finished trials, shared by every process.

The budget belongs to the study, not to a process: ``optimize_to_budget`` starts a trial only while
finished + running trials stay under it, so any number of workers sharing one storage stop together
once the study holds ``budget`` finished trials. The check takes no lock (Optuna's ``MaxTrialsCallback``
rule): workers that check in the same few milliseconds near the end may each start one trial more, so a
study ends with between ``budget`` and ``budget + workers - 1`` finished trials, plus any lost trials' retries (a lock
that serialised every trial start cost more than the rare extra trial in ``bench.scale``).

Optuna's own ``MaxTrialsCallback`` is not used: it counts one process's view after a trial ends, so it neither waits
for a lost worker's trial to be retried nor counts running trials against the budget before one starts.

With a heartbeat, a worker leaves only once no trial is running or queued. Such an extra trial can take the
place of a trial whose worker died, and meet the budget before that trial is noticed as lost. The workers
then wait for it as they would before the budget is met: it is failed after the grace period, its MLflow run
closed, and its retry run, instead of being left RUNNING in a study that nobody looks at again.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import KW_ONLY, dataclass

import optuna

from .. import compat, signals, tracking
from ..errors import CicyError, out_of_space
from .storage import count_states

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
POLL_SECONDS = 2.0


def count_finished(study: optuna.Study) -> int:
    return counts(study).finished


@dataclass
class Counts:
    finished: int
    running: int
    waiting: int


def counts(study: optuna.Study) -> Counts:
    """Finished, running and waiting trials: one counting statement on a database, else read from the trials."""
    by_state = count_states(study)
    if by_state is None:
        by_state = Counter(t.state for t in study.get_trials(deepcopy=False))
    return Counts(
        sum(by_state.get(s, 0) for s in FINISHED),
        by_state.get(optuna.trial.TrialState.RUNNING, 0),
        by_state.get(optuna.trial.TrialState.WAITING, 0),
    )


def has_room(c: Counts, budget: int, heartbeat: bool) -> bool:
    """Whether the budget lets a trial start: a queued one waits, or finished (+ running) trials are under it."""
    return c.waiting > 0 or c.finished + (c.running if heartbeat else 0) < budget


@dataclass
class Share:
    """One process's part in a study: the study, the budget it runs to, and this process's limits.

    ``study.StudyRun`` extends it with what tracking needs; ``optimize_to_budget`` reads only these fields.

    Args:
        study: the Optuna study; whether running trials hold their place in the budget depends on its storage
            having Optuna's heartbeat (``storage.open_storage`` gives every storage one).
        budget: the finished (complete or pruned) trials the study runs to, counted over every process.
        n_trials: at most this many trials from this process (its share); None: until the budget.
        timeout: start no trial after this many seconds.
        worker_id: stored as each trial's ``worker`` user attribute (``host:pid``).
        max_failures: stop once more trials than this failed in this process; None: no limit.
        give_up_after: raise ``CicyError`` once this many trials in a row failed with one ``fail_reason`` while
            none finished in this process: a study whose every trial fails the same way (a setting that cannot
            run) stops with that reason instead of failing on. A store that cannot be written (a full disk, a
            file-size limit: ``errors.out_of_space``) stops it so even after trials finished, since every later
            trial fails the same way. None: never.
    """

    study: optuna.Study
    _: KW_ONLY
    budget: int
    n_trials: int | None = None
    timeout: float | None = None
    worker_id: str | None = None
    max_failures: int | None = None
    give_up_after: int | None = None


def optimize_to_budget(share: Share, objective, *, callbacks=(), on_wait=None, poll: float = POLL_SECONDS) -> int:
    """Run trials one at a time until the study holds ``share.budget`` finished trials; returns how many ran.

    A trial starts only when a queued (WAITING) trial exists or finished + running trials are under
    the budget; workers checking at the same moment may each start one. With a heartbeat, running trials hold their
    place: a worker that dies keeps it until the heartbeat fails its trial and queues the retry, so the others wait
    for that (``on_wait`` is told the ``Counts`` once) instead of starting extra trials, and once the budget is met
    they still wait for running trials and run queued retries before they leave. Without one (a storage opened
    without ``storage.open_storage``) running trials are not counted, and concurrent workers may overshoot the
    budget by up to one trial each.

    Ctrl-C and SIGTERM act at once while the objective runs or the loop waits; one that comes while Optuna
    records a trial (``ask``, ``tell``, the callbacks) is held until that is written (``signals.Interrupts``), then
    acts before another trial starts: a signal inside ``study.tell`` would leave the trial RUNNING in the storage.

    Args:
        share: the study, its budget and this process's limits.
        objective: Optuna's objective, called once per trial.
        callbacks: Optuna study callbacks, called after each trial.
        on_wait: called with the ``Counts`` when the loop starts waiting for running trials.
        poll: seconds between looks at the study while waiting.
    """
    # MLflow requests fail fast from a held signal on (``tracking.interrupted``), as the CLI's handlers make them.
    interrupts = signals.Interrupts(on_hold=lambda signum: tracking.interrupted())
    with interrupts.held():
        return _loop(share, objective, callbacks, on_wait, poll, interrupts)


def _loop(share: Share, objective, callbacks, on_wait, poll: float, interrupts: signals.Interrupts) -> int:
    """``optimize_to_budget``'s loop, with signals held outside the objective and the waits."""
    study, budget, n_trials, max_failures, give_up_after = share.study, share.budget, share.n_trials, share.max_failures, share.give_up_after
    heartbeat = compat.heartbeat_enabled(compat.study_storage(study))
    start = time.monotonic()
    ran = failed = 0
    waiting = False
    beaten: set[int] = set()  # running trials given a heartbeat by this process (``beat_once``)
    same: list = []  # reasons of this call's failures since the last trial that finished
    finished_any = False
    while (n_trials is None or ran < n_trials) and not interrupts.pending:  # a held signal: it acts as the loop ends
        if share.timeout is not None and time.monotonic() - start >= share.timeout:
            break
        if max_failures is not None and failed > max_failures:
            break
        c = counts(study)
        if heartbeat and c.running and not has_room(c, budget, heartbeat):
            # A lost worker's trial holds its place until it is failed and its retry queued: look before
            # waiting or leaving (a trial that starts is looked for by Optuna's optimize itself).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                beat_once(study, beaten)
                optuna.storages.fail_stale_trials(study)
            c = counts(study)
        if c.finished >= budget and not c.waiting and not (heartbeat and c.running):
            break
        if not has_room(c, budget, heartbeat):
            if on_wait is not None and not waiting:
                on_wait(c)
            waiting = True
            with interrupts.passed():
                time.sleep(poll)
            continue

        states: list = []
        reasons: list = []

        def one_trial(trial: optuna.Trial):
            if share.worker_id:
                trial.set_user_attr("worker", share.worker_id)
            with interrupts.passed():  # a signal held since ``ask`` acts here: Optuna fails this trial
                return objective(trial)

        try:
            study.optimize(
                one_trial,
                n_trials=1,
                catch=(Exception,),
                callbacks=[*callbacks, lambda s, t: (states.append(t.state), reasons.append(t.user_attrs.get("fail_reason")))],
                # No gc_after_trial: the objective's keras.backend.clear_session() already collects.
            )
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another worker took this one for lost (a heartbeat stalled past the grace period)
            # and queued its retry; this result is dropped.
            states.append(optuna.trial.TrialState.FAIL)
        waiting = False
        ran += 1
        failed += states[:1] == [optuna.trial.TrialState.FAIL]
        if give_up_after is not None:
            if states[:1] != [optuna.trial.TrialState.FAIL]:
                same, finished_any = [], True
            else:
                same.append(reasons[0] if reasons and reasons[0] else "no reason recorded")
                give_up(study, same, give_up_after, finished_any)
    return ran


def beat_once(study: optuna.Study, beaten: set[int]) -> None:
    """Record one heartbeat for each RUNNING trial this process has not seen yet.

    A trial whose worker could not write its first heartbeat (a full disk) has none, and Optuna's RDB storage
    takes only trials with a heartbeat for stale: without this, it would hold its place in the budget forever and
    every worker would wait for it. With one, it is failed and retried after the grace period like any lost trial;
    a live trial's own thread keeps beating, so the extra beat changes nothing for it.
    """
    storage = compat.study_storage(study)
    running = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)) if t.number not in beaten]
    if not running:
        return
    study_id = storage.get_study_id_from_name(study.study_name)
    for number in running:
        storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, number))
        beaten.add(number)


def give_up(study: optuna.Study, reasons: list, after: int, finished_any: bool) -> None:
    """Raise ``CicyError`` if the last ``after`` failures in a row had one reason, and either no trial finished in
    this process or that reason is a store out of space (no later trial can be recorded either)."""
    if len(reasons) < after or len(set(reasons[-after:])) != 1:
        return
    full = out_of_space(reasons[-1])
    if full:
        raise CicyError(
            f"study {study.study_name!r}: the last {after} trials failed because a store could not be written: "
            f"{full}; a full disk or a file-size limit? free space, then run the same command to resume"
        )
    if not finished_any:
        raise CicyError(
            f"study {study.study_name!r}: the last {after} trials all failed with the same error "
            f"and none finished, so the study stops: {reasons[-1]}"
        )
