"""Model plugins and data files: the builder contract, declared hyperparameters, one-line errors for every mistake.

The plugins here are real modules written to a folder on ``sys.path``; the data files real files; training, MLflow
and Optuna are real (tiny slices). The example plugin's whole path through the CLI is ``test_plugins_e2e.py``.
"""

import json
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cicy_search import bundle, data, models, plugins, training, userdata
from cicy_search.config import flatten, resolve
from cicy_search.errors import CicyError
from cicy_search.plugins import InputSpec, Param, Params, TargetSpec

from .conftest import run_cli

PLUGIN = textwrap.dedent(
    '''
    import keras
    from cicy_search import models
    from cicy_search.plugins import Param, Params, builder

    @builder(params=Params(width=Param.int(8, low=2, high=64), act=Param.choice("relu", ["relu", "tanh"]),
                           fail_at=Param.int(0, low=0, high=64)))
    def good(config, inputs, targets):
        p = config["model"]["params"]
        if p["width"] == p["fail_at"]:
            raise RuntimeError(f"width {p['width']} is not supported")
        x = keras.Input(shape=inputs.shape)
        h = keras.layers.Dense(p["width"], activation=p["act"])(keras.layers.Flatten()(x))
        out = {t.name: keras.layers.Dense(t.units, activation="softmax" if t.kind == "classification" else None, name=t.name)(h)
               for t in targets}
        return keras.Model(x, out if len(targets) > 1 else out[targets[0].name])

    def dense_again(config, inputs, targets):
        """A built-in family through the plugin contract: the same builder, no special case."""
        return models.build_dense({**config["model"]["params"], "head": config["model"]["head"]}, inputs.shape, targets)

    dense_again.params = Params(
        depth=Param.int(1, low=1, high=4), width=Param.int(16, low=1, high=512), activation=Param.choice("relu", ["relu"]),
        l1=Param.float(0.0, low=0, high=1), l2=Param.float(0.0, low=0, high=1), dropout=Param.float(0.0, low=0, high=0.9),
        batch_norm=Param.bool(False),
    )

    def not_a_model(config, inputs, targets):
        return "a model"

    def raises(config, inputs, targets):
        raise ValueError("heads must divide width")

    def wrong_shape(config, inputs, targets):
        x = keras.Input(shape=inputs.shape)
        return keras.Model(x, keras.layers.Dense(3)(keras.layers.Flatten()(x)))

    @builder(params=Params(heads=Param.int(0, low=1, high=8)))
    def bad_default(config, inputs, targets):
        pass

    def bad_params(config, inputs, targets):
        pass

    bad_params.params = {"heads": 2}

    not_callable = 5
    '''
)


@pytest.fixture(scope="session")
def plugin_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "my_plugins.py").write_text(PLUGIN)
    (folder / "broken_plugin.py").write_text("import no_such_dependency_xyz\n")
    return folder


@pytest.fixture(autouse=True)
def _on_path(plugin_folder, monkeypatch):
    """The plugins importable, and the families a test's configs register forgotten after it (other tests read
    ``config.FAMILIES``: the JSON Schema, the list of families in messages)."""
    from cicy_search import config as config_module

    monkeypatch.syspath_prepend(str(plugin_folder))
    before = dict(config_module.FAMILIES)
    yield
    config_module.FAMILIES.clear()
    config_module.FAMILIES.update(before)


def config(family="my_plugins:good", params=None, **data_section):
    return resolve({"data": {"limit": 300, **data_section}, "model": {"family": family, "params": params or {}},
                    "train": {"epochs": 1}})


# --- declared hyperparameters ---


def test_declared_params_get_defaults_bounds_and_become_mlflow_params():
    c = config(params={"width": 12})
    assert c["model"] == {"family": "my_plugins:good", "head": "classification", "params": {"width": 12, "act": "relu", "fail_at": 0}}
    assert flatten(c)["model.params.width"] == 12 and flatten(c)["model.params.act"] == "relu"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"width": 65}, "model.params.width: expected an integer from 2 to 64, got 65"),
        ({"width": 2.5}, "model.params.width: expected an integer, got 2.5"),
        ({"act": "gelu"}, "model.params.act: expected one of relu, tanh, got 'gelu'"),
        ({"heads": 2}, "unknown key model.params.heads (allowed: act, fail_at, width)"),
        ("wide", "model.params: expected a mapping of settings, got str"),
    ],
)
def test_bad_values_of_declared_params_are_one_line_naming_the_key(params, message):
    with pytest.raises(CicyError) as e:
        config(params=params)
    assert str(e.value) == message


def test_params_declarations_are_checked():
    assert Params(a=Param.int(1, low=0, high=2)).problem() is None
    assert Params(a=Param.int(3, low=0, high=2)).problem() == "a: default: expected an integer from 0 to 2, got 3"
    assert Params(a=Param.float(0.1, low=1, high=0)).problem() == "a: low = 1 > high = 0"
    assert Params(**{"2x": Param.bool(True)}).problem() == "parameter name '2x' is not an identifier"
    assert Params(a=Param.choice("x", [])).problem() == "a: a choice needs at least one choice"


# --- finding and building a plugin: every mistake one line naming it ---


@pytest.mark.parametrize(
    "family, message",
    [
        ("no_such_module_xyz:build", "model.family no_such_module_xyz:build: cannot import no_such_module_xyz: ModuleNotFoundError: "
         "No module named 'no_such_module_xyz' (is its folder on PYTHONPATH, or its package installed?)"),
        ("broken_plugin:build", "model.family broken_plugin:build: cannot import broken_plugin: ModuleNotFoundError: "
         "No module named 'no_such_dependency_xyz'"),
        ("my_plugins:missing", "model.family my_plugins:missing: module my_plugins has no missing"),
        ("my_plugins:not_callable", "model.family my_plugins:not_callable: not_callable is a int, not a function"),
        ("my_plugins:bad_default", "model.family my_plugins:bad_default: declares a bad schema: heads: default: expected an integer from 1 to 8, got 0"),
        ("my_plugins:bad_params", "model.family my_plugins:bad_params: declares a bad schema: params must be cicy_search.plugins.Params, got dict"),
        ("my_plugins:", "model.family my_plugins:: expected package.module:function, got 'my_plugins:'"),
        ("transformer", "unknown model family 'transformer': choose one of dense, cnn, inception, equivariant, svm, or name a plugin as package.module:function"),
    ],
)
def test_a_plugin_that_cannot_be_loaded_is_one_line(family, message):
    with pytest.raises(CicyError) as e:
        config(family)
    assert str(e.value) == message


@pytest.mark.parametrize(
    "family, message",
    [
        ("my_plugins:not_a_model", "model.family my_plugins:not_a_model: the builder returned str, not a keras.Model"),
        ("my_plugins:raises", "model.family my_plugins:raises: the builder raised ValueError: heads must divide width"),
        ("my_plugins:wrong_shape", "model.family my_plugins:wrong_shape: output h11 has shape (2, 3) for a batch of 2, "
         "expected (2, 19) (classification: 19 classes for 1..19)"),
    ],
)
def test_a_plugin_that_builds_no_fitting_model_is_one_line_at_validation(family, message):
    with pytest.raises(CicyError) as e:
        training.check_model(config(family))
    assert str(e.value) == message


def test_several_targets_need_a_dict_of_outputs_and_get_one_unit_each_for_regression():
    c = resolve({"data": {"limit": 300, "targets": ["h11", "h21"]}, "model": {"family": "my_plugins:good", "head": "regression"}})
    training.check_model(c)  # the good plugin returns a dict: accepted
    targets = [TargetSpec("h11", 1, 19, kind="regression"), TargetSpec("h21", 0, 101, kind="regression")]
    model = models.family("my_plugins:good").build_model(c, InputSpec.of((12, 15)), targets)
    assert {k: tuple(v.shape) for k, v in model(np.zeros((2, 12, 15), dtype=np.float32)).items()} == {"h11": (2, 1), "h21": (2, 1)}
    with pytest.raises(CicyError, match="with several targets the model must return a dict \\{h11, h21\\} of outputs"):
        models.family("my_plugins:wrong_shape").build_model(c, InputSpec.of((12, 15)), targets)


@pytest.mark.slow
def test_a_built_in_family_is_a_plugin_of_the_same_contract():
    """The dense family, written as a plugin on models.build_dense, trains to the very same numbers."""
    shared = {"depth": 1, "width": 16}
    builtin = resolve({"seed": 3, "data": {"limit": 300}, "model": {"family": "dense", **shared}, "train": {"epochs": 2}})
    plugin = resolve({"seed": 3, "data": {"limit": 300}, "model": {"family": "my_plugins:dense_again", "params": shared}, "train": {"epochs": 2}})
    a, b = training.fit(builtin), training.fit(plugin)
    assert a.n_params == b.n_params == 12 * 15 * 16 + 16 + 17 * 19
    assert a.history["loss"] == pytest.approx(b.history["loss"], rel=1e-6)
    assert a.metrics == pytest.approx(b.metrics)


@pytest.mark.slow
def test_an_entry_point_names_an_installed_plugin(tmp_path, monkeypatch):
    """A distribution's ``cicy_search.models`` entry point (here a real .dist-info folder on sys.path)."""
    dist = tmp_path / "my_plugins_dist-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugins-dist\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[cicy_search.models]\ntiny_mlp = my_plugins:good\n")
    (dist / "top_level.txt").write_text("my_plugins\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    c = config("tiny_mlp", {"width": 4})
    assert c["model"]["params"]["width"] == 4 and "tiny_mlp" in plugins.entry_point_names()
    family = models.family("tiny_mlp")
    assert family.record() == {"family": "tiny_mlp", "module": "my_plugins", "version": "1.2.3"}
    training.check_model(c)


@pytest.mark.slow
def test_a_trial_whose_plugin_raises_fails_with_its_reason(tmp_path, tracking_uri):
    """Validation builds the space's ends; a value inside it that the builder refuses fails that trial only."""
    import optuna

    from cicy_search.search import study as studies
    from cicy_search.search.studyfile import parse

    spec = parse({
        "study": "plugin-fails-one-trial",
        "data": {"limit": 300}, "train": {"epochs": 1},
        "model": {"family": "my_plugins:good", "params": {"fail_at": 6}},
        "space": {"model.params.width": {"type": "categorical", "choices": [4, 6]}},
        # The seed draws widths 6, 4, 6, 6: one trial completes and the study stops at its third failure (more
        # failures than its budget of 2), having seen both kinds.
        "sampler": {"name": "random", "seed": 0}, "budget": {"n_trials": 2},
    })
    summary = studies.run(spec, storage=f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=tracking_uri)
    trials = summary.study.get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert failed and complete and all(t.params["model.params.width"] == 4 for t in complete)
    assert {t.user_attrs["fail_reason"] for t in failed} == {
        "model.family my_plugins:good: the builder raised RuntimeError: width 6 is not supported"
    }


def test_cli_train_of_a_bad_plugin_is_exit_2_and_creates_no_store(tmp_path, capsys):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"data": {"limit": 300}, "model": {"family": "my_plugins:wrong_shape"}}))
    store = tmp_path / "mlflow.db"
    assert run_cli("train", str(run), "--tracking-uri", f"sqlite:///{store}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: model.family my_plugins:wrong_shape: output h11 has shape (2, 3) for a batch of 2, "
                   "expected (2, 19) (classification: 19 classes for 1..19)"]
    assert not store.exists()


def test_cli_study_of_a_bad_plugin_is_exit_2_and_creates_no_study(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "study": "bad-plugin", "data": {"limit": 300}, "model": {"family": "my_plugins:raises"},
        "space": {"train.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2}},
    }))
    storage, store = tmp_path / "optuna.db", tmp_path / "mlflow.db"
    code = run_cli("study", "run", str(study), "--storage", f"sqlite:///{storage}", "--tracking-uri", f"sqlite:///{store}")
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {study}: model.family my_plugins:raises: the builder raised ValueError: heads must divide width"
    )
    assert not storage.exists() and not store.exists()


# --- data files ---

ROWS = [
    {"id": "quintic", "matrix": [[5]], "h11": 1, "my_invariant": 3},
    {"id": "bicubic", "matrix": [[3], [3]], "h11": 2, "my_invariant": -4},
    {"id": "split", "matrix": [[1, 1, 0], [3, 0, 0], [0, 1, 3]], "h11": 3, "my_invariant": 0},
]


def _write(tmp_path, rows, suffix):
    path = tmp_path / f"list{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".csv":
        pd.DataFrame([{**r, "matrix": json.dumps(r["matrix"])} for r in rows]).to_csv(path, index=False)
    else:
        x = data.pad([r["matrix"] for r in rows], (3, 3)).astype(np.int8)
        np.savez(path, matrix=x, **{k: np.array([r[k] for r in rows]) for k in rows[0] if k != "matrix"})
    return str(path)


@pytest.mark.parametrize("suffix", [".csv", ".json", ".npz"])
def test_a_data_file_reads_the_same_in_every_layout(tmp_path, suffix):
    path = _write(tmp_path, ROWS, suffix)
    src = data.source(path)
    assert (src.kind, src.dimension, src.padding, src.targets) == ("file", 3, (3, 3), ("h11", "my_invariant"))
    loaded = data.load(path)
    assert loaded.y("my_invariant").tolist() == [3, -4, 0] and list(loaded.frame["id"]) == ["quintic", "bicubic", "split"]
    assert loaded.x[2].tolist() == [[1, 1, 0], [3, 0, 0], [0, 1, 3]] and loaded.x[0].tolist() == [[5, 0, 0], [0, 0, 0], [0, 0, 0]]
    import hashlib

    assert data.dataset_hash(path) == hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"matrix": [[4]]}, "row 2: a 2-fold, but row 1 is a 3-fold (one dimension a file)"),
        ({"matrix": [[1, 1]]}, "row 2: dimension sum(n_i) - columns = 1 - 2 = -1 is not positive"),
        ({"matrix": [[3], [1]]}, "row 2: Calabi-Yau condition fails in row 1: degrees sum to 1, so n_1 = 0 < 1"),
        ({"matrix": [[3, 0], [3, 0]]}, "row 2: matrix column 1 is zero (an equation of degree zero)"),
        ({"matrix": [[3], [3, 1]]}, "row 2: ragged matrix: row 1 has 2 entries, row 0 has 1"),
        ({"matrix": [[-3], [3]]}, "row 2: matrix entry (0,0) = -3 is negative"),
        ({"my_invariant": 2.5}, "row 2: my_invariant = 2.5 is not an integer"),
        ({"id": "quintic"}, "row 2: id 'quintic' is repeated (first at row 1)"),
    ],
)
def test_a_bad_row_of_a_data_file_is_one_line_naming_the_row(tmp_path, change, reason):
    path = _write(tmp_path, [ROWS[0], {**ROWS[1], **change}, ROWS[2]], ".json")
    with pytest.raises(CicyError) as e:
        data.load(path)
    assert str(e.value) == f"{path}: {reason}"


def test_whole_file_mistakes_are_one_line(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("id,h11\nx,1\n")
    with pytest.raises(CicyError, match=r"a.csv: a data file needs a header row with a 'matrix' column \(columns found: id, h11\)"):
        data.load(str(csv))
    csv.write_text('matrix,h11\n"[[5]]",1,7\n')
    with pytest.raises(CicyError, match=r"a.csv: row 1: more cells than the header's 2 columns"):
        data.load(str(csv))
    csv.write_text('matrix,my-invariant\n"[[5]]",1\n')
    with pytest.raises(CicyError, match="column 'my-invariant': a target name must be an identifier"):
        data.load(str(csv))
    with pytest.raises(CicyError, match="missing.csv: no such file"):
        resolve({"data": {"dataset": str(tmp_path / "missing.csv")}})


def test_a_config_on_a_data_file_checks_its_targets(tmp_path):
    path = _write(tmp_path, ROWS, ".csv")
    assert resolve({"data": {"dataset": path, "targets": ["my_invariant"]}})["data"]["targets"] == ["my_invariant"]
    with pytest.raises(CicyError) as e:
        resolve({"data": {"dataset": path, "targets": ["h21"]}})
    assert str(e.value) == f"data.targets: unknown target 'h21' for the data file {path}: choose from h11, my_invariant"
    with pytest.raises(CicyError, match="data.physics: derives Hodge numbers from the exact Euler number of the shipped"):
        resolve({"data": {"dataset": path, "targets": ["h11"], "physics": True}})
    with pytest.raises(CicyError, match="data.targets: unknown target 'n_moduli' for the original list: choose from h11, h21"):
        resolve({"data": {"targets": ["n_moduli"]}})


def test_a_data_file_trains_splits_stratified_and_predicts_its_own_target(tmp_path):
    """The first 240 matrices of the original list with a target the package has never heard of (h11 + h21)."""
    full = data.load("original")
    rows = [{"matrix": full.x[i][: int(full.frame["rows"][i]), : int(full.frame["cols"][i])].astype(int).tolist(),
             "n_moduli": int(full.frame["h11"][i] + full.frame["h21"][i])} for i in range(240)]
    path = _write(tmp_path, rows, ".json")
    c = resolve({"data": {"dataset": path, "targets": ["n_moduli"]}, "model": {"family": "my_plugins:good"}, "train": {"epochs": 2}})
    prepared = training.prepare(c)
    assert prepared.shape == data.source(path).padding and prepared.targets[0].name == "n_moduli"
    # stratified as the shipped lists are: every class with 10 or more members is split 80/10/10
    y = {s: prepared.y[s]["n_moduli"] for s in training.SPLITS}
    for value in np.unique(y["train"]):
        total = sum(int((y[s] == value).sum()) for s in training.SPLITS)
        if total >= 10:
            assert int((y["val"] == value).sum()) == round(0.1 * total)
    result = training.fit(c, prepared)
    assert {"train_n_moduli_accuracy", "val_n_moduli_accuracy", "test_n_moduli_accuracy", "test_permuted_n_moduli_accuracy"} <= set(result.metrics)
    assert not any("physics" in k for k in result.metrics)
    folder = bundle.save(tmp_path / "b", result.model, c, result.targets)
    loaded = bundle.load(folder)
    assert loaded.shape == data.source(path).padding and loaded.outputs == ["n_moduli"]
    np.testing.assert_array_equal(loaded.predict(prepared.matrices["test"])["n_moduli"],
                                  training.predict(result.model, prepared.x["test"], result.targets, "classification")["n_moduli"])


def test_predict_gives_every_configured_target_derived_ones_included(tmp_path):
    """koszul_linear learns h11 and derives h21 (data.physics): predict prints both."""
    from cicy_search.config import load_config
    from cicy_search.serving.predict import predict_frame

    c = load_config("koszul_linear", {"data": {"limit": 300, "features": [], "canonical": False}, "train": {"epochs": 1}})
    result = training.fit(c)
    assert [t.name for t in result.targets] == ["h11"]
    loaded = bundle.load(bundle.save(tmp_path / "b", result.model, c, result.targets))
    frame = predict_frame(loaded, [[[5]], [[3], [3]]])
    assert list(frame.columns) == ["h11", "h21", "error"]
    # h21 = h11 - euler / 2, with the quintic's and the bicubic's exact Euler numbers -200 and -162
    assert [r.h21 - r.h11 for r in frame.itertuples()] == [100, 81]


def test_userdata_dimension_of_a_4_fold_file(tmp_path):
    path = _write(tmp_path, [{"matrix": [[6]], "t": 1}, {"matrix": [[2], [5]], "t": 2}], ".json")
    assert data.source(path).dimension == 4 and userdata.read(path).padding == (2, 1)
    with pytest.raises(CicyError, match="data.features: the invariant channels"):
        resolve({"data": {"dataset": path, "targets": ["t"], "features": ["euler"]}})


def test_plugin_files_are_the_module_or_its_package(plugin_folder):
    assert models.family("my_plugins:good").files == (str(plugin_folder / "my_plugins.py"),)
    assert "my_plugins" in sys.modules


def test_the_json_schema_takes_a_data_files_own_targets_and_a_plugins_declared_params():
    import jsonschema

    from cicy_search import config as config_module

    check = jsonschema.Draft202012Validator(config_module.json_schema())
    assert list(check.iter_errors({"data": {"dataset": "mine.csv", "targets": ["n_moduli"]}})) == []
    assert list(check.iter_errors({"data": {"targets": ["n_moduli"]}}))  # the shipped lists have h11, h21 only
    anything = {"model": {"family": "my_plugins:good", "params": {"width": 65}}}
    assert list(check.iter_errors(anything)) == []  # any plugin's params, until the schema is asked to describe it
    check = jsonschema.Draft202012Validator(config_module.json_schema(("my_plugins:good",)))
    assert list(check.iter_errors({"model": {"family": "my_plugins:good", "params": {"width": 64, "act": "tanh"}}})) == []
    assert list(check.iter_errors({"model": {"family": "my_plugins:good", "params": {"width": 65}}}))
    assert list(check.iter_errors({"model": {"family": "my_plugins:good", "params": {"act": "gelu"}}}))


TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "own-model.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", TUTORIAL.read_text(), re.S)


@pytest.mark.slow
def test_the_tutorials_yaml_blocks_load_through_the_loader(monkeypatch):
    """Run configs resolve, study files parse (beside the examples they name), as the tutorial shows them."""
    from cicy_search.config import parse_yaml
    from cicy_search.search.studyfile import parse

    root = TUTORIAL.parents[2]
    monkeypatch.chdir(root)  # the tutorial runs every command from the repository's root
    monkeypatch.syspath_prepend(str(root / "examples"))
    blocks = [parse_yaml(text) for text in _blocks("yaml")]
    assert len(blocks) == 2
    for raw in blocks:
        if "study" in raw:
            assert parse(raw, folder=root / "examples").params
        else:
            assert resolve(raw)["model"]["params"]
    example = yaml.safe_load((root / "examples" / "matrix_attention.yaml").read_text())
    assert blocks[0] == example  # the page shows the file the tests run
    assert blocks[1] == yaml.safe_load((root / "examples" / "matrix_attention_study.yaml").read_text())
    assert json.loads(_blocks("json")[0])[0]["matrix"] == [[5]]


def test_the_tutorials_commands_exist(capsys):
    commands = [line.split("cicy-search ", 1)[1].split() for text in _blocks("bash") for line in text.splitlines()
                if "cicy-search " in line]
    assert len(commands) >= 8
    for words in commands:
        path = [w for w in words[:2] if not w.startswith(("-", "examples/", "exports/"))]
        assert run_cli(*path, "--help") == 0, words
