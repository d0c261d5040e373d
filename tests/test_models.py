import pytest

from cicy_search.config import resolve
from cicy_search.models import Target, build
from cicy_search.training import fit, prepare

from .conftest import tiny

H11 = [Target("h11", 1, 19)]


def test_default_dense_is_the_talks_network_with_58643_parameters():
    model = build(resolve({}), (12, 15), H11)
    assert model.count_params() == 58643
    assert [layer.units for layer in model.layers if hasattr(layer, "units")] == [128, 128, 128, 19]


def test_default_inception_has_234849_parameters():
    model = build(resolve({"model": {"family": "inception"}}), (12, 15), H11)
    assert model.count_params() == 234849


def test_class_range_comes_from_the_data_not_a_typed_number():
    prepared = prepare(tiny())
    assert prepared.targets == [Target("h11", 1, 19)]
    with_products = prepare(resolve({"data": {"keep_products": True, "limit": 600}}))
    assert with_products.targets[0].n_classes == 20  # h11 = 0..19
    h21 = prepare(resolve({"data": {"targets": ["h21"], "limit": 600}}))
    assert h21.targets[0].low == 15 and h21.targets[0].high == 101


@pytest.mark.parametrize(
    "family, extra",
    [
        ("dense", {}),
        ("dense", {"head": "regression", "batch_norm": True, "dropout": 0.1, "l1": 1e-4}),
        ("cnn", {"filters": [4, 8], "dense_width": 16}),
        ("inception", {"filters": [4, 4], "modules": 2, "kernels": "12x1,1x15,3x3"}),
        ("svm", {}),
        ("svm", {"head": "classification"}),
    ],
)
def test_each_family_trains_on_a_slice_of_the_real_data(family, extra):
    result = fit(tiny(family, limit=400, epochs=2, **extra))
    for split in ("train", "val", "test"):
        assert 0.0 <= result.metrics[f"{split}_accuracy"] <= 1.0
    if family == "svm":
        # Better than always guessing the commonest h11 (about 18% of the list) on the data it was fit on.
        assert result.metrics["train_accuracy"] > 0.3
    else:
        assert len(result.history["loss"]) == 2 and len(result.history["val_accuracy"]) == 2
        assert result.history["loss"][1] < result.history["loss"][0]


def test_multi_task_head_predicts_both_hodge_numbers():
    config = resolve({"data": {"targets": ["h11", "h21"], "limit": 400}, "model": {"head": "regression"}, "train": {"epochs": 2}})
    result = fit(config)
    assert set(result.model.output_names) == {"h11", "h21"}
    assert {"val_h11_accuracy", "val_h21_accuracy", "val_h21_mae"} <= set(result.metrics)
    assert result.metrics["val_accuracy"] == pytest.approx(
        (result.metrics["val_h11_accuracy"] + result.metrics["val_h21_accuracy"]) / 2
    )


def test_same_seed_same_result():
    a, b = fit(tiny(limit=300)), fit(tiny(limit=300))
    assert a.history["loss"] == b.history["loss"]
    assert a.metrics["val_accuracy"] == b.metrics["val_accuracy"]


def test_pooling_too_deep_for_the_matrix_is_a_clear_error():
    from cicy_search.errors import CicyError

    with pytest.raises(CicyError, match="cannot be built"):
        build(resolve({"model": {"family": "cnn", "depth": 6, "padding": "valid", "kernel_size": [5, 5]}}), (12, 15), H11)
