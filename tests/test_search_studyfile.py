"""Study files: settings that pass a glance but cannot run fail at load, with one line naming the key."""

import datetime

import math

import pytest
import yaml

from cicy_search.search import studyfile
from cicy_search.errors import CicyError

from .conftest import TINY_STUDY, study_spec

@pytest.mark.parametrize(
    "sampler, message",
    [
        ({"name": "tpe", "n_startup_trials": "ten"}, "sampler.n_startup_trials: expected an integer, got 'ten'"),
        ({"name": "tpe", "n_startup_trials": 2.5}, "sampler.n_startup_trials: expected an integer, got 2.5"),
        ({"name": "tpe", "multivariate": "yes"}, "sampler.multivariate: expected true or false or null, got 'yes'"),
        ({"name": "tpe", "prior_weight": "1"}, "sampler.prior_weight: expected a number or null, got '1'"),
        ({"name": "tpe", "n_ei_candidates": 0}, "sampler.n_ei_candidates: expected a value at least 1, got 0"),
        ({"name": "tpe", "seed": -1}, "sampler.seed: expected a value from 0 to 4,294,967,295, got -1"),
        ({"name": "random", "seed": 2**40}, "sampler.seed: expected a value from 0 to 4,294,967,295"),
        ({"name": "random", "seed": True}, "sampler.seed: expected an integer or null, got True"),
        ({"name": "nsga2", "population_size": 1}, "sampler.population_size: expected a value at least 2, got 1"),
        ({"name": "nsga2", "crossover_prob": float("nan")}, "sampler.crossover_prob: expected a number, got nan"),
        ({"name": ["tpe"]}, "sampler.name: unknown sampler ['tpe']"),
        ({"name": "tpe", "n_recent_trials": 3}, "sampler.n_recent_trials: expected an integer of at least n_startup_trials (10), got 3"),
        ({"name": "tpe", "n_recent_trials": "all"}, "sampler.n_recent_trials: expected an integer of at least n_startup_trials"),
        ({"name": "random", "n_recent_trials": 100}, "sampler.n_recent_trials: not a setting of the random sampler"),
        ([1, 2], "sampler: expected a name or a mapping"),
    ],
)
def test_sampler_settings_of_the_wrong_type_or_range_fail_at_load(sampler, message):
    with pytest.raises(CicyError) as e:
        study_spec("s", sampler=sampler)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "pruner, message",
    [
        ({"name": "median", "n_startup_trials": "five"}, "pruner.n_startup_trials: expected an integer, got 'five'"),
        ({"name": "median", "n_warmup_steps": -1}, "pruner.n_warmup_steps: expected a value at least 0, got -1"),
        ({"name": "percentile", "percentile": "50"}, "pruner.percentile: expected a number, got '50'"),
        ({"name": "hyperband", "reduction_factor": 1}, "pruner.reduction_factor: expected a value at least 2, got 1"),
        ({"name": "hyperband", "min_resource": 0}, "pruner.min_resource: expected a value at least 1, got 0"),
        ({"name": "hyperband", "max_resource": "many"}, "pruner: hyperband: The 'max_resource' should be integer or 'auto'"),
        ({"name": "successive_halving", "min_early_stopping_rate": 1.5}, "pruner.min_early_stopping_rate: expected an integer"),
        ({"name": "threshold", "lower": "0.5"}, "pruner.lower: expected a number or null, got '0.5'"),
        ({"name": "threshold"}, "pruner: threshold: Either lower or upper must be specified"),
        ({"name": 5}, "pruner.name: unknown pruner 5"),
    ],
)
def test_pruner_settings_of_the_wrong_type_or_range_fail_at_load(pruner, message):
    with pytest.raises(CicyError) as e:
        study_spec("s", pruner=pruner)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_sampler_whose_package_is_missing_fails_at_load(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cmaes(name, *args, **kwargs):
        if name == "cmaes" or name.startswith("cmaes."):
            raise ModuleNotFoundError("No module named 'cmaes'", name="cmaes")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cmaes)
    with pytest.raises(CicyError, match="sampler: cmaes needs the Python package 'cmaes', which is not installed"):
        study_spec("s", sampler={"name": "cmaes", "seed": 0})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"limit": 5}, "fixed settings: data: the validation split is empty (data.limit = 5: 5 matrices in 4 h11 classes"),
        ({"limit": 5, "stratify": False}, "fixed settings: data: the validation split is empty (data.limit = 5: 5 matrices"),
        ({"limit": 40, "targets": ["h21"]}, "the validation split is empty (data.limit = 40: 40 matrices in"),
        ({"limit": 200, "train": 0.0}, "split fraction train must be positive"),
        ({"limit": 12, "stratify": False, "test": 0.01}, "the test split is empty"),
    ],
)
def test_splits_too_small_for_the_fractions_or_the_stratification_fail_at_load(data, message):
    with pytest.raises(CicyError) as e:
        study_spec("s", data=data)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_searched_limit_is_checked_at_both_ends():
    with pytest.raises(CicyError, match=r"^space: data: the validation split is empty \(data.limit = 3"):
        study_spec("s", space={**TINY_STUDY["space"], "data.limit": {"type": "int", "low": 3, "high": 400}})


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"study": "x" * 600}, "a name of at most 200 printable characters"),
        ({"study": "two\nlines"}, "a name of at most 200 printable characters"),
        ({"study": " padded "}, "without leading or trailing spaces"),
        ({"study": ""}, "study: the study needs a name"),
        ({"seed": -1}, "seed: expected an integer from 0 to 4,294,967,295, got -1"),
        ({"seed": 2**40}, "seed: expected an integer from 0 to 4,294,967,295"),
        ({"budget": {"n_trials": 0}}, "budget.n_trials: expected an integer from 1 to 1,000,000, got 0"),
        ({"budget": {"n_trials": -1}}, "budget.n_trials: expected an integer from 1 to 1,000,000, got -1"),
        ({"budget": {"timeout": -1}}, "budget.timeout: expected seconds > 0 (or none), got -1"),
        ({"budget": {"timeout": float("inf")}}, "budget.timeout: expected seconds > 0"),
        ({"description": datetime.date(2024, 1, 1)}, "description: date values are not allowed"),
        ({"base": ["dense"]}, "base: expected a run config file or a shipped example"),
        ({"objective": {"metric": ["val_accuracy"]}}, "objectives: expected entries like"),
        ({"train": {"epochs": 10**21}}, "train.epochs: expected an integer from 1 to 100,000"),
        ({"space": {"model.width": {"type": "int", "low": 8, "high": 10**11}}}, "model.width: expected an integer from 1 to 16,384"),
    ],
)
def test_names_seeds_budgets_and_values_that_cannot_be_stored_fail_at_load(changes, message):
    with pytest.raises(CicyError) as e:
        studyfile.parse({"study": "s", **{k: v for k, v in TINY_STUDY.items() if k not in changes}, **changes})
    assert message in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 400


@pytest.mark.parametrize(
    "content, message",
    [
        (b"study: a\nstudy: b\n", "not valid YAML at line 2: duplicate key 'study'"),
        (b"study: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 10)"),
        (b"study: [\n", "not valid YAML at line 2"),
        (b"study: s\nbase: dense\nspace: {model.depth: {type: int, low: 1, high: 3, step: 0.5}}\n", "space.model.depth.step: expected an integer, got 0.5"),
        (b"study: s\nbase: dense\nsampler: {name: tpe, n_startup_trials: ten}\n", "sampler.n_startup_trials: expected an integer"),
    ],
)
def test_study_file_errors_name_the_file_once(tmp_path, content, message):
    path = tmp_path / "study.yaml"
    path.write_bytes(content)
    with pytest.raises(CicyError) as e:
        studyfile.load(path)
    text = str(e.value)
    assert text.startswith(f"{path}: ") and text.count("study.yaml") == 1 and message in text


def test_a_byte_order_mark_and_exponents_without_a_dot_are_read(tmp_path):
    path = tmp_path / "study.yaml"
    raw = {"study": "bom", **TINY_STUDY, "space": {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}
    text = yaml.safe_dump(raw).replace("0.0001", "1e-4").replace("0.01", "1e-2")
    assert "1e-4" in text
    path.write_bytes("\ufeff".encode() + text.encode())
    spec = studyfile.load(path)
    assert (spec.params[0].low, spec.params[0].high) == (1e-4, 1e-2)


def test_a_folder_is_not_a_missing_file(tmp_path):
    with pytest.raises(CicyError, match=": is a folder, expected a file"):
        studyfile.load(tmp_path)
    with pytest.raises(CicyError, match=r"nothing\.yaml: no such file$"):
        studyfile.load(tmp_path / "nothing.yaml")


@pytest.mark.parametrize(
    "n_trials, timeout, message",
    [
        (0, None, "--n-trials: expected an integer from 1 to 1,000,000, got 0"),
        (-1, None, "--n-trials: expected an integer from 1 to 1,000,000, got -1"),
        (None, -1, "--timeout: expected seconds > 0 (or none), got -1"),
        (None, 0.0, "--timeout: expected seconds > 0 (or none), got 0.0"),
        (None, float("nan"), "--timeout: expected seconds > 0 (or none), got nan"),
    ],
)
def test_budget_overrides_are_checked(n_trials, timeout, message):
    with pytest.raises(CicyError) as e:
        studyfile.check_budget(n_trials, timeout)
    assert str(e.value) == message
    studyfile.check_budget(5, 0.5)
    studyfile.check_budget(None, None)


def test_tpe_with_n_recent_trials_models_only_the_last_finished_trials(monkeypatch):
    """``sampler.n_recent_trials``: TPE's model sees the last N finished trials (and the running ones), no more."""
    import optuna
    from optuna.samplers._tpe import sampler as tpe

    from cicy_search.search.history import RecentTPESampler

    spec = study_spec("s", sampler={"name": "tpe", "seed": 3, "n_startup_trials": 2, "n_recent_trials": 4})
    assert spec.sampler["n_recent_trials"] == 4
    seen: list[list[int]] = []
    split = tpe._split_trials
    monkeypatch.setattr(tpe, "_split_trials", lambda study, trials, *a: seen.append([t.number for t in trials]) or split(study, trials, *a))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=spec.sampler_object())
    assert isinstance(study.sampler, RecentTPESampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=8)
    assert seen[0] == [0, 1] and seen[-1] == [3, 4, 5, 6] and max(len(s) for s in seen) == 4  # trials 0 and 1: random
    running = study.ask()
    running.suggest_float("x", 0, 1)
    assert seen[-1] == [4, 5, 6, 7]
    study.ask().suggest_float("x", 0, 1)  # constant_liar: the running trial is modelled too, on top of the last 4 finished
    assert seen[-1] == [4, 5, 6, 7, running.number]
    unbounded = optuna.create_study(sampler=study_spec("s", sampler={"name": "tpe", "seed": 3, "n_startup_trials": 2}).sampler_object())
    assert type(unbounded.sampler) is optuna.samplers.TPESampler
    seen.clear()
    unbounded.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=8)
    assert seen[-1] == list(range(7))


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
@pytest.mark.parametrize(
    "pruner",
    [
        {"name": "median"},
        {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 2},
        {"name": "percentile", "percentile": 25.0, "n_startup_trials": 0, "interval_steps": 2, "n_min_trials": 8},
        {"name": "percentile", "percentile": 90.0, "n_warmup_steps": 1, "interval_steps": 3},
    ],
)
def test_the_cached_pruner_decides_as_optunas_at_every_step(pruner, direction):
    """``history.CachedReads`` against the Optuna pruner it wraps, on one study of 80 trials with random values
    (some NaN, some trials stopping early, some failing): the same decision at every step of every trial."""
    import random

    import optuna

    rng = random.Random(len(str(pruner)) + len(direction))
    cached = study_spec("s", pruner=pruner).pruner_object()
    plain = cached.pruner
    study = optuna.create_study(direction=direction, pruner=optuna.pruners.NopPruner())
    decisions = []
    for _ in range(80):
        trial = study.ask()
        steps = rng.randrange(1, 10)
        for step in range(steps):
            trial.report(math.nan if rng.random() < 0.05 else rng.gauss(step, 1.0), step)
            frozen = study._storage.get_trial(trial._trial_id)
            decisions.append((plain.prune(study, frozen), cached.prune(study, frozen)))
        state = rng.choice([optuna.trial.TrialState.COMPLETE] * 3 + [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL])
        study.tell(trial, rng.random() if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    assert [a for a, _ in decisions] == [b for _, b in decisions]
    assert 0 < sum(a for a, _ in decisions) < len(decisions)  # both answers seen


def test_the_median_pruner_reads_the_complete_trials_once_a_trial_and_prunes_as_before(monkeypatch):
    """``history.CachedReads``: one read of the complete trials per trial instead of one per epoch, same decisions."""
    import optuna

    from cicy_search.search.history import CachedReads

    spec = study_spec("s", pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1})
    assert isinstance(spec.pruner_object(), CachedReads) and isinstance(spec.pruner_object().pruner, optuna.pruners.MedianPruner)
    assert not isinstance(study_spec("s", pruner={"name": "threshold", "lower": 0.1}).pruner_object(), CachedReads)
    reads: list[int] = []
    get_trials = optuna.Study.get_trials

    def counted(self, deepcopy=True, states=None):
        reads.append(1)
        return get_trials(self, deepcopy=deepcopy, states=states)

    monkeypatch.setattr(optuna.Study, "get_trials", counted)

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        for step in range(6):
            trial.report(x * (step + 1), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x * 6

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    outcomes = {}
    for name, pruner in [("cached", spec.pruner_object()), ("plain", spec.pruner_object().pruner)]:
        reads.clear()
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=5), pruner=pruner)
        study.optimize(objective, n_trials=12)
        outcomes[name] = ([t.state for t in study.trials], len(reads), sum(len(t.intermediate_values) for t in study.trials))
    assert outcomes["cached"][0] == outcomes["plain"][0] and optuna.trial.TrialState.PRUNED in outcomes["cached"][0]
    # One read per should_prune (one a step) before, one per trial now; other reads of the study are the same.
    checks = outcomes["plain"][2]
    assert checks > 30 and outcomes["plain"][1] - outcomes["cached"][1] == checks - 12


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"budget": None}, "budget: expected a mapping"),
        ({"budget": [3]}, "budget: expected a mapping"),
        ({"budget": {"n_trials": True}}, "budget.n_trials: expected an integer from 1 to 1,000,000, got True"),
        ({"seed": "0"}, "seed: expected an integer from 0 to 4,294,967,295, got '0'"),
        ({"bogus": 1, "seed": -1}, "unknown key 'bogus' (allowed: base, budget, data, description, enqueue, families, model, objective, objectives, pruner, sampler, seed, space, study, train)"),
        ({"pruner": {"name": "successive_halving", "min_resource": 0}}, "pruner.min_resource: expected a value at least 1, got 0"),
    ],
)
def test_the_typed_study_file_keeps_the_messages(changes, message):
    with pytest.raises(CicyError) as e:
        studyfile.parse({"study": "s", **TINY_STUDY, **changes})
    assert str(e.value) == message


def test_a_study_without_a_name_or_with_a_budget_without_a_trial_limit():
    with pytest.raises(CicyError, match=r"^study: the study needs a name \(study: my_study\)$"):
        studyfile.parse(dict(TINY_STUDY))
    spec = study_spec("s", budget={"n_trials": None, "timeout": 60})
    assert (spec.n_trials, spec.timeout) == (None, 60)
