"""keras-tuner over the same study file: same space, same config mapping, trials logged to MLflow."""

import pytest

from cicy_search import studyfile
from cicy_search.errors import CicyError

from .test_study import TINY


def test_keras_tuner_searches_the_study_space_and_logs_every_trial(tmp_path, tracking_uri, mlflow_client):
    from cicy_search.tuner import tune

    spec = studyfile.parse({"study": "kt", **TINY})
    summary = tune(spec, max_trials=2, tracking_uri=tracking_uri, directory=str(tmp_path))
    assert summary.n_trials == 2 and 0 <= summary.best_val_accuracy <= 1
    exp = mlflow_client.get_experiment_by_name("kt-keras-tuner")
    runs = mlflow_client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary.parent_run_id]
    assert len(children) == 2
    for run in children:
        depth = int(run.data.params["model.depth"])
        assert 1 <= depth <= 3 and len(eval(run.data.params["model.width"])) == depth  # per-layer widths, as with Optuna
        assert len(mlflow_client.get_metric_history(run.info.run_id, "epoch_val_accuracy")) == 2
        assert {i.tags[0].value for i in run.inputs.dataset_inputs} == {"training", "validation", "test"}


def test_keras_tuner_refuses_what_it_cannot_compare():
    from cicy_search.tuner import tune

    spec = studyfile.parse({"study": "kt2", **TINY, "objectives": ["val_accuracy", "n_params"]})
    with pytest.raises(CicyError, match="single-objective"):
        tune(spec, max_trials=1)
