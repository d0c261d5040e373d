import pytest

from cicy_search.config import flatten, load_config, resolve, shipped_configs
from cicy_search.errors import CicyError


def test_empty_config_is_the_seed_talks_dense_network():
    c = resolve({})
    assert c["model"] == {
        "family": "dense", "head": "classification", "activation": "relu", "l1": 0.0, "l2": 0.0,
        "dropout": 0.0, "batch_norm": False, "depth": 3, "width": 128,
    }
    assert c["data"]["targets"] == ["h11"] and c["train"]["batch_size"] == 32


@pytest.mark.parametrize(
    "config, message",
    [
        ({"model": {"family": "transformer"}}, "unknown model family 'transformer'"),
        ({"model": {"family": "dense", "filters": 3}}, "unknown key model.filters"),
        ({"model": {"depth": "three"}}, "model.depth: expected an integer"),
        ({"model": {"dropout": 1.5}}, "model.dropout: expected a rate"),
        ({"train": {"epochs": 0}}, "train.epochs: expected a positive integer"),
        ({"trian": {}}, "unknown key 'trian'"),
        ({"data": {"targets": ["h12"]}}, "unknown target 'h12'"),
        ({"data": {"train": 0.9, "val": 0.2}}, "split fractions"),
        ({"model": {"depth": 2, "width": [64, 64, 64]}}, "model.width: 3 values given for depth = 2"),
        ({"model": {"family": "inception", "kernels": "12x1,banana"}}, "model.kernels"),
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
