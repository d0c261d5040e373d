"""``study create`` and ``study run`` refuse a study file that differs from the one an existing study of that name
was created from (in anything but description and budget), with one line naming the keys, before anything is
written; the same file again, or with another description or budget, still works."""

import pytest
import yaml

from cicy_search.search import study as studies

from .conftest import TINY_STUDY, run_cli

CHANGES = {
    "seed": ({"seed": 6}, "seed"),
    "space": ({"space": {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}, "space"),
    "data": ({"data": {"limit": 300}}, "data"),
    "sampler": ({"sampler": {"name": "random", "seed": 2}}, "sampler"),
    "two keys": ({"train": {"epochs": 3}, "sampler": {"name": "random", "seed": 2}}, "sampler, train"),
}


def _file(folder, name, **changes):
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"study": name, **TINY_STUDY, **changes}))
    return path


@pytest.fixture
def created(tmp_path, tracking_uri, capsys):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    path = _file(tmp_path / "a", "same")
    assert run_cli("study", "create", str(path), "--storage", storage, "--tracking-uri", tracking_uri) == 0
    capsys.readouterr()
    return storage, studies.load("same", storage=storage).user_attrs


@pytest.mark.parametrize("command", ["create", "run"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_different_study_file_under_an_existing_name_is_refused(created, tmp_path, tracking_uri, mlflow_client, capsys, command, change):
    storage, before = created
    changes, keys = CHANGES[change]
    path = _file(tmp_path / "b", "same", **changes)
    runs = len(mlflow_client.search_runs([mlflow_client.get_experiment_by_name("same").experiment_id]))
    assert run_cli("study", command, str(path), "--storage", storage, "--tracking-uri", tracking_uri) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: study 'same' was created from a different study file (differs in: {keys}); "
        "use that file, or give this one another study name"
    )
    study = studies.load("same", storage=storage)
    assert study.user_attrs == before and study.trials == []
    assert len(mlflow_client.search_runs([mlflow_client.get_experiment_by_name("same").experiment_id])) == runs


def test_the_same_file_with_another_description_or_budget_is_accepted(created, tmp_path, tracking_uri, capsys):
    storage, before = created
    path = _file(tmp_path / "c", "same", description="a new description", budget={"n_trials": 7})
    assert run_cli("study", "create", str(path), "--storage", storage, "--tracking-uri", tracking_uri) == 0
    after = studies.load("same", storage=storage).user_attrs
    assert after["budget"] == 7 and after["spec"] == before["spec"]
