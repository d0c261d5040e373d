"""Running studies: create or resume an Optuna study from a study file and optimize it to its budget.

The study's MLflow side: one experiment named after the study, one parent run (its id in the study's
user attributes, so any worker can nest under it) and one child run per trial. The budget loop that
every process runs is ``budget.optimize_to_budget``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from .. import tracking
from ..config import dump_yaml
from ..errors import CicyError, NoStudy
from .budget import Counts, Share, count_finished, counts, optimize_to_budget
from .storage import LOST, StudyLock, check_url, default_url, open_storage, redact
from .studyfile import StudySpec, check_budget
from ..tracking import links, spool

GIVE_UP_AFTER = 3  # failures in a row, all with one reason and none finished: the study cannot run


def create(
    spec: StudySpec,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    n_trials: int | None = None,
    move_tracking: bool = False,
) -> optuna.Study:
    """Create the study and its MLflow parent run, or load them if they exist (idempotent).

    ``n_trials`` (default: the file's budget) is stored as the study's ``budget`` user attribute,
    the total that workers read; creating again with another value changes it. Processes creating
    one study at once take turns under its budget lock: the first creates the study and its parent
    run, the others find them. A wrong storage URL or an unreachable tracking server fails first.

    ``move_tracking``: an existing study whose runs are in another store (a study resumed on a new machine from
    its committed storage) records ``tracking_uri`` as its store from now on, with a new parent run there tagged
    with the old store and parent run (``moved_from``); its earlier trials' runs stay where they were.
    """
    check_budget(n_trials)
    check_url(storage)  # before the tracking store is opened (a SQLite one is created by opening it)
    # An existing study keeps its own store unless moved: another one given is not opened (nor, for SQLite, created)
    # here; a process adding trials with it is refused (``links.writer_uri``).
    tracking_uri = (None if move_tracking else recorded_store(spec.name, storage)) or tracking_uri
    check_tracking(tracking.client(tracking_uri))
    optuna_storage = open_storage(storage, tracking_uri=tracking_uri)
    lock = StudyLock(storage, spec.name)
    lock.acquire()
    try:
        return _create(spec, optuna_storage, storage=storage, tracking_uri=tracking_uri, n_trials=n_trials, move_tracking=move_tracking)
    finally:
        lock.close()


def recorded_store(name: str, storage: str | None) -> str | None:
    """The tracking URI an existing study records; None for a study not there yet (its storage is not created)."""
    try:
        return load(name, storage=storage).user_attrs.get(links.TRACKING_URI)
    except NoStudy:
        return None


def _create(
    spec: StudySpec, optuna_storage, *, storage: str | None, tracking_uri: str | None, n_trials: int | None, move_tracking: bool = False
) -> optuna.Study:
    """``create`` once it holds the study's lock (creating is the one step still taken in turns)."""
    client = tracking.client(tracking_uri)
    study = optuna.create_study(
        study_name=spec.name,
        storage=optuna_storage,
        sampler=spec.sampler_object(),
        pruner=spec.pruner_object(),
        directions=spec.directions,
        load_if_exists=True,
    )
    if [d.name.lower() for d in study.directions] != spec.directions:
        raise CicyError(
            f"study {spec.name!r} exists in {redact(storage or default_url())} with directions "
            f"{[d.name.lower() for d in study.directions]}, not {spec.directions}"
        )
    moved = None
    if move_tracking and links.parent_run_id(study) is not None and not links.same_store(study, client.tracking_uri):
        moved = f"{study.user_attrs.get(links.TRACKING_URI)} {links.parent_run_id(study)}"
    if links.parent_run_id(study) is None and not study.get_trials(deepcopy=False):
        for values in spec.enqueue:  # a new study: its first trials (a moved or resumed one queued them already)
            study.enqueue_trial(values, skip_if_exists=True)
    if links.parent_run_id(study) is None or moved:
        tags = {"study": spec.name, "role": "study", **({"moved_from": tracking.hide_password(moved)} if moved else {})}
        parent = tracking.Run.start(client, spec.name, run_name=spec.name, tags=tags)
        parent.log_params(
            {
                "study": spec.name,
                "objectives": ",".join(f"{o.metric}:{o.direction}" for o in spec.objectives),
                **{f"sampler.{k}": v for k, v in spec.sampler.items()},
                **{f"pruner.{k}": v for k, v in spec.pruner.items()},
                "budget.n_trials": spec.n_trials,
                "space": ",".join(p.label for p in spec.params),
            }
        )
        parent.log_artifacts({"study.yaml": dump_yaml(spec.raw)})
        # SCHEDULED until a process works on it; then summary.StudySummary keeps it current and ends it.
        client.update_run(parent.run_id, status="SCHEDULED")
        study.set_user_attr(links.PARENT_RUN_ID, parent.run_id)
        study.set_user_attr("mlflow_experiment", spec.name)
        study.set_user_attr(links.TRACKING_URI, client.tracking_uri)
        study.set_user_attr("objectives", [o.metric for o in spec.objectives])
        study.set_user_attr("spec", spec.raw)
    elif "spec" in study.user_attrs:  # an existing study: its file again, but for description and budget
        check_same_file(spec, study.user_attrs["spec"], "use that file, or give this one another study name")
    budget = n_trials or spec.n_trials
    if study.user_attrs.get("budget") != budget:
        study.set_user_attr("budget", budget)
    return study


def check_tracking(client) -> None:
    """A tracking server must accept our requests, not just answer ``/health``: MLflow 3 refuses Host
    headers outside its ``--allowed-hosts`` (HTTP 403) while ``/health`` still says OK."""
    if not client.tracking_uri.startswith(("http://", "https://")):
        return
    from mlflow.exceptions import MlflowException

    try:
        client.search_experiments(max_results=1)
    except MlflowException as e:
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)[:300]
        hint = ""
        if "403" in str(e) or "Host header" in str(e):
            hint = "; start the server with --allowed-hosts naming the host:port clients use"
        raise CicyError(f"MLflow tracking server {client.tracking_uri} refused a request: {first}{hint}") from None


def load(name: str, *, storage: str | None = None, **storage_options) -> optuna.Study:
    """An existing study by name; a clear error names the studies that do exist.

    ``storage_options`` go to ``open_storage`` (heartbeat settings, the tracking URI for lost runs).
    """
    url = storage or default_url()
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        raise NoStudy(f"no study {name!r}: no Optuna storage at {url}")  # opening it would create an empty database
    optuna_storage = open_storage(url, **storage_options)
    names = [s.study_name for s in optuna.get_all_study_summaries(optuna_storage, include_best_trial=False)]
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise NoStudy(f"no study {name!r} in {redact(storage or default_url())} (studies there: {known})")
    return optuna.load_study(study_name=name, storage=optuna_storage)


# Keys of a study file that may differ between the creator's copy and a worker's.
FREE_KEYS = {"description", "budget"}


def check_same_file(spec: StudySpec, stored: dict, hint: str = "workers must use the creator's file") -> None:
    """Refuse a study file that differs from the one the study was created from (``stored``, its ``spec``) in
    anything but ``FREE_KEYS``: its trials would not be the same search."""
    mine = {k: v for k, v in spec.raw.items() if k not in FREE_KEYS}
    theirs = {k: v for k, v in (stored or {}).items() if k not in FREE_KEYS}
    if mine != theirs:
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise CicyError(f"study {spec.name!r} was created from a different study file (differs in: {', '.join(differ)}); {hint}")


def reseed(study: optuna.Study, spec: StudySpec, worker: int = 0) -> None:
    """Give the study the file's sampler, its seed shifted by the trials already there and the worker.

    A resumed study must not replay the sampler's first draws, nor may two workers draw the same ones.
    """
    sampler = dict(spec.sampler)
    if sampler.get("seed") is not None:
        sampler["seed"] = (sampler["seed"] + len(study.get_trials(deepcopy=False)) + worker * 100_003) % 2**32
    study.sampler = StudySpec.sampler_object(spec, sampler)


@dataclass(kw_only=True)
class StudyRun(Share):
    """One process's work on a study: what ``drive`` and the objective it builds share, instead of keyword lists.

    The budget loop's fields (``budget.Share``: study, budget, n_trials, timeout, worker_id) and:

    Attributes:
        spec: the study file.
        client, uploader: the MLflow client of the study's tracking server, and the background uploader its trial
            runs and summary write through (``tracking.uploader()``).
        worker: this process's index, which shifts the sampler's seed (``reseed``).
        console: where each trial's line goes (None: nowhere).
        report: log the study report to the parent run at the end.
        spool: where the trial runs' MLflow writes wait while the tracking server is away (``spool_of``).

    A study stops once more trials than its budget failed in one process, or ``GIVE_UP_AFTER`` (at most the budget)
    failed in a row with one reason while none finished: ``max_failures`` and ``give_up_after`` default to these.
    """

    spec: StudySpec
    client: Any = None
    uploader: Any = None
    worker: int = 0
    console: Any = None
    report: bool = True
    spool: Any = None

    def __post_init__(self) -> None:
        if self.max_failures is None:
            self.max_failures = self.budget
        if self.give_up_after is None:
            self.give_up_after = min(GIVE_UP_AFTER, self.budget)

    def objective(self, tags: dict | None = None):
        """The study's objective for this run's trials (imports TensorFlow); ``tags`` go on every trial run."""
        from .objective import Objective

        return Objective(self.spec, mlflow_client=self.client, parent_run_id=links.parent_run_id(self.study), tags=tags,
                         uploader=self.uploader, spool=self.spool)  # fmt: skip


def spool_folder(storage: str | None, name: str) -> Path:
    """The spool folder of study ``name`` in ``storage`` (``spool.folder``)."""
    return spool.folder(storage or default_url(), name, tracking.local_home())


@dataclass
class RunSummary:
    study: optuna.Study
    new_trials: int
    finished: int
    budget: int
    seconds: float


def reporter(console, spec: StudySpec, budget: int):
    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if console is None:
            return
        state = trial.state.name.lower()
        value = "" if trial.values is None else " ".join(f"{o.metric}={v:.4g}" for o, v in zip(spec.objectives, trial.values))
        reason = trial.user_attrs.get("fail_reason", "") if state == "fail" else ""
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        console.print(
            f"trial {trial.number:>4} {state:<8} {value} {reason} [{count_finished(study)}/{budget}] {seconds:.1f} s",
            highlight=False,
        )

    return report


def run(
    spec: StudySpec,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    worker: int = 0,
    console=None,
    report: bool = True,
    system_metrics: bool = False,
) -> RunSummary:
    """Optimize until the study holds ``n_trials`` finished (complete or pruned) trials, or time runs out.

    Earlier trials in the same storage count toward the budget, so a rerun resumes. A trial that
    raises is recorded as failed (with ``fail_reason``) and the study goes on; failures do not count
    toward the budget, but more failures than the budget in one call stop it. The study's MLflow parent
    run is kept current as trials finish and gets the study report at the end (``report``; see ``summary``).
    ``system_metrics``: sample CPU, memory and GPU use into every trial run (see ``worker.join``).
    """
    if system_metrics:
        tracking.enable_system_metrics()
    check_budget(n_trials, timeout)  # before anything is created: 0 and -1 are mistakes, not "the file's budget"
    budget = n_trials or spec.n_trials
    timeout = timeout if timeout is not None else spec.timeout
    study = create(spec, storage=storage, tracking_uri=tracking_uri, n_trials=budget)
    folder = spool_folder(storage, spec.name)
    client = links.resume(study, tracking_uri, log=console.print if console else None, spool_folder=folder)  # its own store, runs repaired
    work = StudyRun(study, spec=spec, budget=budget, client=client, uploader=tracking.uploader(), worker=worker,
                    timeout=timeout, console=console, report=report, spool=spool.Spool(folder, client.tracking_uri))  # fmt: skip
    objective = work.objective()  # imports TensorFlow: only once storage and tracking answered
    start = time.monotonic()
    ran = drive(work, objective)
    return RunSummary(study, ran, count_finished(study), budget, time.monotonic() - start)


def drive(run: StudyRun, objective) -> int:
    """Run ``objective`` on ``run.study`` until the study's budget is met; returns trials run.

    What ``study run`` and every cluster worker share: a reseeded sampler, the budget loop, and the study's
    MLflow parent run kept as its summary (``summary.StudySummary``: updated after each trial; at the end the queued
    MLflow writes flushed, the study report logged unless ``run.report`` is False or the run was interrupted, and the
    run ended as the budget says).
    """
    from ..tracking.summary import StudySummary

    study, spec, budget, console = run.study, run.spec, run.budget, run.console
    reseed(study, spec, run.worker)
    summary = None
    spooling = [spooler(run)] if run.spool is not None else []
    if links.parent_run_id(study) and run.client is not None:
        summary = StudySummary(study, run.client, budget=budget, uploader=run.uploader, running=lambda: counts(study).running)
        summary.start()
    interrupted = False
    try:
        return optimize_to_budget(
            run,
            objective,
            callbacks=[reporter(console, spec, budget), *([summary.after_trial] if summary else []), *spooling],
            on_wait=waiter(console, budget),
        )
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if run.spool is not None and not interrupted:
            _replay(run)
        if summary is not None:
            from ..reporting.study import report_study

            summary.finish(report=report_study if run.report else None, interrupted=interrupted, console=console)


def spooler(run: StudyRun):
    """An Optuna callback for after each trial: while the tracking server is away, say so once and stop the study
    after ``spool.max_trials()`` trials spooled in a row; once it answers, write what waits in the spool."""
    said = []

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        box, uri = run.spool, run.spool.uri
        away = spool.down(uri)
        if away is None and not box.waiting():
            return  # nothing spooled: no request
        if away is not None and not said and run.console is not None:
            said.append(away)
            run.console.print(
                f"warning: MLflow tracking server {tracking.hide_password(uri)} does not answer ({away}): the trials go on and "
                f"their runs wait in {box.path} until it does; the study stops after {spool.max_trials()} trials without it",
                markup=False, highlight=False, soft_wrap=True,
            )
        if spool.answers(uri):
            said.clear()
            _replay(run, wait=False)
        elif box.in_a_row >= spool.max_trials():
            raise CicyError(
                f"study {study.study_name!r}: MLflow tracking server {tracking.hide_password(uri)} has not answered for "
                f"{box.in_a_row} trials ({away}); their runs wait in {box.path}: run the same command once it answers again"
            )

    return after_trial


def _replay(run: StudyRun, wait: bool = True) -> None:
    """Write what waits in the study's spool (``wait``: this process's queued writes first) if the server answers."""
    if wait and run.uploader is not None:
        for line in run.uploader.flush(tracking.wait_seconds(None)):
            if run.console is not None:
                run.console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    if not spool.answers(run.spool.uri):
        return
    try:
        done = links.replay(run.spool, run.client, run.study)
    except Exception as e:  # the trials are safe in Optuna and their writes in the spool: the next resume replays
        done = []
        if run.console is not None:
            run.console.print(f"warning: the spooled MLflow runs were not written: {e}", markup=False, highlight=False, soft_wrap=True)
    if done and run.console is not None:
        run.console.print(f"wrote the spooled MLflow runs of trials {', '.join(map(str, done))}", highlight=False, soft_wrap=True)


def waiter(console, budget: int):
    def wait(c: Counts) -> None:
        if console is not None:
            console.print(
                f"budget taken: {c.finished} finished + {c.running} running of {budget}; "
                "waiting for the running trials (a lost worker's trial is retried after the heartbeat grace period)",
                highlight=False,
            )

    return wait


def trials_table(study: optuna.Study) -> list[dict]:
    """One row a trial: number, state, value(s), params, duration, MLflow run id."""
    rows = []
    trials = study.get_trials(deepcopy=False)
    lost = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    for t in trials:
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "values": t.values,
                "params": t.params,
                "seconds": t.duration.total_seconds() if t.duration else None,
                "mlflow_run_id": links.run_id(t, study),
                "fail_reason": t.user_attrs.get("fail_reason") or (LOST if t.number in lost else None),
                "worker": t.user_attrs.get("worker"),
            }
        )
    return rows


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The best trial, or the Pareto front of a multi-objective study (``summary.best``)."""
    from ..tracking.summary import best

    top = best(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)), list(study.directions))
    if not top:
        raise CicyError(f"study {study.study_name!r} has no complete trial yet")
    return top
