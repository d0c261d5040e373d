"""Conditional search spaces: model.family as a space entry, each family with its own fixed settings and entries.

Real Optuna storages (a journal file), real MLflow (SQLite), real Keras training on a slice of the data."""

import copy

import optuna
import pytest
import yaml

from cicy_search.errors import CicyError
from cicy_search.search import space, studyfile
from cicy_search.search import study as studies

from .conftest import run_cli

FAMILY_STUDY = {
    "study": "fam",
    "data": {"limit": 400, "features": []},
    "train": {"epochs": 2, "batch_size": 64},
    "model": {"activation": "relu"},
    "space": {
        "model.family": {"type": "categorical", "choices": ["equivariant", "cnn"]},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
        "train.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
    "families": {
        "equivariant": {
            "model": {"layer": "bipartite", "head_width": 16},
            "space": {"model.depth": {"type": "int", "low": 1, "high": 2}, "model.width": {"type": "int", "low": 8, "high": 16}},
        },
        "cnn": {
            "data": {"canonical": True},
            "model": {"dense_width": 16},
            "space": {
                "model.depth": {"type": "int", "low": 1, "high": 2},
                "model.filters": {"type": "categorical", "choices": [4, 8], "per": "model.depth"},
            },
        },
    },
    "sampler": {"name": "tpe", "seed": 3, "n_startup_trials": 2},
    "pruner": {"name": "successive_halving", "min_resource": 1, "reduction_factor": 2},
    "budget": {"n_trials": 4},
}


def family_study(**changes):
    raw = copy.deepcopy(FAMILY_STUDY)
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def test_each_family_starts_from_its_defaults_with_the_shared_and_its_own_settings():
    spec = studyfile.parse(family_study())
    assert spec.families == ("equivariant", "cnn") and spec.family == "equivariant|cnn"
    assert [p.label for p in spec.params] == [
        "model.family", "model.dropout", "train.learning_rate", "equivariant/model.depth", "equivariant/model.width",
        "cnn/model.depth", "cnn/model.filters",
    ]
    assert spec.sampler["group"] is True  # TPE's group mode: trials of different families have different params
    equi = spec.config_for(spec.sample(space.Example("high", {"model.family": "equivariant"})), seed=1)
    cnn = spec.config_for(spec.sample(space.Example("low", {"model.family": "cnn"})), seed=1)
    assert equi["model"] == {
        **equi["model"], "family": "equivariant", "layer": "bipartite", "head_width": 16, "depth": 2, "width": 16, "dropout": 0.2,
        "pooling": "mean", "activation": "relu",
    }
    assert "filters" not in equi["model"] and equi["data"]["canonical"] is False
    assert cnn["model"] == {**cnn["model"], "family": "cnn", "depth": 1, "filters": [4], "dense_width": 16, "kernel_size": [3, 3]}
    assert "layer" not in cnn["model"] and cnn["data"]["canonical"] is True
    assert equi["train"]["learning_rate"] == pytest.approx(1e-2) and cnn["train"]["learning_rate"] == pytest.approx(1e-3)


def test_optuna_draws_only_the_chosen_family_s_entries_under_their_own_names():
    spec = studyfile.parse(family_study())
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        values = spec.sample(trial)
        family = values["model.family"]
        other = "cnn" if family == "equivariant" else "equivariant"
        assert not any(name.startswith(other + "/") for name in trial.params)
        assert trial.params[f"{family}/model.depth"] == values["model.depth"]
        if family == "cnn":
            assert [trial.params[f"cnn/model.filters.{i}"] for i in range(values["model.depth"])] == values["model.filters"]
        study.tell(trial, 0.5)
    assert {t.params["model.family"] for t in study.trials} == {"equivariant", "cnn"}


def test_the_base_file_s_model_section_applies_to_its_own_family_only(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"model": {"family": "cnn", "dense_depth": 2}, "train": {"epochs": 3}}))
    spec = studyfile.parse(family_study(base="base.yaml"), folder=tmp_path)
    assert spec.bases["cnn"]["model"]["dense_depth"] == 2 and "dense_depth" not in spec.bases["equivariant"]["model"]
    assert spec.bases["equivariant"]["train"]["epochs"] == 2  # the study's own train section is laid over the base's


def _with(path, value):
    raw = family_study()
    node = raw
    *parents, last = path
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return raw


@pytest.mark.parametrize(
    "raw, message",
    [
        (family_study(space={"model.depth": {"type": "int", "low": 1, "high": 2}}), "families: per-family settings need model.family in the space"),
        (_with(["space", "model.family"], {"type": "int", "low": 1, "high": 2}), "space.model.family: expected {type: categorical"),
        (_with(["space", "model.family"], {"type": "categorical", "choices": ["cnn", 3]}), "space.model.family.choices: 3 is not a family name"),
        (_with(["space", "model.family"], {"type": "categorical", "choices": ["cnn", "inceptoin"]}), "space.model.family.choices: "),
        (_with(["space", "model.family"], {"type": "categorical", "choices": ["cnn"], "per": "model.depth"}), "(no per)"),
        (_with(["families", "dense"], {}), "families.'dense': not one of space.model.family's choices (equivariant, cnn)"),
        (family_study(families=["cnn"]), "families: expected a mapping of family names"),
        (_with(["families", "cnn"], [1]), "families.cnn: expected a mapping with keys from data, model, train, space"),
        (_with(["families", "cnn", "layers"], {}), "unknown key families.cnn.'layers' (allowed: data, model, train, space)"),
        (_with(["families", "cnn", "model", "family"], "dense"), "families.cnn.model.family: the block of cnn cannot name another family"),
        (_with(["families", "cnn", "data", "targets"], ["h21"]), "families.cnn.data.targets: the same for every family"),
        (_with(["model", "family"], "cnn"), "model.family: searched (space.model.family), so it cannot be fixed as well"),
        (_with(["model", "layer"], "bipartite"), "model.layer: shared by every family searched, but cnn has no setting layer; set it under families.equivariant"),
        (_with(["space", "model.pooling"], {"type": "categorical", "choices": ["max"]}), "space.model.pooling: shared by every family searched, but cnn has no setting pooling"),
        (_with(["families", "cnn", "space", "model.dropout"], {"type": "float", "low": 0, "high": 0.1}), "families.cnn.space.model.dropout: also in space"),
        (_with(["families", "cnn", "space", "model.family"], {"type": "categorical", "choices": ["cnn"]}), "families.cnn.space.model.family: not a searchable setting"),
        (_with(["families", "cnn", "space", "model.modules"], {"type": "int", "low": 1, "high": 2}), "space (model.family cnn): unknown key model.modules"),
        (_with(["families", "cnn", "space", "model.depth"], {"type": "int", "low": 1, "high": 65}), "space (model.family cnn): model.depth: "),
        (_with(["families", "cnn", "space", "model.kernel_size"], {"type": "categorical", "choices": ["3x3"], "per": "model.width"}), "families.cnn.space.model.kernel_size.per: model.width is neither"),
        (_with(["families", "cnn", "space", "model.depth"], {"type": "int", "low": 1}), "families.cnn.space.model.depth.high: expected an integer"),
        (_with(["families", "cnn", "model", "filters"], "many"), "fixed settings of cnn: model.filters: "),
    ],
)
def test_malformed_conditional_spaces_fail_at_load_with_one_line(raw, message):
    with pytest.raises(CicyError) as e:
        studyfile.parse(raw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_json_schema_takes_the_families_block_and_refuses_a_family_s_own_targets():
    import jsonschema

    validator = jsonschema.Draft202012Validator(studyfile.json_schema())
    assert list(validator.iter_errors(family_study())) == []
    for bad in (_with(["families", "cnn", "data", "targets"], ["h21"]), _with(["families", "cnn", "optimizer"], "adam")):
        assert list(validator.iter_errors(bad))
        with pytest.raises(CicyError):
            studyfile.parse(bad)


def test_study_create_refuses_a_malformed_one_with_one_error_line_and_creates_nothing(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_with(["model", "layer"], "bipartite")))
    journal = tmp_path / "j.journal"
    assert run_cli("study", "create", str(path), "--storage", f"journal:{journal}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "set it under families.equivariant" in err[0]
    assert not journal.exists()


@pytest.mark.slow
def test_a_study_searching_the_family_trains_each_trial_as_its_family(tmp_path, tracking_uri, mlflow_client):
    spec = studyfile.parse(family_study())
    storage = f"journal:{tmp_path / 'o.journal'}"
    study = studies.run(spec, storage=storage, tracking_uri=tracking_uri).study
    assert len(study.trials) == 4
    families = [t.params["model.family"] for t in study.trials]
    assert set(families) == {"equivariant", "cnn"}
    runs = {r.info.run_id: r for r in mlflow_client.search_runs([mlflow_client.get_experiment_by_name("fam").experiment_id])}
    for t in study.trials:
        assert t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        family, config = t.params["model.family"], t.user_attrs["config"]
        assert config["model"]["family"] == family and config["data"]["canonical"] is (family == "cnn")
        assert config["model"]["depth"] == t.params[f"{family}/model.depth"]
        assert ("layer" in config["model"]) is (family == "equivariant")
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.data.params["model.family"] == family and run.data.params["data.canonical"] == str(family == "cnn")
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert run.data.metrics["val_accuracy"] == pytest.approx(t.value)
        else:
            assert run.data.tags["state"] == "pruned"
    # Resumed from the same storage, TPE goes on over the same conditional space.
    again = studies.run(studyfile.parse(family_study()), storage=storage, tracking_uri=tracking_uri, n_trials=5).study
    assert len(again.trials) == 5 and again.trials[4].params["model.family"] in ("equivariant", "cnn")
