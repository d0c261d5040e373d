"""Search-space entries: every mistake is one line naming the entry, found before any study exists."""

import optuna
import pytest

from cicy_search.search import space
from cicy_search.errors import CicyError


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"type": "int", "low": 1, "high": 10, "step": 0.5}, "space.model.x.step: expected an integer, got 0.5"),
        ({"type": "int", "low": 1, "high": 10, "step": 0}, "space.model.x.step: expected a positive integer, got 0"),
        ({"type": "int", "low": 1, "high": 10, "step": "2"}, "space.model.x.step: expected a positive integer, got '2'"),
        ({"type": "int", "low": 1, "high": 10, "step": 2}, "2 does not divide the range 1..10 (the last value would be 9)"),
        ({"type": "float", "low": 0.0, "high": 1.0, "step": 0.3}, "0.3 does not divide the range 0.0..1.0 (the last value would be 0.9)"),
        ({"type": "float", "low": 0.0, "high": 1.0, "step": -0.1}, "space.model.x.step: expected a positive number"),
        ({"type": "float", "low": 0.0, "high": 1.0, "step": float("nan")}, "space.model.x.step: expected a finite number"),
        ({"type": "float", "low": 1e-4, "high": 1e-2, "log": True, "step": 1e-4}, "step and log cannot be combined"),
        ({"type": "float", "low": 0.0, "high": float("inf")}, "space.model.x.high: expected a finite number, got inf"),
        ({"type": "float", "low": 1, "high": 10**400}, "space.model.x.high: expected a finite number"),
        ({"type": "int", "low": 1, "high": 10**400}, "space.model.x.high: expected an integer within +-2**53"),
        ({"type": "int", "low": 1.5, "high": 3}, "space.model.x.low: expected an integer, got 1.5"),
        ({"type": "int", "low": "1", "high": 3}, "space.model.x.low: expected an integer, got '1'"),
        ({"type": "int", "low": 5, "high": 1}, "bad range, low = 5 > high = 1"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": "yes"}, "space.model.x.log: expected true or false"),
        ({"type": ["int"], "low": 1, "high": 3}, "space.model.x.type: expected one of int, float, categorical"),
        ({"type": "categorical", "choices": ["a", "a"]}, "space.model.x.choices: a choice is given twice"),
        ({"type": "categorical", "choices": [float("nan")]}, "is not a finite number"),
        ({"type": "categorical", "choices": [[1, 2]]}, "is not a number, string, bool or null"),
        ({"type": "categorical", "choices": []}, "space.model.x.choices: expected a non-empty list"),
    ],
)
def test_entries_that_optuna_would_reject_or_silently_narrow_fail_at_parse(entry, message):
    with pytest.raises(CicyError) as e:
        space.parse_param("model.x", entry)
    assert message in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 300


@pytest.mark.parametrize(
    "entry",
    [
        {"type": "int", "low": 1, "high": 9, "step": 2},
        {"type": "int", "low": 16, "high": 512, "log": True},
        {"type": "float", "low": 0.0, "high": 0.5, "step": 0.05},
        {"type": "float", "low": 0.1, "high": 0.7, "step": 0.2},
        {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    ],
)
def test_valid_entries_sample_their_whole_range_in_optuna(entry):
    param = space.parse_param("model.x", entry)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = [param.suggest(study.ask()) for _ in range(200)]
    assert min(values) >= entry["low"] and max(values) <= entry["high"]
    if "step" in entry:
        assert max(values) == pytest.approx(entry["high"])  # Optuna did not narrow the range


@pytest.mark.parametrize("key", [1, "x" * 300, None])
def test_space_keys_must_be_dotted_names(key):
    with pytest.raises(CicyError, match="is not a dotted config key"):
        space.parse({key: {"type": "int", "low": 1, "high": 2}})
