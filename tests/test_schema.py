"""The typed schema: the JSON Schemas shipped in schemas/ are the generated ones, every shipped file passes both them
and the loader, the reference rows cover every key the loader fills in, and the two agree on malformed input."""

import functools
import json
from pathlib import Path

import jsonschema
import pytest

from cicy_search import config, data
from cicy_search.config import flatten, load_config, load_file, resolve
from cicy_search.errors import CicyError
from cicy_search.search import studyfile

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = {"config": config.json_schema, "study": studyfile.json_schema}
RUN_CONFIGS = sorted((ROOT / "cicy_search" / "configs").glob("*.yaml")) + sorted(
    p for p in (ROOT / "recipes").glob("*.yaml") if set(load_file(p)) <= {"name", "seed", "data", "model", "train"}
)
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))


@functools.cache  # generating and checking a schema takes a quarter of a second; the tests only read it
def validator(kind):
    schema = SCHEMAS[kind]()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("kind", SCHEMAS)
def test_the_shipped_schemas_are_the_generated_ones(kind):
    shipped = json.loads((ROOT / "schemas" / f"{kind}.schema.json").read_text())
    assert shipped == SCHEMAS[kind](), f"regenerate: cicy-search schema {kind} --out schemas/{kind}.schema.json"


def test_every_shipped_file_passes_the_json_schema_and_the_loader():
    assert len(RUN_CONFIGS) >= 16 and len(STUDIES) >= 11  # the recipes' two best-trial configs among them
    configs, studies = validator("config"), validator("study")
    for path in RUN_CONFIGS:
        assert list(configs.iter_errors(load_file(path))) == [], path
        load_config(path)
    for path in STUDIES:
        raw = load_file(path)
        assert list(studies.iter_errors(raw)) == [], path
        if not str(raw.get("data", {}).get("dataset", "")).endswith(".npz"):  # a 4-fold list is imported first
            studyfile.load(path)


def test_defaults_bounds_and_choices_are_in_the_json_schema():
    defs = config.json_schema()["$defs"]
    assert defs["Train"]["properties"]["epochs"] == {
        "default": 20, "description": "Passes over the training split, at most.", "maximum": 100_000, "minimum": 1, "type": "integer",
    }
    assert defs["Data"]["properties"]["train"]["minimum"] == 0 and defs["Data"]["properties"]["train"]["maximum"] == 1
    assert defs["Train"]["properties"]["learning_rate"]["exclusiveMinimum"] == 0
    assert defs["Train"]["properties"]["jit_compile"]["enum"] == ["auto", True, False]
    assert defs["Inception"]["properties"]["l2"]["default"] == 1e-4 and defs["Dense"]["properties"]["l2"]["default"] == 0.0
    assert defs["Cnn"]["required"] == ["family"] and "required" not in defs["Dense"]  # no family: dense
    for section in defs.values():
        for key, prop in section.get("properties", {}).items():
            assert prop.get("description"), key
    study = studyfile.json_schema()
    assert study["required"] == ["study"]
    assert study["$defs"]["Budget"]["properties"]["n_trials"]["default"] == 10
    assert study["$defs"]["Sampler"]["properties"]["name"]["enum"] == list(studyfile.SAMPLERS)
    assert {"minimum": 2, "type": "integer"} in study["$defs"]["Sampler"]["properties"]["population_size"]["anyOf"]
    assert study["$defs"]["Pruner"]["properties"]["name"]["enum"] == list(studyfile.PRUNERS)


@pytest.mark.parametrize("family", config.FAMILIES)
def test_reference_rows_cover_every_key_the_loader_fills_in(family):
    rows = [r for r in config.reference_rows() if r["family"] in (None, family)]
    resolved = flatten(resolve({"model": {"family": family}}))
    assert [r["key"] for r in rows if r["key"] != "name"] == [k for k in resolved if k != "name"]
    assert {r["key"]: r["default"] for r in rows if r["key"] != "name"} == {k: v for k, v in resolved.items() if k != "name"}
    assert all(r["type"] and r["description"] for r in rows)


def test_reference_rows_of_a_study_file():
    rows = {r["key"]: r for r in studyfile.reference_rows()}
    assert {"study", "base", "seed", "data", "model", "train", "objective", "sampler.name", "sampler.seed", "pruner.name", "budget.n_trials", "budget.timeout"} <= set(rows)
    assert rows["budget.n_trials"]["bounds"] == ">= 1, <= 1,000,000" and rows["budget.n_trials"]["default"] == 10
    assert rows["seed"]["bounds"] == ">= 0, <= 4,294,967,295"
    entries = [(r["key"], r["family"]) for r in studyfile.reference_rows() if r["key"].startswith("space.")]
    assert {key for key, _ in entries} == {f"space.KEY.{k}" for k in ("type", "low", "high", "step", "log", "choices", "per")}
    assert ("space.KEY.choices", "categorical") in entries and ("space.KEY.step", "int") in entries


@pytest.mark.parametrize(
    "raw",
    [
        {"model": {"family": "no such family!"}},
        {"trian": {}},
        {"model": {"family": "dense", "filters": 3}},
        {"model": {"depth": 0}},
        {"model": {"family": "cnn", "kernel_size": "3 by 3"}},
        {"model": {"family": "inception", "kernels": "12x1,banana"}},
        {"model": {"family": "svm", "gamma": "big"}},
        {"data": {"targets": ["h12"]}},
        {"data": {"targets": ["h11", "h11"]}},
        {"data": {"dataset": "other"}},
        {"data": {"train": 2}},
        {"train": {"jit_compile": 1}},
        {"train": {"epochs": 10**21}},
        {"seed": -1},
        {"name": 5},
    ],
)
def test_a_config_the_loader_refuses_the_json_schema_refuses(raw):
    with pytest.raises(CicyError):
        resolve(raw)
    assert list(validator("config").iter_errors(raw))


@pytest.mark.parametrize(
    "raw",
    [
        {"model": {"family": "inception", "modules": 2, "filters": 8, "kernels": ["3x3", "12x1,1x15"]}},
        {"model": {"family": "inception", "kernels": [[12, 1], [1, 15]]}},
        {"model": {"family": "cnn", "kernel_size": "3x3", "strides": 1, "pool_size": [2, 1]}},
        {"data": {"targets": "h21", "features": "euler,c2"}},
        {"model": {"family": "svm", "gamma": 0.5}},
        {"train": {"jit_compile": False, "steps_per_execution": None}},
        {"data": None, "model": {"depth": 2, "width": [8, 16]}},
    ],
)
def test_a_config_the_loader_accepts_the_json_schema_accepts(raw):
    resolve(raw)
    assert list(validator("config").iter_errors(raw)) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"study": None},
        {"bogus": 1},
        {"seed": -1},
        {"budget": {"n_trials": 0}},
        {"budget": {"timeout": -1}},
        {"budget": {"trials": 3}},
        {"sampler": {"name": "bogus"}},
        {"pruner": "bogus"},
        {"objective": "val_h11_accurate"},  # (val_h12_accuracy: a data file may have an h12 column)
        {"space": {"model.depth": {"type": "integer", "low": 1, "high": 3}}},
        {"space": {"model.depth": {"type": "int", "low": 1, "high": 3, "choices": [1]}}},
        {"space": {"seed": {"type": "int", "low": 1, "high": 3}}},
    ],
)
def test_a_study_file_the_loader_refuses_the_json_schema_refuses(changes):
    from .conftest import TINY_STUDY

    raw = {k: v for k, v in {"study": "s", **TINY_STUDY, **changes}.items() if v is not None}
    with pytest.raises(CicyError):
        studyfile.parse(raw)
    assert list(validator("study").iter_errors(raw))


def test_the_invariants_the_schema_offers_are_the_ones_data_computes():
    assert config.FEATURES == data.FEATURES


@pytest.mark.parametrize("kind", SCHEMAS)
def test_schema_prints_the_json_schema_or_writes_it(kind, tmp_path, capsys):
    assert run_cli("schema", kind) == 0
    assert json.loads(capsys.readouterr().out) == SCHEMAS[kind]()
    out = tmp_path / f"{kind}.json"
    assert run_cli("schema", kind, "--out", str(out)) == 0
    assert json.loads(out.read_text()) == SCHEMAS[kind]()


@pytest.mark.parametrize("args", [["schema", "bogus"], ["schema", "CONFIG"], ["schema", ""], ["schema", "x" * 500], ["schema"]])
def test_schema_of_an_unknown_kind_is_one_error_line(args, capsys):
    assert run_cli(*args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) < 200, lines


def test_schema_to_a_missing_folder_is_one_error_line(tmp_path, capsys):
    assert run_cli("schema", "config", "--out", str(tmp_path / "no" / "such.json")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "such.json" in lines[0], lines


def test_schema_help_says_how_to_point_an_editor_at_the_shipped_files(capsys):
    assert run_cli("schema", "--help") == 0
    text = capsys.readouterr().out
    assert "# yaml-language-server: $schema=../schemas/study.schema.json" in text and "config.schema.json" in text
    assert (ROOT / "studies" / "../schemas/study.schema.json").resolve().exists()


def test_a_family_added_to_the_registry_is_validated_and_described_like_the_shipped_ones(monkeypatch):
    """A plugin family is one ``Section`` class in ``config.FAMILIES``: run configs, both JSON Schemas and the
    reference rows know it, and its mistakes read like the shipped families'."""
    from typing import Literal

    from pydantic import Field

    from cicy_search.config import Bool, PositiveInt, Section

    class Linear(Section):
        family: Literal["linear"] = Field(description="The model family.")
        units: PositiveInt = Field(16, description="Units of the one hidden layer.")
        bias: Bool = Field(True, description="Whether the layer has a bias.")

    monkeypatch.setitem(config.FAMILIES, "linear", Linear)
    assert resolve({"model": {"family": "linear", "units": 4}})["model"] == {"family": "linear", "units": 4, "bias": True}
    with pytest.raises(CicyError, match=r"^model.units: expected a positive integer, got 0$"):
        resolve({"model": {"family": "linear", "units": 0}})
    with pytest.raises(CicyError, match=r"^unknown key model.depth \(allowed: bias, units\)$"):
        resolve({"model": {"family": "linear", "depth": 2}})
    rows = [r for r in config.reference_rows(("linear",)) if r["family"] == "linear"]
    assert [(r["key"], r["default"]) for r in rows] == [("model.family", "linear"), ("model.units", 16), ("model.bias", True)]
    named = jsonschema.Draft202012Validator(config.json_schema(("linear",)))
    assert list(named.iter_errors({"model": {"family": "linear", "units": 0}}))
    assert list(named.iter_errors({"model": {"family": "linear", "units": 3}})) == []
    assert list(jsonschema.Draft202012Validator(studyfile.json_schema(("linear",))).iter_errors({"study": "s", "model": {"units": 3}})) == []
    assert "Linear" not in config.json_schema()["$defs"]  # described only when named: the same schema in every process
    monkeypatch.delitem(config.FAMILIES, "linear")
    with pytest.raises(CicyError, match="unknown model family 'linear'"):
        resolve({"model": {"family": "linear"}})
