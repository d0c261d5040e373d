"""The study's MLflow parent run as its summary: where studies are read and compared in the MLflow UI.

``study create`` makes the run (status SCHEDULED until a process works on the study). Every ``study run``
and every worker then keeps it current, through the background uploader (off the training thread):

- after the trials it finishes (at once after the first, then at most every ``tracking.FLUSH_SECONDS``, longer
  with many processes (``StudySummary.period``), and at its end; each write takes every trial it finished since
  its last one), metrics at step = trial number,
  which MLflow charts as the optimisation history: ``trial_<metric>`` (the trial's objective values, complete
  trials only), ``best_<metric>`` (the best value of the complete trials numbered up to it; per objective for
  several) and the study's
  ``trials_complete``, ``trials_pruned``, ``trials_failed``; with several objectives ``pareto_front_size``;
- tags ``best_trial`` and ``best_run_id`` (``pareto_front`` for several objectives) and the run's
  description (``mlflow.note.content``) linking to the best trial's run;
- when it stops: the study report (``report study``: offline HTML, figures, tables) as the artifact
  ``study_report/``, tags ``trials_finished``, ``budget`` and ``budget_met``, and the run's end: FINISHED
  when the budget is met, KILLED when the study stopped short of it (timeout, ``--n-trials``, Ctrl-C,
  failures) with no trial running anywhere, left RUNNING while other workers still run trials.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import spool
from .links import parent_run_id, run_id, run_ids
from .. import tracking
from ..errors import CicyError, one_line

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def objective_names(study: optuna.Study) -> list[str]:
    names = study.user_attrs.get("objectives") or []
    if len(names) == len(study.directions):
        return list(names)
    return ["value"] if len(study.directions) == 1 else [f"objective_{i}" for i in range(len(study.directions))]


def _better(a: float, b: float, direction) -> bool:
    """``a`` better than ``b`` in ``direction`` (a ``StudyDirection``, or a study file's "minimize"/"maximize")."""
    minimize = direction in (optuna.study.StudyDirection.MINIMIZE, "minimize")
    return a < b if minimize else a > b


def dominates(a: list[float], b: list[float], directions) -> bool:
    """Values ``a`` are nowhere worse than ``b`` and somewhere better: ``a`` dominates ``b`` (for one objective:
    ``a`` is better)."""
    return all(not _better(y, x, d) for x, y, d in zip(a, b, directions)) and any(
        _better(x, y, d) for x, y, d in zip(a, b, directions)
    )


def pareto_front(trials: list[FrozenTrial], directions) -> list[FrozenTrial]:
    """The complete trials no other one dominates."""
    return [t for t in trials if not any(dominates(o.values, t.values, directions) for o in trials if o is not t)]


def history_point(trials: list[FrozenTrial], number: int, names: list[str], directions) -> dict[str, float]:
    """The parent run's metrics at step ``number``, as the study stands now (``trials``: all of them)."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    upto = [t for t in complete if t.number <= number]
    point = {
        "trials_complete": float(len(complete)),
        "trials_pruned": float(sum(t.state == TrialState.PRUNED for t in trials)),
        "trials_failed": float(sum(t.state == TrialState.FAIL for t in trials)),
    }
    this = next((t for t in complete if t.number == number), None)
    for i, (name, direction) in enumerate(zip(names, directions)):
        if this is not None:
            point[f"trial_{name}"] = float(this.values[i])
        values = [t.values[i] for t in upto]
        if values:
            best = values[0]
            for v in values[1:]:
                best = v if _better(v, best, direction) else best
            point[f"best_{name}"] = float(best)
    if len(names) > 1 and upto:
        point["pareto_front_size"] = float(len(pareto_front(upto, directions)))
    return point


def best(trials: list[FrozenTrial], directions) -> list[FrozenTrial]:
    """The best complete trial (the earliest of equals, as ``study.best_trial``), or the Pareto front: the one
    best-trial rule of the package (the summary run, ``study best``, export, the objective's best-so-far model)."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    if len(directions) > 1:
        return pareto_front(complete, directions)
    top = complete[0]
    for t in complete[1:]:
        top = t if _better(t.values[0], top.values[0], directions[0]) else top
    return [top]


def note(study_name: str, trials: list[FrozenTrial], names: list[str], directions, budget: int, link, study=None) -> str:
    """The parent run's description (markdown): progress and a link to the best run(s) (with ``study``, also a run
    made from the spool after its trial finished)."""
    counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
    goal = ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(names, directions))
    lines = [
        f"**Study {study_name}**: {finished}/{budget} trials finished ({counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned; {counts[TrialState.FAIL]} failed); objective {goal}.",
        "",
    ]
    top = best(trials, directions)
    if len(directions) > 1:
        lines.append(f"Pareto front ({len(top)} trials):")
    for t in top:
        values = ", ".join(f"{n} = {v:.4g}" for n, v in zip(names, t.values))
        run = run_id(t, study)
        target = f"[trial-{t.number}]({link(run)})" if run else "(no MLflow run)"
        lines.append(f"{'- ' if len(directions) > 1 else 'Best: '}trial {t.number}, {values}: run {target}")
    if not top:
        lines.append("No complete trial yet.")
    return "\n".join(lines)


class StudySummary:
    """Keeps a study's MLflow parent run current from one process (``study run`` or a worker).

    Args:
        study: the Optuna study (``mlflow_parent_run_id`` among its user attributes).
        client: its MLflow client.
        budget: the study's budget of finished trials.
        uploader: the background uploader the trials write through (flushed by ``finish``).
    """

    def __init__(
        self, study: optuna.Study, client, *, budget: int, uploader: tracking.Uploader | None = None,
        running: Callable[[], int] | None = None,
    ):
        self.study = study
        self.client = client
        self.budget = budget
        self.uploader = uploader
        self.running = running  # how many trials of the study run now, in every process (None: this one's alone)
        self.run = tracking.Run(client, parent_run_id(study), uploader=uploader, name=study.study_name)
        self.names = objective_names(study)
        self.directions = list(study.directions)
        self.errors: list[str] = []
        self._experiment: str | None = None
        self._pending: list[int] = []  # trials whose summary is queued and not yet written
        self._pending_lock = threading.Lock()
        self._queued = False  # a write is queued or timed: trials finishing now join it
        self._last_write = -math.inf  # time.monotonic() of the last write
        self._timer: threading.Timer | None = None

    def _link(self, run_id: str) -> str:
        """A link to a run of the study: absolute on a tracking server, else relative to the UI page."""
        if self._experiment is None:
            self._experiment = self.client.get_run(self.run.run_id).info.experiment_id
        path = f"#/experiments/{self._experiment}/runs/{run_id}"
        ui = tracking.ui_url(self.client.tracking_uri)
        return f"{ui}/{path}" if ui else path

    def start(self) -> None:
        """Mark the parent run RUNNING (it is SCHEDULED after ``study create``, ended after an earlier run)."""
        self.run.later(lambda: self.client.update_run(self.run.run_id, status="RUNNING"), "status RUNNING")

    # Trials that finish while this process's summary write is queued, or within its period (``period``) of
    # its last write, join one write: every worker writes to the one parent run, each write costs the tracking
    # server a request (``bench.scale``), and the tracking store locks the run's rows for each, so at
    # saturation those writes would queue behind each other.

    #: About how many processes' writes the parent run gets per ``tracking.FLUSH_SECONDS``, however many work on
    #: the study: with more trials running than this, each process waits longer between its writes (``period``).
    writers = 4

    def period(self) -> float:
        """Seconds between this process's writes: ``tracking.FLUSH_SECONDS``, times the running trials (about the
        working processes) over ``writers`` when there are more: 64 workers each write every 4 minutes, so the
        run's best value and tags are a few seconds old at most, and a trial's own point up to that period."""
        try:
            running = self.running() if self.running is not None else 0
        except Exception as e:  # the storage did not answer: the trial is recorded, so no reason to stop the study
            log.warning("study summary: could not count the running trials (%s); writing every %s s", one_line(e), tracking.FLUSH_SECONDS)
            running = 0
        return tracking.FLUSH_SECONDS * max(1.0, running / self.writers)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: queue the summary of the study as it stands after ``trial`` (or join a queued one)."""
        with self._pending_lock:
            self._pending.append(trial.number)
            if self._queued:
                return  # the queued or timed write takes this trial too
            self._queued = True
            wait = self._last_write + self.period() - time.monotonic()
            if wait > 0:
                self._timer = threading.Timer(wait, self._queue_write)
                self._timer.daemon = True
                self._timer.start()
                return
        self._queue_write()

    def flush(self) -> None:
        """Queue the write of the trials waiting for their period now, instead of when it ends."""
        self._cancel_timer()
        with self._pending_lock:
            pending = bool(self._pending)
        if pending:
            self._queue_write()

    def _cancel_timer(self) -> None:
        with self._pending_lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()  # if it fired already, its write finds nothing left to write

    def _queue_write(self) -> None:
        self.run.later(self._write_pending, "study summary")

    def _take_pending(self) -> list[int]:
        with self._pending_lock:
            numbers, self._pending = self._pending, []
            self._queued = False
            self._last_write = time.monotonic()
        return numbers

    def _write_pending(self) -> None:
        numbers = self._take_pending()
        if numbers and spool.down(self.client.tracking_uri) is not None:  # away: no waiting on it; written later
            with self._pending_lock:
                self._pending[:0] = numbers
        elif numbers:
            self._update(*numbers)

    def _update(self, *numbers: int, trials: list[FrozenTrial] | None = None) -> None:
        """One write: the history points at steps ``numbers`` and the tags, from the study as it stands now
        (``trials``: as just read)."""
        from mlflow.entities import Metric, RunTag

        trials = self.study.get_trials(deepcopy=False) if trials is None else trials
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, v, now, number)
            for number in numbers
            for k, v in history_point(trials, number, self.names, self.directions).items()
        ]
        self.run.log_batch(metrics, tags=[RunTag(k, v) for k, v in self._tags(trials).items()])

    def _tags(self, trials: list[FrozenTrial]) -> dict[str, str]:
        top = best(trials, self.directions)
        tags = {tracking.NOTE: note(self.study.study_name, trials, self.names, self.directions, self.budget, self._link, self.study)}
        if len(self.directions) > 1:
            tags["pareto_front"] = ",".join(str(t.number) for t in top)
        elif top:
            tags["best_trial"] = str(top[0].number)
            tags["best_run_id"] = run_id(top[0], self.study) or ""
        return tags

    def finish(self, *, report: Callable | None = None, interrupted: bool = False, console=None) -> list[str]:
        """Wait for the queued writes, log the study report, and end the parent run as the budget says.

        ``report``: what writes the study report (``reporting.study.report_study``; None: no report).
        ``interrupted``: the last trial was stopped (Ctrl-C), which ends it without Optuna's callbacks, so its
        point is written here; and no report. Never raises: what failed is printed as ``warning:`` lines (or
        logged) and returned.
        """
        self._cancel_timer()  # its trials are written below
        wait = tracking.wait_seconds(tracking.INTERRUPTED_FLUSH_SECONDS) if interrupted else None  # a signal: seconds
        errors = self.uploader.flush(wait) if self.uploader is not None else []
        sync = tracking.Run(self.client, self.run.run_id)
        try:
            away = spool.down(self.client.tracking_uri)
            if away is not None:
                raise CicyError(f"the tracking server is away ({away}): the study's summary is written by its next run")
            trials = self.study.get_trials(deepcopy=False)
            numbers = set(self._take_pending())
            if trials and interrupted:
                numbers.add(max(t.number for t in trials))
            if numbers:
                self._update(*sorted(numbers), trials=trials)
            if report is not None and not interrupted:
                errors += self._report(report, console)
            finished = sum(t.state in FINISHED for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            met = finished >= self.budget
            sync.set_tags({"trials_finished": finished, "budget": self.budget, "budget_met": str(met).lower()})
            if met or not running:
                self.client.set_terminated(self.run.run_id, status="FINISHED" if met else "KILLED")
        except Exception as e:  # the store went away: the trials are safe in Optuna, say what is missing
            errors.append(f"MLflow parent run {self.run.run_id}: {one_line(e)}")
        for line in errors:
            if console is not None:
                console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
            else:
                log.warning(line)
        self.errors = errors
        return errors

    def _report(self, report: Callable, console) -> list[str]:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                result = report(self.study, mlflow_client=self.client, out=Path(tmp) / f"study-{self.study.study_name}.html", png=False)
        except Exception as e:  # a report is a convenience: the study and its runs stand without it
            return [f"study report not written: {one_line(e)}"]
        if console is not None:
            console.print(
                f"study report: artifact study_report/{result.html.name} of MLflow run {self.run.run_id}",
                highlight=False, soft_wrap=True,
            )
        return []


@dataclass
class Links:
    """Where a study is in the MLflow UI: ``ui`` is the server's address, or ``mlflow ui``'s default for a
    local store (``serve`` then says how to start it)."""

    ui: str
    experiment: str
    parent: str
    runs: dict[int, str] = field(default_factory=dict)
    serve: str | None = None


def ui_links(study: optuna.Study, client, trials: list[FrozenTrial] | None = None) -> Links:
    """The MLflow UI addresses of the study's runs table, its parent run and the runs of ``trials``
    (default: the best trial or the Pareto front)."""
    parent = parent_run_id(study)
    if parent:
        experiment = client.get_run(parent).info.experiment_id
    else:
        exp = client.get_experiment_by_name(study.user_attrs.get("mlflow_experiment", study.study_name))
        if exp is None:
            raise CicyError(f"no MLflow experiment for study {study.study_name!r} in {client.tracking_uri}")
        experiment = exp.experiment_id
    ui = tracking.ui_url(client.tracking_uri)
    serve = None
    if ui is None:
        ui, serve = LOCAL_UI, f"mlflow ui --backend-store-uri {client.tracking_uri}"
    if trials is None:
        trials = best(study.get_trials(deepcopy=False), list(study.directions))
    runs = {n: tracking.run_url(ui, experiment, r) for n, r in run_ids(study, trials).items()}
    return Links(ui, tracking.experiment_url(ui, experiment), tracking.run_url(ui, experiment, parent) if parent else "", runs, serve)


LOCAL_UI = "http://127.0.0.1:5000"
