import keras
import numpy as np
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


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dense", "inception"])
def test_regression_output_starts_alive_mid_range_for_every_seed(family):
    """A ReLU output with a zero bias can start negative on every input (then its gradient is 0 and it never
    trains: dense_koszul's seed 2 did); starting at the middle of the target's range it is alive."""
    import keras

    config = tiny(family, limit=300, head="regression")
    prepared = prepare(config)
    x = prepared.x["train"][:200].astype(np.float32)
    for seed in range(4):
        keras.utils.set_random_seed(seed)
        out = np.asarray(build(config, prepared.shape, prepared.targets)(x, training=False)).ravel()  # what predict gives
        assert (out > 0).mean() > 0.9, (seed, out[:5])
        assert 1 < np.median(out) < 19


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def dense_run():
    """A tiny dense run, read by the tests below (marked to run on one pytest-xdist worker: trained once)."""
    return fit(tiny(limit=400, epochs=2))


@pytest.mark.slow
@pytest.mark.xdist_group("models_dense_run")
def test_same_seed_same_result(dense_run):
    a, b = dense_run, fit(tiny(limit=400, epochs=2))  # other tests may have trained between the two: still the same
    assert a.history["loss"] == b.history["loss"]
    assert a.metrics["val_accuracy"] == b.metrics["val_accuracy"]


def test_pooling_too_deep_for_the_matrix_is_a_clear_error():
    from cicy_search.errors import CicyError

    with pytest.raises(CicyError, match="cannot be built"):
        build(resolve({"model": {"family": "cnn", "depth": 6, "padding": "valid", "kernel_size": [5, 5]}}), (12, 15), H11)


@pytest.mark.parametrize(
    "model",
    [
        {"layer": "exchangeable", "depth": 2, "width": 16, "pooling": "mean"},
        {"layer": "exchangeable", "depth": 1, "width": 8, "pooling": "max", "embedding": "linear", "norm": "none", "residual": False},
        {"layer": "bipartite", "depth": 2, "width": 16, "pooling": "sum"},
        {"layer": "bipartite", "depth": 1, "width": 8, "pooling": "max", "dropout": 0.1},
        {"layer": "bipartite", "depth": 2, "width": 8, "pooling": "mean", "update_layers": 3},
    ],
)
@pytest.mark.parametrize("features", [[], ["euler", "c2"]])
def test_equivariant_predictions_do_not_change_under_row_and_column_permutations(model, features):
    from cicy_search import data

    config = resolve({"model": {"family": "equivariant", "head_width": 16, **model}, "data": {"features": features}})
    x = data.load().x[::60]
    inputs = data.model_inputs(x, features=features)
    keras.utils.set_random_seed(0)  # the same initial weights in every run
    net = build(config, inputs.shape[1:], H11)
    before = np.asarray(net(inputs, training=False))
    for seed in (0, 1):
        after = np.asarray(net(data.model_inputs(data.permute(x, seed), features=features), training=False))
        # Summed in another order, float32 logits round differently: with sum pooling the softmax probabilities
        # moved by up to 1e-5 over initial weights (a model that is not invariant moves them by tenths).
        assert np.allclose(before, after, rtol=0, atol=5e-5)
    # Not a constant function: different manifolds get different outputs.
    assert np.ptp(before, axis=0).max() > 1e-4


@pytest.mark.slow
def test_equivariant_model_trains_saves_and_reloads(tmp_path):
    from cicy_search import bundle

    config = tiny("equivariant", limit=400, epochs=3, layer="bipartite", depth=2, width=16, head_width=16, update_layers=2)
    config["data"]["features"] = ["euler"]
    result = fit(resolve(config))
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.metrics["test_permuted_accuracy"] == result.metrics["test_accuracy"]  # exactly invariant
    loaded = bundle.load(bundle.save(tmp_path / "m", result.model, result.config, result.targets))
    from cicy_search.data import load

    x = load().x[:64]
    assert (loaded.predict(x)["h11"] == bundle.Loaded(result.model, result.config, result.targets).predict(x)["h11"]).all()
    # Two Dense layers per update, each row and column update of both layers, survive the round trip.
    updates = [w for w in loaded.model.weights if "/row/" in w.path or "/col/" in w.path]
    assert len(updates) == 2 * 2 * 2 * 2  # layers x (row, col) x Dense layers x (kernel, bias)
    assert len(result.model.get_weights()) == len(loaded.model.get_weights())
    for a, b in zip(result.model.get_weights(), loaded.model.get_weights()):
        assert np.array_equal(a, b)


def test_an_ensemble_is_its_members_averaged_each_the_run_of_its_own_seed_and_saves_as_one_model(tmp_path):
    from cicy_search import bundle
    from cicy_search.data import load
    from cicy_search.training import EpochCallback

    single = resolve(tiny("equivariant", limit=400, epochs=2, layer="bipartite", depth=2, width=12, head_width=12))
    config = resolve({**single, "train": {**single["train"], "ensemble": 3}})
    prepared = prepare(config)
    seen = []
    result = fit(config, prepared, callbacks=[EpochCallback(lambda epoch, logs: seen.append(epoch))])
    assert seen == list(range(6)) and result.epochs_run == 6 and len(result.history["val_accuracy"]) == 6
    members = result.model.members
    alone = [fit({**single, "seed": single["seed"] + k}, prepared) for k in (0, 2)]
    for member, one in zip((members[0], members[2]), alone):  # member k is the model of seed + k
        for a, b in zip(member.get_weights(), one.model.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(members[0].get_weights()[0], members[1].get_weights()[0])
    assert result.n_params == 3 * alone[0].n_params
    matrices = load().x[:64]
    x = matrices.astype(np.float32)
    outputs = [keras.ops.convert_to_numpy(m(x)) for m in members]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(result.model(x)), np.mean(outputs, axis=0), rtol=1e-5, atol=1e-7)
    assert result.metrics["test_permuted_accuracy"] == result.metrics["test_accuracy"]  # invariant members: invariant mean
    loaded = bundle.load(bundle.save(tmp_path / "m", result.model, result.config, result.targets))
    assert (loaded.predict(matrices)["h11"] == bundle.Loaded(result.model, result.config, result.targets).predict(matrices)["h11"]).all()
    assert [w.shape for w in loaded.model.get_weights()] == [w.shape for w in result.model.get_weights()]
    for a, b in zip(result.model.get_weights(), loaded.model.get_weights()):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("weights", ["saved.weights.h5", "/no/such/file.weights.h5"])
def test_an_ensemble_is_not_continued_from_saved_weights(weights):
    from cicy_search.errors import CicyError

    config = resolve({**tiny(limit=300), "train": {**tiny()["train"], "ensemble": 2}})
    with pytest.raises(CicyError, match="train.ensemble: a saved model is continued alone"):
        fit(config, initial_weights=weights, initial_epoch=1)


def test_update_layers_stack_dense_layers_in_each_bipartite_update():
    base = {"family": "equivariant", "layer": "bipartite", "depth": 2, "width": 8, "head_width": 8}
    counts = {}
    for layers in (1, 2, 3):
        net = build(resolve({"model": {**base, "update_layers": layers}}), (12, 15), H11)
        counts[layers] = net.count_params()
    # Each extra Dense layer is width x width + width parameters, in the row and the column update of each layer.
    assert counts[2] - counts[1] == counts[3] - counts[2] == 2 * 2 * (8 * 8 + 8)


@pytest.mark.slow
def test_physics_head_predicts_h21_exactly_as_well_as_h11():
    config = resolve({"data": {"targets": ["h11", "h21"], "physics": True, "limit": 600}, "train": {"epochs": 3}})
    result = fit(config)
    assert result.model.output_names == ["h11"]  # the network learns h11 only
    for split in ("train", "val", "test", "test_permuted"):
        assert result.metrics[f"{split}_h21_accuracy"] == result.metrics[f"{split}_h11_accuracy"]
    plain = fit(resolve({"data": {"limit": 600}, "train": {"epochs": 3}}))
    assert plain.metrics["val_h21_physics_accuracy"] == plain.metrics["val_h11_accuracy"]


def test_canonical_inputs_make_the_dense_network_permutation_invariant():
    config = resolve({"data": {"canonical": True, "limit": 600}, "train": {"epochs": 2}})
    result = fit(config)
    assert result.metrics["test_permuted_accuracy"] == result.metrics["test_accuracy"]


@pytest.mark.xdist_group("models_dense_run")
def test_permutation_augmentation_changes_training_but_not_evaluation(dense_run):
    plain = dense_run
    augmented = fit(resolve({**tiny(limit=400, epochs=2), "train": {**tiny()["train"], "epochs": 2, "augment": "permute"}}))
    assert augmented.history["loss"] != plain.history["loss"]
    assert augmented.history["loss"][1] < augmented.history["loss"][0] * 1.5


@pytest.mark.slow
def test_talk_inception_block_is_the_one_the_talk_prints():
    """Per branch: conv without bias -> batch norm without scale -> ReLU; branches concatenated (Schneider 2020)."""
    from cicy_search.config import load_config

    config = load_config("inception_talk")
    assert config["model"]["block"] == "talk"
    model = build(config, (12, 15), H11)
    params = {layer.name: layer.count_params() for layer in model.layers}
    assert params["b0_12x1_conv"] == 384 and params["b0_1x15_conv"] == 480
    assert params["b0_12x1_bn"] == 96 and params["b0_1x15_bn"] == 96
    assert not model.get_layer("b0_12x1_conv").use_bias and not model.get_layer("b0_12x1_bn").scale
    assert model.get_layer("b0_12x1_bn").center
    # Order inside a branch, and the concatenation of the activated branches.
    assert model.get_layer("b0_12x1_relu").input is model.get_layer("b0_12x1_bn").output
    assert model.get_layer("b0_12x1_bn").input is model.get_layer("b0_12x1_conv").output
    concat = model.get_layer("b0_concat")
    assert [t.name for t in concat.input] == [model.get_layer(n).output.name for n in ("b0_12x1_relu", "b0_1x15_relu")]
    assert model.get_layer("b1_12x1_conv").input is concat.output
    # The default block is unchanged (234,849 parameters, one batch norm after each concatenation).
    assert load_config("inception")["model"]["block"] == "concat_norm"
    # Per module of f filters: no conv biases (-2f) and per-branch batch norms without scale (2 x 3f) in place
    # of one batch norm with scale over the 2f concatenated channels (4 x 2f): 4f fewer.
    assert model.count_params() == 234849 - 4 * (32 + 64 + 32)
    result = fit(tiny("inception", limit=400, epochs=2, block="talk", filters=[4, 4], modules=2, kernels="12x1,1x15,3x3"))
    assert len(result.history["loss"]) == 2 and np.isfinite(result.history["loss"]).all()


def test_cnn_config_is_the_talks_cnn_with_pooling():
    """3x3 kernels, stride one, zero padding, each convolution followed by 2x2 max pooling."""
    import keras

    from cicy_search.config import load_config

    config = load_config("cnn")
    m = config["model"]
    assert (m["kernel_size"], m["strides"], m["padding"], m["pool"], m["pool_size"]) == ([3, 3], [1, 1], "same", "max", [2, 2])
    model = build(config, (12, 15), H11)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(convs) == len(pools) == 2
    assert all(c.kernel_size == (3, 3) and c.strides == (1, 1) and c.padding == "same" for c in convs)
    assert all(p.pool_size == (2, 2) for p in pools)
    assert tuple(convs[0].output.shape[1:3]) == (12, 15)  # zero padding, stride one: the matrix keeps its size
    assert tuple(pools[0].output.shape[1:3]) == (6, 8)


@pytest.mark.parametrize("depth, width", [(1, 16), (2, 8), (3, 4)])
def test_a_linear_activation_makes_the_dense_network_affine(depth, width):
    """activation: linear (configs/koszul_linear.yaml): before its ReLU output the network is affine in its input,
    so the output at a mixture of two inputs is the mixture of their outputs while both are positive."""
    import keras

    # Seeded: for some initial weights a narrow ReLU network is affine on these inputs too (no unit changes side),
    # so unseeded the last check depended on which tests had drawn random numbers before in the same process.
    keras.utils.set_random_seed(0)
    config = resolve({"model": {"head": "regression", "depth": depth, "width": width, "activation": "linear"}})
    model = build(config, (12, 15, 3), H11)
    rng = np.random.default_rng(depth)
    a, b = rng.random((2, 8, 12, 15, 3)).astype("float32") * 0.1
    out = [np.asarray(model(v, training=False)).ravel() for v in (a, b, 0.3 * a + 0.7 * b)]
    assert (out[0] > 0).all() and (out[1] > 0).all()
    assert np.allclose(out[2], 0.3 * out[0] + 0.7 * out[1], atol=1e-4)
    relu = build(resolve({"model": {"head": "regression", "depth": depth, "width": width}}), (12, 15, 3), H11)
    mixed = [np.asarray(relu(v, training=False)).ravel() for v in (a, b, 0.3 * a + 0.7 * b)]
    assert not np.allclose(mixed[2], 0.3 * mixed[0] + 0.7 * mixed[1], atol=1e-4)  # the default is not


@pytest.mark.parametrize(
    "model",
    [
        {"family": "dense", "depth": 1, "width": 16},
        {"family": "cnn", "depth": 1, "filters": 4, "dense_width": 8},
        {"family": "equivariant", "layer": "bipartite", "depth": 1, "width": 8, "head_width": 8},
    ],
)
def test_a_rows_offset_head_puts_no_probability_below_the_row_count(model):
    """h11 = rows + k: every matrix's h11 probabilities are a distribution over rows .. 19 only, moved with its row
    count (the same scores give class rows + k for any number of rows)."""
    from cicy_search import data

    d = data.load()
    all_rows = d.frame["rows"].to_numpy()
    pick = np.r_[[np.flatnonzero(all_rows == r)[0] for r in np.unique(all_rows)], np.arange(0, len(all_rows), 80)]
    x, rows = d.x[pick], all_rows[pick]
    keras.utils.set_random_seed(0)
    net = build(resolve({"model": {**model, "rows_offset": True}}), x.shape[1:], H11)
    p = np.asarray(net(x.astype("float32"), training=False))
    assert p.shape == (len(x), 19) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    below = np.arange(19)[None, :] < (rows - 1)[:, None]  # class c is h11 = c + 1
    assert p[below].max() == 0 and set(np.unique(rows)) == set(range(1, 13))
    # Its last Dense layer scores h11 - rows: the same scores, read for every row count.
    scores = keras.Model(net.inputs, net.get_layer("h11_offset").output)(x.astype("float32"))
    for i in range(len(x)):
        k = np.arange(19 - rows[i] + 1)
        expect = np.exp(scores[i][: len(k)] - np.max(scores[i][: len(k)]))
        assert np.allclose(p[i, rows[i] - 1 :], expect / expect.sum(), atol=1e-5)


def test_a_rows_offset_head_stays_permutation_invariant_trains_and_reloads(tmp_path):
    from cicy_search import bundle, data

    config = tiny("equivariant", limit=400, epochs=3, layer="bipartite", depth=1, width=16, head_width=16, rows_offset=True)
    result = fit(resolve(config))
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.metrics["test_permuted_accuracy"] == result.metrics["test_accuracy"]
    x = data.load().x[:64]
    loaded = bundle.load(bundle.save(tmp_path / "m", result.model, result.config, result.targets))
    predicted = loaded.predict(x)["h11"]
    assert (predicted == bundle.Loaded(result.model, result.config, result.targets).predict(x)["h11"]).all()
    assert (predicted >= data.load().frame["rows"].to_numpy()[:64]).all()
