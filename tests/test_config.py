import pytest

from cicy_search.config import config_path, flatten, load_config, load_file, resolve, shipped_configs
from cicy_search.errors import CicyError


def test_empty_config_is_the_seed_talks_dense_network():
    c = resolve({})
    assert c["model"] == {
        "family": "dense", "head": "classification", "activation": "relu", "l1": 0.0, "l2": 0.0,
        "dropout": 0.0, "batch_norm": False, "rows_offset": False, "depth": 3, "width": 128,
    }
    assert c["data"]["targets"] == ["h11"] and c["train"]["batch_size"] == 32


@pytest.mark.parametrize(
    "config, message",
    [
        ({"model": {"family": "transformer"}}, "unknown model family 'transformer'"),
        ({"model": {"family": "dense", "filters": 3}}, "unknown key model.filters"),
        ({"model": {"depth": "three"}}, "model.depth: expected an integer"),
        ({"model": {"dropout": 1.5}}, "model.dropout: expected a rate"),
        ({"train": {"epochs": 0}}, "train.epochs: expected an integer from 1 to 100,000, got 0"),
        ({"trian": {}}, "unknown key 'trian'"),
        ({"data": {"targets": ["h12"]}}, "unknown target 'h12'"),
        ({"data": {"train": 0.9, "val": 0.2}}, "split fractions"),
        ({"model": {"depth": 2, "width": [64, 64, 64]}}, "model.width: 3 values given for depth = 2"),
        ({"model": {"family": "inception", "kernels": "12x1,banana"}}, "model.kernels"),
        ({"model": {"family": "equivariant", "update_layers": 2}}, "model.update_layers: the row and column updates are layer: bipartite's"),
        ({"model": {"family": "equivariant", "layer": "bipartite", "update_layers": 0}}, "model.update_layers: expected an integer from 1 to 64, got 0"),
        ({"model": {"family": "equivariant", "layer": "bipartite", "update_layers": "two"}}, "model.update_layers: expected an integer"),
        ({"model": {"family": "dense", "update_layers": 2}}, "unknown key model.update_layers"),
        ({"train": {"ensemble": 0}}, "train.ensemble: expected an integer from 1 to 64, got 0"),
        ({"train": {"ensemble": 65}}, "train.ensemble: expected an integer from 1 to 64, got 65"),
        ({"train": {"ensemble": "three"}}, "train.ensemble: expected an integer"),
        ({"train": {"ensemble": 2.5}}, "train.ensemble: expected an integer"),
        ({"model": {"family": "svm"}, "train": {"ensemble": 2}}, "train.ensemble: averages neural networks"),
        ({"model": {"rows_offset": True, "head": "regression"}}, "model.rows_offset: offsets a classification head of h11"),
        ({"model": {"rows_offset": True}, "data": {"targets": ["h21"]}}, "model.rows_offset: offsets a classification head of h11"),
        ({"model": {"rows_offset": "yes"}}, "model.rows_offset: expected"),
        ({"model": {"family": "svm", "rows_offset": True}}, "unknown key model.rows_offset"),
    ],
)
def test_bad_configs_fail_with_one_line_naming_the_key(config, message):
    with pytest.raises(CicyError) as e:
        resolve(config)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_kernel_shapes_in_every_spelling():
    one = resolve({"model": {"family": "inception", "kernels": "12x1,1x15"}})["model"]["kernels"]
    assert one == [[12, 1], [1, 15]]
    assert resolve({"model": {"family": "inception", "kernels": [[12, 1], [1, 15]]}})["model"]["kernels"] == one
    per = resolve({"model": {"family": "inception", "modules": 2, "filters": 8, "kernels": ["3x3", "12x1,1x15"]}})
    assert per["model"]["kernels"] == [[[3, 3]], [[12, 1], [1, 15]]]


def test_shipped_examples_all_resolve():
    names = set(shipped_configs())
    assert {"dense", "dense_l1l2", "dense_dropout", "cnn", "inception", "svm"} <= names
    for name in names:
        assert load_config(name)["name"] == name
    assert load_config("dense_l1l2")["model"]["l1"] == 0.001


def test_flatten_gives_dotted_param_names():
    flat = flatten(resolve({}))
    assert flat["model.depth"] == 3 and flat["train.learning_rate"] == 0.001 and flat["data.targets"] == ["h11"]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"model": {"depth": 10**8}}, "model.depth: expected an integer from 1 to 64, got 100000000"),
        ({"train": {"epochs": 10**21}}, "train.epochs: expected an integer from 1 to 100,000, got 1000000000000000000000"),
        ({"model": {"width": 10**11}}, "model.width: expected an integer from 1 to 16,384"),
        ({"model": {"depth": 2, "width": [64, 10**11]}}, "model.width: expected an integer from 1 to 16,384"),
        ({"model": {"family": "cnn", "filters": 10**9}}, "model.filters: expected an integer from 1 to 16,384"),
        ({"model": {"family": "cnn", "kernel_size": "1000x3"}}, "model.kernel_size: expected an integer from 1 to 64"),
        ({"model": {"family": "inception", "modules": 10**6}}, "model.modules: expected an integer from 1 to 64"),
        ({"train": {"batch_size": 10**9}}, "train.batch_size: expected an integer from 1 to 65,536"),
        ({"train": {"lr_factor": 1.5}}, "train.lr_factor: expected a factor in (0, 1)"),
        ({"train": {"learning_rate": float("inf")}}, "train.learning_rate: expected a finite number"),
        ({"train": {"learning_rate": float("nan")}}, "train.learning_rate: expected a finite number"),
        ({"model": {"l2": 10**400}}, "model.l2: expected a finite number"),
        ({"seed": -1}, "seed: expected an integer from 0 to 4,294,967,295"),
        ({"data": {"seed": 2**40}}, "data.seed: expected an integer from 0 to 4,294,967,295"),
        ({"train": {"jit_compile": 1}}, "train.jit_compile: expected one of auto, True, False, got 1"),
        ({"data": {1: 2}}, "unknown key data.1"),
        ({"name": ["x" * 10**6]}, "name: expected a string"),  # and far too long to print
    ],
)
def test_out_of_bounds_values_fail_with_the_bounds_in_one_short_line(config, message):
    with pytest.raises(CicyError) as e:
        resolve(config)
    assert message in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 300


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train: {learning_rate: 1e-3}", 1e-3),
        ("train: {learning_rate: 1.0e-4}", 1e-4),
        ("train: {learning_rate: 5E-2}", 5e-2),
        ("train: {learning_rate: .5e-1}", 0.05),
        ("train: {learning_rate: 0.01}", 0.01),
    ],
)
def test_exponents_without_a_dot_are_numbers(tmp_path, text, expected):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert load_config(path)["train"]["learning_rate"] == pytest.approx(expected)


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{k}: &{k} [{', '.join(['*' + p] * 10)}]\n" for p, k in zip("abcdefg", "bcdefgh")
)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"model: {depth: 2}\nmodel: {depth: 3}\n", "not valid YAML at line 2: duplicate key 'model'"),
        (b"model: {depth: 2, depth: 3}\n", "not valid YAML at line 1: duplicate key 'depth'"),
        (b"train:\n  epochs: 3\n  epochs: 4\n", "not valid YAML at line 3: duplicate key 'epochs'"),
        (LAUGHS.encode(), "aliases expand to more than 10,000 values"),
        (b"model: {depth: [\n", "not valid YAML at line 2"),
        (b"- 1\n- 2\n", "expected a YAML mapping at the top level"),
        (b"name: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 9)"),
        (b"\xff\xfen\x00a\x00", "not UTF-8 text (byte 0xff at offset 0)"),
        (b"a: " + b"[" * 5000 + b"]" * 5000, "nested too deep"),
    ],
)
def test_bad_yaml_files_fail_with_one_line_naming_the_file_once(tmp_path, content, message):
    path = tmp_path / "run.yaml"
    path.write_bytes(content)
    with pytest.raises(CicyError) as e:
        load_config(path)
    text = str(e.value)
    assert text.startswith(f"{path}: ") and text.count(str(path)) == 1 and message in text and "\n" not in text


def test_yaml_merges_may_override_and_a_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes("\ufeffdefaults: &d {depth: 2, width: 16}\n".encode() + b"x: {<<: *d, width: 8}\n")
    assert load_file(path) == {"defaults": {"depth": 2, "width": 16}, "x": {"depth": 2, "width": 8}}


def test_missing_files_and_folders_are_told_apart(tmp_path):
    with pytest.raises(CicyError, match="missing.yaml: no such file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(CicyError, match=": is a folder, expected a file"):
        load_config(tmp_path)


def test_load_config_looks_beside_the_folder_then_the_path_then_the_shipped_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "dense").write_text("model: {width: 16}\n")  # beside the recipe, shadows the shipped one
    (tmp_path / "mine.yaml").write_text("model: {width: 24}\n")
    assert load_config("dense", folder=tmp_path / "recipes")["model"]["width"] == 16
    assert load_config("mine.yaml", folder=tmp_path / "recipes")["model"]["width"] == 24  # not beside: the path
    assert load_config("dense", folder=tmp_path / "studies")["model"]["width"] == 128  # neither: shipped
    assert config_path("nowhere", tmp_path) is None


def test_load_config_merges_overrides_section_by_section_and_says_whose_error_it_is(tmp_path):
    c = load_config("dense_l1l2", {"train": {"epochs": 3}, "seed": 7})
    assert c["train"]["epochs"] == 3 and c["seed"] == 7 and c["model"]["l1"] == 0.001  # the rest of the file stays
    assert load_config(None, {"model": {"depth": 2}})["model"]["depth"] == 2
    with pytest.raises(CicyError) as e:  # only the override is wrong: no file named
        load_config("dense", {"train": {"epochs": 0}})
    assert str(e.value).startswith("train.epochs: expected an integer")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {depth: 0}\n")
    with pytest.raises(CicyError) as e:  # the file is wrong: named, whatever the overrides
        load_config(bad, {"train": {"epochs": 2}})
    assert str(e.value).startswith(f"{bad}: model.depth: expected an integer")


@pytest.mark.parametrize(
    "extra", [{}, {"name": "h11 — ünïcode: 'quoted' # not a comment"}, {"name": "1e-3", "note": "2E5"}, {"name": "yes", "note": "0x10"}]
)
def test_dumped_configs_read_back_the_same(extra):
    """``dump_yaml`` (libyaml's emitter when there) writes every resolved shipped config, with awkward strings, as
    text that reads back unchanged (a run's description, a model's config.yaml); strings this project reads as
    numbers (``1e-3``, which PyYAML's own dumper leaves bare) are quoted; the C emitter writes the Python one's text."""
    import yaml

    from cicy_search.config import Dumper, dump_yaml, parse_yaml

    class PythonDumper(yaml.SafeDumper):
        yaml_implicit_resolvers = Dumper.yaml_implicit_resolvers

    for name in shipped_configs():
        config = {**load_config(name), **extra}
        config["train"] = {**config["train"], "learning_rate": 1e-3, "tiny": 1e-12, "big": 1e20, "inf": float("inf")}
        text = dump_yaml(config)
        assert text == yaml.dump(config, Dumper=PythonDumper, sort_keys=False)
        assert list(parse_yaml(text)) == list(config) and parse_yaml(text) == config
    assert "name: '1e-3'" in dump_yaml({"name": "1e-3"}) and yaml.safe_dump({"name": "1e-3"}) == "name: 1e-3\n"


@pytest.mark.parametrize(
    "config, message",
    [
        ({"model": {"family": ["dense"]}}, "unknown model family ['dense']: choose one of dense, cnn, inception, equivariant, svm"),
        ({"model": {"family": None}}, "unknown model family None"),
        ({"model": {"dropout": 10**100}}, "model.dropout: expected a rate in [0, 1), got " + "1" + "0" * 56 + "..."),
        ({"data": {"stratify": "x" * 10**4}}, "data.stratify: expected true or false, got 'xxxxxxxxxx"),
        ({"model": "dense"}, "model: expected a mapping of settings"),
        ({"train": [1]}, "train: expected a mapping of settings, got list"),
    ],
)
def test_odd_families_and_huge_values_are_one_short_line(config, message):
    with pytest.raises(CicyError) as e:
        resolve(config)
    assert str(e.value).startswith(message) and len(str(e.value)) < 200


def test_null_sections_and_the_order_of_the_keys_are_as_written_in_the_schema():
    from cicy_search.config import FAMILIES

    assert resolve({"data": None, "model": None, "train": None}) == resolve({})
    assert list(resolve({})) == ["name", "seed", "data", "model", "train"]
    for family, section in FAMILIES.items():
        assert list(resolve({"model": {"family": family}})["model"]) == list(section.model_fields)
