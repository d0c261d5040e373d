"""A study's runs stay in one tracking store, and the runs of finished trials that lost their last MLflow writes
(a tracking server gone, a process killed with writes queued) are closed from Optuna's record when it resumes."""

import optuna
import pytest
import yaml

from cicy_search import tracking
from cicy_search.search import study as studies
from cicy_search.tracking import links

from .conftest import TINY_STUDY, run_cli, store_copy, study_spec


def _file(folder, name, **changes):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"study": name, **TINY_STUDY, **changes}))
    return path


def _create(folder, empty_mlflow_db):
    """Study ``one`` created in ``folder`` (its SQLite storage and MLflow store): the file, storage URL and store URI."""
    storage = f"sqlite:///{folder / 'o.db'}"
    uri = store_copy(empty_mlflow_db, folder / "mlflow.db")
    path = _file(folder, "one")
    with pytest.MonkeyPatch.context() as env:  # this test's local stores (conftest) may not be set up yet
        env.setenv("CICY_SEARCH_HOME", str(folder / "home"))
        env.setenv("CICY_CACHE_DIR", str(folder / "cache"))
        assert run_cli("study", "create", str(path), "--storage", storage, "--tracking-uri", uri) == 0
    return path, storage, uri


@pytest.fixture
def created(tmp_path, empty_mlflow_db):
    return _create(tmp_path, empty_mlflow_db)


@pytest.fixture(scope="module")
def refusing(tmp_path_factory, empty_mlflow_db):
    """One created study for the tests below, which only read it (a refused command writes nothing)."""
    return _create(tmp_path_factory.mktemp("refusing"), empty_mlflow_db)


@pytest.mark.xdist_group("faults_tracking_refusing")  # one worker makes the module's study once
@pytest.mark.parametrize("command", ["study run", "worker"])
@pytest.mark.parametrize("how", ["--tracking-uri", "$MLFLOW_TRACKING_URI"])
def test_resuming_with_another_tracking_store_is_refused(refusing, tmp_path, capsys, monkeypatch, command, how):
    path, storage, uri = refusing
    other = f"sqlite:///{tmp_path / 'other.db'}"
    args = [*command.split(), str(path), "--storage", storage]
    if how == "--tracking-uri":
        args += ["--tracking-uri", other]
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert run_cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: study 'one' tracks its runs in {uri}, not {other} ({how}): resume it with its own store (or leave {how} out), "
        "or move it there first: cicy-search study create FILE --storage URL --tracking-uri URI --move-tracking"
    )
    assert studies.load("one", storage=storage).trials == []
    assert not (tmp_path / "other.db").exists()  # refused before the other store was opened (which would create it)


def test_a_study_moved_to_another_store_writes_there_with_a_new_parent_run(created, tmp_path, capsys):
    """A study resumed on a new machine from its committed storage, whose old store is not there: ``study create
    --move-tracking`` records the new store and starts a parent run there that names the old one; without the flag
    nothing changes, and moving again to the same store is a no-op."""
    path, storage, uri = created
    before = studies.load("one", storage=storage).user_attrs
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert run_cli("study", "create", str(path), "--storage", storage, "--tracking-uri", other) == 0
    assert studies.load("one", storage=storage).user_attrs == before  # not moved without the flag
    for again in range(2):
        assert run_cli("study", "create", str(path), "--storage", storage, "--tracking-uri", other, "--move-tracking") == 0
        capsys.readouterr()
        study = studies.load("one", storage=storage)
        if again == 0:
            moved = study.user_attrs
        assert study.user_attrs == moved  # the second move to the same store changes nothing
    assert moved[links.TRACKING_URI] == other and moved[links.PARENT_RUN_ID] != before[links.PARENT_RUN_ID]
    assert links.writer_uri(study, other) == other
    parent = tracking.client(other).get_run(moved[links.PARENT_RUN_ID])
    assert parent.data.tags["moved_from"] == f"{uri} {before[links.PARENT_RUN_ID]}"
    assert parent.data.tags["role"] == "study" and parent.info.status == "SCHEDULED"
    with pytest.raises(Exception, match="tracks its runs in"):
        links.writer_uri(study, uri)  # the old store is now the other one


@pytest.mark.xdist_group("faults_tracking_refusing")
def test_the_same_store_written_another_way_is_accepted(refusing, monkeypatch):
    path, storage, uri = refusing
    study = studies.load("one", storage=storage)
    monkeypatch.chdir(path.parent)
    for same in (uri, "sqlite:///mlflow.db", f"sqlite:///{path.parent}/./mlflow.db"):
        assert links.writer_uri(study, same) == uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    assert links.writer_uri(study) == uri


def _lost_writes(study, client, state, value=None):
    """A trial finished in Optuna whose MLflow run was created and then lost every later write: still RUNNING."""
    trial = study.ask()
    config = {"model": {"family": "dense", "width": trial.suggest_int("model.width", 8, 32)}, "train": {"epochs": 2}}
    trial.set_user_attr("config", config)
    run = tracking.Run.start(client, study.user_attrs["mlflow_experiment"], run_name=f"trial-{trial.number}",
                             parent_run_id=links.parent_run_id(study))  # fmt: skip
    trial.set_user_attr(links.RUN_ID, run.run_id)
    if state == "fail":
        trial.set_user_attr("fail_reason", "disk I/O error")
    study.tell(trial, value, state={"complete": None, "pruned": optuna.trial.TrialState.PRUNED, "fail": optuna.trial.TrialState.FAIL}[state])
    return run.run_id, config


def test_runs_of_finished_trials_left_running_are_closed_from_optunas_record(tmp_path, tracking_uri, mlflow_client):
    study = studies.create(study_spec("repair"), storage=f"sqlite:///{tmp_path / 'o.db'}", tracking_uri=tracking_uri)
    lost = {state: _lost_writes(study, mlflow_client, state, 0.75 if state == "complete" else None) for state in ("complete", "pruned", "fail")}
    assert links.repair(study, mlflow_client) == []  # just finished: its writer may still be sending them
    assert links.repair(study, mlflow_client, older_than=0) == [0, 1, 2]
    expected = {"complete": ("FINISHED", None), "pruned": ("KILLED", None), "fail": ("FAILED", "disk I/O error")}
    for state, (run_id, config) in lost.items():
        run = mlflow_client.get_run(run_id)
        status, reason = expected[state]
        assert run.info.status == status and run.data.tags["state"] == {"fail": "failed"}.get(state, state)
        assert run.data.tags.get("failure_reason") == reason
        assert "no model" in run.data.tags["tracking_errors"] and run.data.tags["repaired"] == "true"
        assert run.data.params["model.width"] == str(config["model"]["width"]) and run.data.params["train.epochs"] == "2"
        assert run.data.metrics == ({"val_accuracy": 0.75} if state == "complete" else {})
    assert links.repair(study, mlflow_client, older_than=0) == []  # closed once


@pytest.mark.slow
def test_a_resumed_study_closes_them_and_goes_on(tmp_path, tracking_uri, mlflow_client, capsys, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    path = _file(tmp_path, "resumed", budget={"n_trials": 2})
    assert run_cli("study", "create", str(path), "--storage", storage, "--tracking-uri", tracking_uri) == 0
    study = studies.load("resumed", storage=storage)
    run_id, _ = _lost_writes(study, mlflow_client, "complete", 0.5)
    monkeypatch.setattr(links, "REPAIR_AFTER_SECONDS", 0.0)
    capsys.readouterr()
    assert run_cli("study", "run", str(path), "--storage", storage) == 0
    assert "closed the MLflow runs of finished trials 0, left RUNNING when their writes were lost" in " ".join(capsys.readouterr().out.split())
    assert mlflow_client.get_run(run_id).info.status == "FINISHED"
    trials = studies.load("resumed", storage=storage).trials
    assert len(trials) == 2 and mlflow_client.get_run(trials[1].user_attrs[links.RUN_ID]).data.tags.get("repaired") is None
