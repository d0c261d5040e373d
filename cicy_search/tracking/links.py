"""The link between an Optuna study and MLflow, in one place: the user attributes that hold it and how to read them.

A study records its MLflow parent run and tracking URI when it is created (``study.create``); each trial records
its own run as soon as the run starts (``objective``). Everything that goes from Optuna to MLflow reads them here.
"""

from __future__ import annotations

RUN_ID = "mlflow_run_id"  # on a trial: its MLflow run
SPOOLED_RUN_ID = "mlflow_run_id:"  # + a trial number, on a study: that trial's run, made from the spool after it finished
PARENT_RUN_ID = "mlflow_parent_run_id"  # on a study: the parent run its trials are children of
TRACKING_URI = "tracking_uri"  # on a study: the MLflow tracking URI it was created with


def run_id(trial, study=None) -> str | None:
    """The MLflow run of a trial (FrozenTrial or Trial), None before its run started. A run created from the spool
    after its trial finished is linked on the study (``link_spooled``): found when ``study`` is given."""
    found = trial.user_attrs.get(RUN_ID)
    if found is None and study is not None:
        found = study.user_attrs.get(f"{SPOOLED_RUN_ID}{trial.number}")
    return found


def run_ids(study, trials) -> dict[int, str]:
    """Trial number -> MLflow run for ``trials`` of ``study`` (those with one), the study's attributes read once."""
    attrs = None
    out = {}
    for t in trials:
        found = t.user_attrs.get(RUN_ID)
        if found is None:
            attrs = study.user_attrs if attrs is None else attrs
            found = attrs.get(f"{SPOOLED_RUN_ID}{t.number}")
        if found is not None:
            out[t.number] = found
    return out


def link_spooled(study, number: int, rid: str) -> None:
    """Record that trial ``number``'s run is ``rid``, made from the spool once the trial had finished (Optuna keeps
    a finished trial's attributes fixed, so the link is the study's user attribute ``mlflow_run_id:<number>``)."""
    key = f"{SPOOLED_RUN_ID}{number}"
    if study.user_attrs.get(key) != rid:
        study.set_user_attr(key, rid)


def parent_run_id(study) -> str | None:
    return study.user_attrs.get(PARENT_RUN_ID)


def tracking_uri(study, given: str | None = None) -> str | None:
    """The tracking URI a command was given, else the one the study was created with."""
    return given or study.user_attrs.get(TRACKING_URI)


def client(study, given: str | None = None):
    """An MLflow client on the study's tracking server (``given`` first)."""
    from .. import tracking

    return tracking.client(tracking_uri(study, given))


def _same_store(a: str, b: str) -> bool:
    """Whether two tracking URIs name one store: equal, or the same SQLite file however written."""
    from ..locks import sqlite_path

    if a.rstrip("/") == b.rstrip("/"):
        return True
    files = [sqlite_path(u) for u in (a, b)]
    if all(files):
        return files[0].resolve() == files[1].resolve()
    return False


def writer_uri(study, given: str | None = None) -> str | None:
    """The tracking URI a process that adds trials to ``study`` writes to: the study's own. One given otherwise
    (``--tracking-uri`` or ``$MLFLOW_TRACKING_URI``) that names another store is refused: a study's runs stay in
    one store, where its parent run, ``export`` and the reports look for them."""
    import os

    from .. import tracking
    from ..errors import CicyError

    stored = study.user_attrs.get(TRACKING_URI)
    chosen = given or os.environ.get("MLFLOW_TRACKING_URI")
    if stored and chosen and not same_store(study, chosen):
        tracking.check_reachable(tracking.resolve_uri(chosen))  # a store that is not there is the first thing to say
        source = "$MLFLOW_TRACKING_URI" if chosen == os.environ.get("MLFLOW_TRACKING_URI") else "--tracking-uri"
        raise CicyError(
            f"study {study.study_name!r} tracks its runs in {tracking.hide_password(stored)}, not {tracking.hide_password(chosen)} "
            f"({source}): resume it with its own store (or leave {source} out), or move it there first: "
            f"cicy-search study create FILE --storage URL --tracking-uri URI --move-tracking"
        )
    return stored or given


def same_store(study, uri: str) -> bool:
    """Whether ``uri`` names the store ``study`` records its runs in (a study made before stores were recorded:
    any)."""
    from .. import tracking

    stored = study.user_attrs.get(TRACKING_URI)
    return not stored or _same_store(tracking.resolve_uri(uri), stored)


#: A finished trial's run still RUNNING this long after the trial ended has lost its last writes (a tracking server
#: that went away, a process killed while they were queued): the writer gives up on them far sooner
#: (``tracking.HTTP_DEFAULTS``, ``tracking.EXIT_FLUSH_SECONDS``).
REPAIR_AFTER_SECONDS = 300.0


def _runs(study, client, filter_string: str = "") -> list:
    """The study's MLflow runs (those ``filter_string`` selects), every page; none without its experiment."""
    exp = client.get_experiment_by_name(study.user_attrs.get("mlflow_experiment", study.study_name))
    if exp is None:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def incomplete(study, client) -> dict[int, str]:
    """Trials Optuna has finished whose MLflow run is not: trial number -> what is wrong with its run.

    A run still RUNNING (its last writes lost: ``repair`` closes it on a later resume), a complete trial's run
    without its objective metrics, or a run id the store does not hold. One search of the study's runs.
    """
    import optuna

    State = optuna.trial.TrialState
    runs = {r.info.run_id: r for r in _runs(study, client)}
    names = study.user_attrs.get("objectives") or ["value"]
    found = {}
    trials = study.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED, State.FAIL))
    ids = run_ids(study, trials)
    for trial in trials:
        rid = ids.get(trial.number)
        if rid is None:
            continue
        run = runs.get(rid)
        if run is None:
            found[trial.number] = f"run {rid} is not in the tracking store"
        elif run.info.status == "RUNNING":
            found[trial.number] = f"run {rid} is still RUNNING"
        elif trial.state == State.COMPLETE and not set(names) <= set(run.data.metrics):
            missing = sorted(set(names) - set(run.data.metrics))
            found[trial.number] = f"run {rid} has no metric {', '.join(missing)}"
    return found


def repair(study, client, *, older_than: float | None = None, spooled: set[str] = frozenset()) -> list[int]:
    """Close the MLflow runs of trials Optuna has finished that were left RUNNING; returns their trial numbers.

    Each such run gets what Optuna knows: the trial's config as params, its objective values as metrics, the
    ``state`` tag (and ``failure_reason`` of a failed trial), a ``tracking_errors`` tag saying what was lost (its
    epoch metrics, its model), and the status of the trial (FINISHED, KILLED for pruned, FAILED). One search
    for the study's RUNNING runs; nothing more when there are none.
    """
    import datetime

    import optuna
    from mlflow.entities import Metric, Param, RunTag

    from .. import tracking
    from ..config import flatten

    older_than = REPAIR_AFTER_SECONDS if older_than is None else older_than
    running = {r.info.run_id for r in _runs(study, client, "attributes.status = 'RUNNING'")} - set(spooled)
    if not running:
        return []
    State = optuna.trial.TrialState
    status = {State.COMPLETE: ("FINISHED", "complete"), State.PRUNED: ("KILLED", "pruned"), State.FAIL: ("FAILED", "failed")}
    now = datetime.datetime.now(datetime.timezone.utc)
    repaired = []
    for trial in study.get_trials(deepcopy=False, states=tuple(status)):
        rid = run_id(trial)
        ended = trial.datetime_complete
        if rid not in running or ended is None or (now - ended.astimezone(datetime.timezone.utc)).total_seconds() < older_than:
            continue
        mlflow_status, state = status[trial.state]
        tags = {"state": state, "tracking_errors": "its worker's last MLflow writes were lost; closed on resume from Optuna's "
                "record (config, objective values): no epoch metrics, no model", "repaired": "true"}
        if trial.state == State.FAIL:
            tags["failure_reason"] = trial.user_attrs.get("fail_reason", "failed")
        at = int(ended.timestamp() * 1000)
        names = study.user_attrs.get("objectives") or ["value"]
        metrics = [Metric(n, float(v), at, 0) for n, v in zip(names, trial.values or [])]
        params = [Param(k, str(v)) for k, v in flatten(trial.user_attrs.get("config") or {}).items()]
        run = tracking.Run(client, rid)
        try:
            have = set(client.get_run(rid).data.params)
            run.log_batch(metrics, [p for p in params if p.key not in have], [RunTag(k, v) for k, v in tags.items()])
        except Exception:  # a param MLflow refuses must not keep the run open: close it with what it has
            run.log_batch(tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(rid, status=mlflow_status, end_time=at)
        repaired.append(trial.number)
    return repaired


def replay(box, client, study=None) -> list[int]:
    """Write the runs waiting in the spool ``box`` (``spool.Spool``) into ``client``'s store, and link each to its
    trial of ``study``; returns their trial numbers. A write the store refuses is named in the run's
    ``tracking_errors`` tag instead; one it does not answer stops the replay (the rest waits for the next)."""
    return box.replay(lambda entry: _write_entry(entry, client, study), lambda entry: _abandoned(entry, study))


def _write_entry(entry, client, study) -> None:
    """One spool file's run into the store, in order, noting in the file how far it got after each write."""
    from mlflow.entities import RunTag

    from . import Run, experiment_id, spool
    from ..errors import one_line

    data = entry.data
    if data["run_id"] is None:
        create = data["create"]
        exp = experiment_id(client, create["experiment"])
        found = client.search_runs([exp], filter_string=f"tags.`{spool.TAG}` = '{data['key']}'", max_results=1)
        if found:  # made by a replay that stopped before it could note it
            data["run_id"] = found[0].info.run_id
        else:
            info = client.create_run(exp, tags={**create["tags"], spool.TAG: data["key"]}, run_name=create["run_name"]).info
            data["run_id"] = info.run_id
        entry.save()
    if study is not None and data["trial"] is not None:
        link_spooled(study, data["trial"], data["run_id"])
    run = Run(client, data["run_id"])
    errors = data.setdefault("errors", [])
    while data["done"] < len(data["ops"]):
        op = spool.decode(data["ops"][data["done"]], entry.files)
        if op["op"] == "end" and errors:
            run.apply({"op": "batch", "metrics": [], "params": [], "tags": [RunTag("tracking_errors", "; ".join(errors)[:5000])]})
        try:
            run.apply(op)
        except Exception as e:
            if spool.unreachable(e):
                raise
            errors.append(f"{op['op']} (replayed from the spool): {one_line(e)}")
        data["done"] += 1
        entry.save()


def _abandoned(entry, study) -> bool:
    """Whether ``entry`` is a run whose writer ended before it did (a process killed with SIGKILL, a lost worker): its
    trial finished in Optuna ``links.REPAIR_AFTER_SECONDS`` ago or more. It then gets the end Optuna's record gives,
    and the note that its writer ended first, so the replay writes what it had and closes it."""
    import time

    import optuna

    if study is None or entry.data["trial"] is None or time.time() - entry.path.stat().st_mtime < REPAIR_AFTER_SECONDS:
        return False
    State = optuna.trial.TrialState
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == entry.data["trial"]), None)
    status = {State.COMPLETE: "FINISHED", State.PRUNED: "KILLED", State.FAIL: "FAILED"}.get(trial.state) if trial else None
    if status is None:
        return False
    note = [["tracking_errors", "its worker ended before its run: the writes it spooled are here, later ones are not"],
            ["state", {"FINISHED": "complete", "KILLED": "pruned", "FAILED": "failed"}[status]]]  # fmt: skip
    entry.data["ops"] += [{"op": "batch", "metrics": [], "params": [], "tags": note},
                          {"op": "end", "status": status, "end_time": int(trial.datetime_complete.timestamp() * 1000)}]  # fmt: skip
    return True


def resume(study, given: str | None = None, *, log=None, spool_folder=None):
    """The MLflow client a process adding trials to ``study`` writes with (``writer_uri``), after writing the runs
    waiting in the study's spool (``spool_folder``: ``replay``) and closing the runs of finished trials
    that lost their last writes (``repair``); ``log`` gets one line when it did either."""
    from . import spool
    from .. import tracking
    from ..errors import one_line

    client = tracking.client(writer_uri(study, given))
    replayed, waiting = [], set()
    try:
        if spool_folder is not None:
            box = spool.Spool(spool_folder, client.tracking_uri)
            replayed = replay(box, client, study)
            waiting = {e.data["run_id"] for e in box.entries() if e.data["run_id"] and e.closed}  # others: repaired
        numbers = repair(study, client, spooled=waiting)
    except Exception as e:  # the store answered its health check but not this: the study goes on, repaired later
        numbers = []
        if log is not None:
            log(f"warning: could not look for MLflow runs of finished trials left RUNNING: {one_line(e)}")
    if replayed and log is not None:
        log(f"wrote the spooled MLflow runs of trials {', '.join(map(str, replayed))} from {spool_folder}")
    if numbers and log is not None:
        log(f"closed the MLflow runs of finished trials {', '.join(map(str, numbers))}, left RUNNING when their writes were lost")
    return client
