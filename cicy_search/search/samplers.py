"""The sampler and the pruner of a study file: Optuna's, by name, with settings checked before a study exists.

A setting must be an argument of the Optuna class, of the type its signature gives, and within the bounds the
``Sampler`` and ``Pruner`` schema classes give (Optuna checks some only once it samples or prunes); TPE's defaults
are spelled out so a study file means one thing across Optuna versions.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from ..config import MAX_SEED
from ..errors import CicyError
from ..schema import short as _short

SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "nsga2": "NSGAIISampler",
}
PRUNERS = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "threshold": "ThresholdPruner",
}
# Settings that take Python callables or objects cannot come from YAML.
_NOT_FROM_YAML = {"gamma", "weights", "constraints_func", "mutation", "crossover", "independent_sampler",
                  "x0", "source_trials", "elite_population_selection_strategy", "child_generation_strategy",
                  "after_trial_strategy"}


# Sampler and pruner settings: the names, the common settings and their bounds, for editors and the docs. Any other
# argument of the Optuna class may be given too; ``_check_settings`` checks the types its signature gives and
# these bounds, which Optuna checks only once it samples or prunes.
def _setting(kind, description: str, **bounds):
    return Annotated[Optional[kind], Field(None, description=description, **bounds)]


_AUTO_OR_EPOCHS = Union[Literal["auto"], Annotated[int, Field(ge=1)]]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="allow")  # any other setting of the Optuna class, checked against its signature


class Sampler(_Settings):
    """The Optuna sampler and the common settings; any other argument of its class may be given too."""

    name: Literal[tuple(SAMPLERS)] = Field("tpe", description="tpe, random, cmaes, gp or nsga2 (Optuna's samplers).")
    seed: _setting(int, "Seed of the sampler (default: the study's seed).", ge=0, le=MAX_SEED)
    n_startup_trials: _setting(int, "tpe, gp: random trials before the model is used (tpe: 10).", ge=0)
    multivariate: _setting(bool, "tpe: model the parameters jointly (default: true).")
    group: _setting(bool, "tpe: model each set of parameters that occur together apart (default: true when the space has per entries).")
    constant_liar: _setting(bool, "tpe: count running trials as bad, so parallel workers spread out (default: true).")
    n_recent_trials: _setting(int, "tpe: model only the last N finished trials (at least n_startup_trials); null for all.", ge=1)
    n_ei_candidates: _setting(int, "tpe: candidates drawn to pick each new value from.", ge=1)
    prior_weight: _setting(float, "tpe: weight of the prior against the observed trials.", ge=0)
    population_size: _setting(int, "nsga2: individuals per generation.", ge=2)
    popsize: _setting(int, "cmaes: individuals per generation.", ge=1)
    sigma0: _setting(float, "cmaes: the initial step size.", ge=0)


class Pruner(_Settings):
    """The Optuna pruner and the common settings; any other argument of its class may be given too."""

    name: Literal[tuple(PRUNERS)] = Field("none", description="none, median, percentile, hyperband, successive_halving or threshold (Optuna's pruners).")
    n_startup_trials: _setting(int, "median, percentile: trials that finish before any is pruned.", ge=0)
    n_warmup_steps: _setting(int, "median, percentile, threshold: epochs of a trial before it may be pruned.", ge=0)
    interval_steps: _setting(int, "median, percentile, threshold: epochs between two pruning checks.", ge=1)
    n_min_trials: _setting(int, "median, percentile: trials that must have reached an epoch before it is compared.", ge=1)
    percentile: _setting(float, "percentile: prune below this percentile of the other trials (0 to 100).")
    min_resource: _setting(_AUTO_OR_EPOCHS, "hyperband, successive_halving: epochs a trial gets at least (successive_halving: or auto).")
    max_resource: _setting(_AUTO_OR_EPOCHS, "hyperband: epochs a trial gets at most (or auto: the most seen).")
    reduction_factor: _setting(int, "hyperband, successive_halving: 1 / the share of trials kept at each rung.", ge=2)
    min_early_stopping_rate: _setting(int, "successive_halving: the rung pruning starts at.", ge=0)
    bootstrap_count: _setting(int, "hyperband: trials to finish before brackets start.", ge=0)
    lower: _setting(float, "threshold: prune a trial whose value falls below this.")
    upper: _setting(float, "threshold: prune a trial whose value rises above this.")


_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "None": "null"}


def _matches(atom: str, value) -> bool:
    if atom == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if atom == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if atom == "bool":
        return isinstance(value, bool)
    if atom == "str":
        return isinstance(value, str)
    return value is None  # "None"


@functools.cache
def _bounds(kind: str, key: str) -> tuple[Any, Any]:
    """The bounds the ``Sampler`` or ``Pruner`` schema gives a numeric setting. Optuna checks some only once it
    samples or prunes (n_ei_candidates: 0 fails at TPE's eleventh trial); the types come from its signatures."""
    prop = {"sampler": Sampler, "pruner": Pruner}[kind].model_json_schema()["properties"].get(key, {})
    numbers = [b for b in prop.get("anyOf", [prop]) if b.get("type") in ("integer", "number")]
    return (numbers[0].get("minimum"), numbers[0].get("maximum")) if numbers else (None, None)


def _check_settings(kind: str, name: str, cls, settings: dict) -> None:
    """Known names, and values of the types the class's signature gives (``int | None``, ...)."""
    params = inspect.signature(cls).parameters
    allowed = {p for p in params if p not in _NOT_FROM_YAML}
    for key, value in settings.items():
        if not isinstance(key, str) or key not in allowed:
            raise CicyError(f"{kind}.{str(key)[:60]}: not a setting of the {name} {kind} (allowed: {', '.join(sorted(allowed))})")
        annotation = params[key].annotation
        annotation = annotation.__name__ if isinstance(annotation, type) else annotation
        atoms = [a.strip() for a in str(annotation).split("|")]
        if all(a in _TYPE_WORDS for a in atoms) and not any(_matches(a, value) for a in atoms):
            raise CicyError(f"{kind}.{key}: expected {' or '.join(_TYPE_WORDS[a] for a in atoms)}, got {_short(value)}")
        low, high = _bounds(kind, key)
        if _matches("float", value) and ((low is not None and value < low) or (high is not None and value > high)):
            bound = f"from {low:,} to {high:,}" if high is not None else f"at least {low}"
            raise CicyError(f"{kind}.{key}: expected a value {bound}, got {_short(value)}")


def _settings(kind: str, raw: Any, default: str) -> dict:
    if raw is None or isinstance(raw, str):
        return {"name": raw or default}
    if not isinstance(raw, dict):
        raise CicyError(f"{kind}: expected a name or a mapping like {{name: {default}, ...}}, got {_short(raw)}")
    return dict(raw)


def sampler_settings(raw: Any, seed: int, params: list, n_objectives: int) -> dict:
    """A study file's ``sampler`` (a name or a mapping) as the settings the study's sampler is built from."""
    import optuna

    raw = _settings("sampler", raw, "tpe")
    name = raw.get("name", "tpe")
    if not isinstance(name, str) or name not in SAMPLERS:
        raise CicyError(f"sampler.name: unknown sampler {_short(name)}: choose one of {', '.join(SAMPLERS)}")
    cls = getattr(optuna.samplers, SAMPLERS[name])
    settings = {k: v for k, v in raw.items() if k != "name"}
    recent = settings.pop("n_recent_trials", None) if name == "tpe" else None  # ours (history.RecentTPESampler)
    _check_settings("sampler", name, cls, settings)
    settings.setdefault("seed", seed)
    if name == "tpe":
        # Optuna 5 changed TPE's defaults; spell out the ones that matter so a study file means one thing.
        conditional = any(p.per or p.when for p in params)
        settings.setdefault("multivariate", True)
        settings.setdefault("group", conditional)
        settings.setdefault("n_startup_trials", 10)
        settings.setdefault("constant_liar", True)
        if settings["group"] and not settings["multivariate"]:
            raise CicyError("sampler.group: group mode needs multivariate: true")
        if recent is not None:
            startup = settings["n_startup_trials"]
            if isinstance(recent, bool) or not isinstance(recent, int) or recent < max(1, startup):
                raise CicyError(f"sampler.n_recent_trials: expected an integer of at least n_startup_trials ({startup}), got {_short(recent)}")
    if name == "cmaes" and n_objectives > 1:
        raise CicyError("sampler: cmaes is single-objective; use tpe or nsga2 for several objectives")
    try:
        cls(**settings)
    except (TypeError, ValueError) as e:
        raise CicyError(f"sampler: {name}: {e}") from None
    return {"name": name, **settings, **({"n_recent_trials": recent} if recent is not None else {})}


def pruner_settings(raw: Any, n_objectives: int) -> dict:
    """A study file's ``pruner`` (a name, null or a mapping) as the settings the study's pruner is built from."""
    import optuna

    raw = _settings("pruner", raw, "none")
    name = raw.get("name") or "none"
    if not isinstance(name, str) or name not in PRUNERS:
        raise CicyError(f"pruner.name: unknown pruner {_short(name)}: choose one of {', '.join(PRUNERS)}")
    if name != "none" and n_objectives > 1:
        raise CicyError("pruner: Optuna cannot prune multi-objective studies; use pruner: none")
    cls = getattr(optuna.pruners, PRUNERS[name])
    settings = {k: v for k, v in raw.items() if k != "name"}
    _check_settings("pruner", name, cls, settings)
    try:
        cls(**settings)
    except (TypeError, ValueError) as e:
        raise CicyError(f"pruner: {name}: {e}") from None
    return {"name": name, **settings}
