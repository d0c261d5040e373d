"""The results table: cells as tracked runs, resume, and the summary read back from MLflow."""

import numpy as np
import pytest
import yaml

from cicy_search.experiments import results
from cicy_search.errors import CicyError


def _table(tmp_path, **changes):
    spec = {
        "name": "t",
        "experiment": "results-test",
        "fractions": [0.5],
        "seeds": [0, 1],
        "override": {"data": {"limit": 400}, "train": {"epochs": 1}},
        "rows": [{"name": "dense", "config": "dense"}, {"name": "physics", "config": "dense", "override": {"data": {"targets": ["h11", "h21"], "physics": True}}}],
        **changes,
    }
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_cells_train_once_resume_and_summarise_from_mlflow(tmp_path, mlflow_client):
    table = results.load_table(_table(tmp_path))
    said = []
    ran = results.run_table(table, mlflow_client, progress=said.append)
    assert len(ran) == 4 and sum("training" in s for s in said) == 4
    again = []
    assert results.run_table(table, mlflow_client, progress=again.append) == []  # resumed: nothing left to train
    assert sum("done already" in s for s in again) == 4
    records = {r["row"]: r for r in results.summarise(table, mlflow_client)}
    runs = [mlflow_client.get_run(i) for i in ran]
    dense = [r.data.metrics["test_h11_accuracy"] for r in runs if r.data.tags["table_row"] == "dense"]
    assert records["dense"]["seeds"] == 2
    assert records["dense"]["h11"] == pytest.approx((np.mean(dense), np.std(dense)))
    # The physics row's h21 is derived from h11: it goes to the physics column and equals h11.
    assert records["physics"]["h21"] is None and records["physics"]["h21_physics"] == records["physics"]["h11"]
    text = results.markdown(list(records.values()))
    assert "| dense | 50% | 2 |" in text and f"{100 * np.mean(dense):.2f}" in text
    # Each cell's run, found again by its config: the one that trained it.
    row = next(r for r in table["rows"] if r["name"] == "dense")
    by_seed = {int(r.data.tags["table_seed"]): r.info.run_id for r in runs if r.data.tags["table_row"] == "dense"}
    for seed in table["seeds"]:
        assert results.cell_run(mlflow_client, table, row, row["fractions"][0], seed).info.run_id == by_seed[seed]
    assert results.cell_run(mlflow_client, table, row, 0.25, table["seeds"][0]) is None  # a fraction not trained


def test_a_cell_of_another_config_is_not_taken_for_done(tmp_path, mlflow_client):
    first = results.load_table(_table(tmp_path, seeds=[3], rows=[{"name": "d", "config": "dense"}]))
    assert len(results.run_table(first, mlflow_client, progress=lambda s: None)) == 1
    changed = results.load_table(_table(tmp_path, seeds=[3], rows=[{"name": "d", "config": "dense", "override": {"model": {"width": 16}}}]))
    assert len(results.run_table(changed, mlflow_client, progress=lambda s: None)) == 1


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"rows": []}, "rows: expected a list of rows"),
        ({"rows": [{"name": "x"}]}, "rows[0]: expected a mapping with name and config"),
        ({"rows": [{"name": "x", "config": "dense", "colour": 1}]}, "rows[0]: unknown key 'colour'"),
        ({"rows": [{"name": "x", "config": "no_such_config"}]}, "no_such_config"),
        ({"rows": [{"name": "x", "config": "dense", "override": {"model": {"depth": 0}}}]}, "model.depth"),
        ({"colour": 1}, "unknown key 'colour'"),
        ({"rows": [{"name": "a, b", "config": "dense"}]}, "rows[0]: name 'a, b': expected a text without commas"),
        ({"rows": [{"name": 7, "config": "dense"}]}, "rows[0]: name 7: expected a text without commas"),
        ({"rows": [{"name": "x", "config": "dense"}, {"name": "x", "config": "svm"}]}, "rows[1]: a second row named 'x'"),
    ],
)
def test_a_wrong_table_fails_at_load_with_one_line(tmp_path, changes, message):
    with pytest.raises(CicyError) as e:
        results.load_table(_table(tmp_path, **changes))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("rows", [["nope"], ["dense", "nope"], ["dense", "ensemble of 3"]])
def test_rows_naming_one_that_is_not_in_the_table_train_nothing(tmp_path, mlflow_client, rows):
    table = results.load_table(_table(tmp_path))
    before = len(results._runs(mlflow_client, table))
    said = []
    with pytest.raises(CicyError) as e:
        results.run_table(table, mlflow_client, rows=rows, progress=said.append)
    assert str(e.value) == f"--rows: no row named {rows[-1]!r} in table 't'"
    assert said == [] and len(results._runs(mlflow_client, table)) == before  # nothing trained


@pytest.mark.parametrize("section, key, other", [("train", "ensemble", 3), ("model", "rows_offset", True)])
def test_a_key_added_at_its_neutral_default_keeps_older_cells_done(tmp_path, section, key, other):
    table = results.load_table(_table(tmp_path))
    cell = results.cell_config(table["rows"][0], 0.5, 0, table["val"])
    older = {**cell, section: {k: v for k, v in cell[section].items() if k != key}}  # trained before the key
    assert key in cell[section] and results._digest(cell) == results._digest(older)
    assert results._digest({**cell, section: {**cell[section], key: other}}) != results._digest(cell)
