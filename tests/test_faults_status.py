"""``study status`` lists the finished trials whose MLflow run is incomplete: left RUNNING (a full disk, a killed
worker's lost writes), without its objective metric, or not in the store."""

from cicy_search import tracking
from cicy_search.search import study as studies
from cicy_search.tracking import links

from .conftest import run_cli, study_spec


def test_status_lists_the_trials_whose_run_is_incomplete(tmp_path, capsys):
    storage, uri = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = studies.create(study_spec("incomplete"), storage=storage, tracking_uri=uri)
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name("incomplete").experiment_id

    def trial(status: str | None, metrics: dict, value: float = 0.5):
        t = study.ask()
        t.suggest_float("x", 0, 1)
        if status is not None:
            run = client.create_run(experiment)
            for name, v in metrics.items():
                client.log_metric(run.info.run_id, name, v)
            if status != "RUNNING":
                client.set_terminated(run.info.run_id, status=status)
            t.set_user_attr(links.RUN_ID, run.info.run_id)
        else:
            t.set_user_attr(links.RUN_ID, "0" * 32)
        study.tell(t, value)
        return study.get_trials()[-1].user_attrs[links.RUN_ID]

    whole = trial("FINISHED", {"val_accuracy": 0.5})
    running = trial("RUNNING", {"val_accuracy": 0.5})
    bare = trial("FINISHED", {})
    trial(None, {})
    assert links.incomplete(study, client) == {
        1: f"run {running} is still RUNNING",
        2: f"run {bare} has no metric val_accuracy",
        3: f"run {'0' * 32} is not in the tracking store",
    }

    assert run_cli("study", "status", "incomplete", "--storage", storage) == 0
    out = capsys.readouterr().out
    assert "3 finished trials with an incomplete MLflow run" in out
    assert f"trial 1: run {running} is still RUNNING" in out and f"trial 2: run {bare} has no metric val_accuracy" in out
    assert f"trial 0: run {whole}" not in out

    links.repair(study, client, older_than=0)  # what a resume does once the run is old enough
    assert set(links.incomplete(study, client)) == {2, 3}  # a run it closed is no longer listed; the others stay
    assert client.get_run(running).info.status == "FINISHED"
