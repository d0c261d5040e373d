"""Weight histograms and near-zero fractions: what L1 and L2 do, measured on real (tiny) trained networks."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cicy_search.config import resolve
from cicy_search.models import Target, build
from cicy_search.experiments import compare
from cicy_search.reporting import weights
from cicy_search.training import fit

from .conftest import run_cli, tiny

ROOT = Path(__file__).resolve().parents[1]
H11 = [Target("h11", 1, 19)]


def test_kernels_are_labelled_by_position_and_shape_not_by_keras_names():
    first, second = (build(resolve({}), (12, 15), H11) for _ in range(2))
    labels = [label for label, _ in weights.kernels(first)]
    assert labels == ["layer 1 (180x128)", "layer 2 (128x128)", "layer 3 (128x128)", "output (128x19)"]
    assert [label for label, _ in weights.kernels(second)] == labels  # Keras named the layers dense_4, ... here
    assert len(weights.groups({"a": first, "b": second})) == 1
    svm = build(resolve({"model": {"family": "svm"}}), (12, 15), H11)
    assert weights.kernels(svm) == [] and weights.groups({"svm": svm}) == [] and weights.sections({"svm": svm}) == []


def test_summary_counts_the_weights_below_each_threshold():
    model = build(resolve({"model": {"depth": 1, "width": 4}}), (12, 15), H11)
    kernel = np.full((180, 4), 0.5, dtype=np.float32)
    kernel[:45] = 0.0005  # a quarter below 1e-3
    kernel[45:90] = 0.005  # another quarter below 1e-2 only
    model.layers[2].kernel.assign(kernel)
    row = weights.summary({"m": model}).iloc[0]
    assert row["layer"] == "layer 1 (180x4)" and row["weights"] == 720
    assert row["frac_below_0.001"] == 0.25 and row["frac_below_0.01"] == 0.5
    assert row["max_abs"] == pytest.approx(0.5) and row["mean_abs"] == pytest.approx((0.0005 + 0.005 + 2 * 0.5) / 4)


@pytest.mark.slow
def test_l1_piles_weights_at_zero_and_l2_shrinks_them():
    """Same data, seed and epochs: L1 leaves far more first-layer weights within 1e-3 of zero; L2 a smaller mean |w|."""
    models = {name: fit(tiny(limit=600, epochs=8, **m)).model for name, m in
              {"none": {}, "L1": {"l1": 0.001}, "L2": {"l2": 0.001}}.items()}
    table = weights.summary(models).set_index(["run", "layer"])
    first = "layer 1 (180x128)"
    assert table.loc[("L1", first), "frac_below_0.001"] > 2 * table.loc[("none", first), "frac_below_0.001"]
    assert table.loc[("L2", first), "mean_abs"] < table.loc[("none", first), "mean_abs"]
    fig = weights.figure({n: weights.kernels(m) for n, m in models.items()})
    assert len(fig.data) == 2 * 3 * 4  # a histogram and a bar per run and layer
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.y[0] for b in bars[:3]] == pytest.approx([table.loc[(n, first), "frac_below_0.001"] for n in models])


def test_shrinkage_figure_is_soft_thresholding_and_division():
    fig = weights.shrinkage_figure(l1=1.0, l2=1.0)
    curves = {t.name.split(" ")[0] if t.name != "L1 + L2" else t.name: (np.asarray(t.x), np.asarray(t.y)) for t in fig.data}
    w, l2 = curves["L2"]
    np.testing.assert_allclose(l2, w / 2)
    w, l1 = curves["L1"]
    assert (l1[np.abs(w) <= 1.0] == 0).all()  # exactly zero inside the threshold
    np.testing.assert_allclose(l1[w > 1], w[w > 1] - 1)
    np.testing.assert_allclose(curves["L1 + L2"][1], l1 / 2)


@pytest.mark.slow
def test_recipe_report_shows_weights_next_to_curves_and_logs_fractions(mlflow_client, tracking_uri, tmp_path):
    recipe = tmp_path / "reg.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "reg", "experiment": "test-reporting-weights",
        "override": {"data": {"limit": 400}, "train": {"epochs": 2}}, "runs": ["dense", "dense_l1", "dense_l2"],
    }))
    out = tmp_path / "reg.html"
    assert run_cli("report", "recipe", str(recipe), "--tracking-uri", tracking_uri, "--out", str(out), "--no-png") == 0
    folder = out.with_suffix("")
    table = pd.read_csv(folder / "weights_table.csv")
    assert list(dict.fromkeys(table["run"])) == ["dense", "dense_l1", "dense_l2"]
    assert {p.name for p in folder.glob("weights_*.json")} == {"weights_1.json", "weights_2.json"}  # histograms, theory
    html = out.read_text()
    assert html.index('id="learning_curves"') < html.index('id="weights"')
    exp = mlflow_client.get_experiment_by_name("test-reporting-weights")
    runs = {r.data.params.get("name"): r for r in mlflow_client.search_runs([exp.experiment_id])}
    frac = table[table["run"] == "dense_l1"]
    expected = (frac["frac_below_0.001"] * frac["weights"]).sum() / frac["weights"].sum()
    assert runs["dense_l1"].data.metrics["weights_frac_below_0.001"] == pytest.approx(expected)


def test_shipped_regularization_recipe_is_none_l1_l2_both_and_dropout():
    configs = compare.recipe_configs(compare.load_recipe(ROOT / "recipes" / "regularization.yaml"))
    got = [(c["name"], c["model"]["l1"], c["model"]["l2"], c["model"]["dropout"]) for c in configs]
    assert got == [
        ("dense", 0.0, 0.0, 0.0),
        ("dense_l1", 0.001, 0.0, 0.0),
        ("dense_l2", 0.0, 0.001, 0.0),
        ("dense_l1l2", 0.001, 0.001, 0.0),
        ("dense_dropout", 0.0, 0.0, 0.2),
    ]
    assert {c["train"]["epochs"] for c in configs} == {20} and {c["train"]["early_stopping"] for c in configs} == {0}
