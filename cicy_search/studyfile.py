"""Study files (``studies/*.yaml``): one study a file, validated completely on load.

A study file names the study (also its MLflow experiment), the fixed run settings (``base`` plus the
``data``/``model``/``train`` sections of a run config), the search ``space`` (see ``space.py``), the
objective(s), the sampler, the pruner and the budget. ``load`` checks every key and tries the
extremes of every range against the model's config schema, so a wrong file fails before anything
is created in a storage or in MLflow.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import space as space_mod
from .config import load_file, resolve, set_path, shipped_configs
from .errors import CicyError

TOP = {"study", "description", "base", "seed", "data", "model", "train", "space", "objective", "objectives",
       "sampler", "pruner", "budget"}

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
EPOCH_METRICS = {"val_accuracy", "val_loss"}


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str


@dataclass
class StudySpec:
    name: str
    base: dict
    params: list[space_mod.Param]
    objectives: list[Objective]
    sampler: dict
    pruner: dict
    n_trials: int
    timeout: float | None
    seed: int
    description: str = ""
    raw: dict = field(default_factory=dict)

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def family(self) -> str:
        return self.base.get("model", {}).get("family", "dense")

    def config_for(self, values: dict[str, Any], *, seed: int, name: str | None = None) -> dict:
        """The resolved run config of one trial: the fixed settings with the sampled ``values``."""
        config = copy.deepcopy(self.base)
        for key, value in values.items():
            set_path(config, key, value)
        config["seed"] = seed
        config["name"] = name or self.name
        return resolve(config)

    def monitor(self) -> str | None:
        """The per-epoch value pruning watches: the objective itself when Keras logs it each epoch."""
        if len(self.objectives) > 1 or self.family == "svm":
            return None
        o = self.objectives[0]
        targets = self.base.get("data", {}).get("targets", ["h11"])
        per_epoch = EPOCH_METRICS | {f"val_{t}_accuracy" for t in (targets if isinstance(targets, list) else [targets])}
        if o.metric in per_epoch:
            return o.metric
        return "val_loss" if o.direction == "minimize" else None

    def sampler_object(self, settings: dict | None = None):
        import optuna

        settings = dict(settings or self.sampler)
        cls = getattr(optuna.samplers, SAMPLERS[settings.pop("name")])
        return cls(**settings)

    def pruner_object(self):
        import optuna

        settings = dict(self.pruner)
        return getattr(optuna.pruners, PRUNERS[settings.pop("name")])(**settings)


def _section(raw: dict, key: str, default: Any) -> Any:
    value = raw.get(key, default)
    if isinstance(default, dict) and not isinstance(value, dict):
        raise CicyError(f"{key}: expected a mapping")
    return value


def _check_settings(kind: str, name: str, cls, settings: dict) -> None:
    allowed = {p for p in inspect.signature(cls).parameters if p not in _NOT_FROM_YAML}
    for key in settings:
        if key not in allowed:
            raise CicyError(f"{kind}.{key}: not a setting of the {name} {kind} (allowed: {', '.join(sorted(allowed))})")


def _sampler(raw: Any, seed: int, params: list, n_objectives: int) -> dict:
    import optuna

    raw = {"name": raw} if isinstance(raw, str) else dict(raw or {"name": "tpe"})
    name = raw.get("name", "tpe")
    if name not in SAMPLERS:
        raise CicyError(f"sampler.name: unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    cls = getattr(optuna.samplers, SAMPLERS[name])
    settings = {k: v for k, v in raw.items() if k != "name"}
    _check_settings("sampler", name, cls, settings)
    settings.setdefault("seed", seed)
    if name == "tpe":
        # Optuna 5 changed TPE's defaults; spell out the ones that matter so a study file means one thing.
        conditional = any(p.per for p in params)
        settings.setdefault("multivariate", True)
        settings.setdefault("group", conditional)
        settings.setdefault("n_startup_trials", 10)
        settings.setdefault("constant_liar", True)
        if settings["group"] and not settings["multivariate"]:
            raise CicyError("sampler.group: group mode needs multivariate: true")
    if name == "cmaes" and n_objectives > 1:
        raise CicyError("sampler: cmaes is single-objective; use tpe or nsga2 for several objectives")
    try:
        cls(**settings)
    except (TypeError, ValueError) as e:
        raise CicyError(f"sampler: {name}: {e}") from None
    return {"name": name, **settings}


def _pruner(raw: Any, n_objectives: int) -> dict:
    import optuna

    raw = {"name": raw} if isinstance(raw, str) or raw is None else dict(raw)
    name = raw.get("name") or "none"
    if name not in PRUNERS:
        raise CicyError(f"pruner.name: unknown pruner {name!r}: choose one of {', '.join(PRUNERS)}")
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


def _objectives(raw: dict, targets: list[str], family: str) -> list[Objective]:
    if "objective" in raw and "objectives" in raw:
        raise CicyError("give either objective or objectives, not both")
    given = raw.get("objectives", raw.get("objective", "val_accuracy"))
    given = given if isinstance(given, list) else [given]
    allowed = {"val_accuracy", "val_loss", "n_params", "train_seconds"} | {
        f"val_{t}_{m}" for t in targets for m in ("accuracy", "mae", "mse")
    }
    out = []
    for o in given:
        o = {"metric": o} if isinstance(o, str) else o
        if not isinstance(o, dict) or set(o) - {"metric", "direction"}:
            raise CicyError(f"objectives: expected entries like {{metric: val_accuracy, direction: maximize}}, got {o!r}")
        metric = o.get("metric")
        if isinstance(metric, str) and metric.startswith("test_"):
            raise CicyError(f"objective {metric}: the test split is never used for selection; use a val_ metric")
        if metric not in allowed:
            raise CicyError(f"objective: unknown metric {metric!r} (allowed: {', '.join(sorted(allowed))})")
        if metric == "val_loss" and family == "svm":
            raise CicyError("objective val_loss: an SVM has no training loss; use val_accuracy or a val_ mae/mse")
        default = "maximize" if metric.endswith("accuracy") else "minimize"
        direction = o.get("direction", default)
        if direction not in ("maximize", "minimize"):
            raise CicyError(f"objective {metric}: direction must be maximize or minimize, got {direction!r}")
        out.append(Objective(metric, direction))
    if len({o.metric for o in out}) != len(out):
        raise CicyError("objectives: the same metric is given twice")
    return out


def _base(raw: dict, folder: Path) -> dict:
    base: dict = {}
    if "base" in raw:
        ref = raw["base"]
        shipped = shipped_configs()
        path = folder / str(ref)
        if path.is_file():
            base = load_file(path)
        elif ref in shipped:
            base = load_file(shipped[ref])
        else:
            raise CicyError(f"base: {ref!r} is neither a run config file nor a shipped example ({', '.join(sorted(shipped))})")
        base.pop("name", None)
    for section in ("data", "model", "train"):
        given = _section(raw, section, {})
        if section == "model" and "family" in given and given["family"] != base.get("model", {}).get("family", given["family"]):
            base["model"] = {}
        base.setdefault(section, {}).update(given)
    return base


def _validate_space(spec: StudySpec) -> None:
    for p in spec.params:
        if p.name in ("model.family", "seed", "name") or not p.name.startswith(("model.", "train.", "data.")):
            raise CicyError(f"space.{p.name}: not a searchable setting (search model.*, train.* or data.* keys)")
    examples = [space_mod.Example("low"), space_mod.Example("high")] + [
        space_mod.Example("low", {p.name: choice}) for p in spec.params if p.type == "categorical" for choice in p.choices
    ]
    probes = [space_mod.sample(spec.params, example, spec.base) for example in examples]
    for probe in probes:
        try:
            spec.config_for(probe, seed=spec.seed)
        except CicyError as e:
            raise CicyError(f"space: {e}") from None


def parse(raw: dict, *, folder: Path = Path(".")) -> StudySpec:
    if not isinstance(raw, dict):
        raise CicyError("a study file must be a YAML mapping")
    unknown = sorted(set(raw) - TOP)
    if unknown:
        raise CicyError(f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(TOP))})")
    name = raw.get("study")
    if not isinstance(name, str) or not name.strip():
        raise CicyError("study: the study needs a name (study: my_study)")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CicyError(f"seed: expected an integer, got {seed!r}")
    base = _base(raw, folder)
    try:
        fixed = resolve({**base, "seed": seed})  # the fixed part alone must be a valid run config
    except CicyError as e:
        raise CicyError(f"fixed settings: {e}") from None
    params = space_mod.parse(raw.get("space"))
    objectives = _objectives(raw, fixed["data"]["targets"], fixed["model"]["family"])
    budget = _section(raw, "budget", {})
    unknown = sorted(set(budget) - {"n_trials", "timeout"})
    if unknown:
        raise CicyError(f"unknown key budget.{unknown[0]} (allowed: n_trials, timeout)")
    n_trials, timeout = budget.get("n_trials", 10), budget.get("timeout")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise CicyError(f"budget.n_trials: expected a positive integer, got {n_trials!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise CicyError(f"budget.timeout: expected seconds > 0 or null, got {timeout!r}")
    spec = StudySpec(
        name=name,
        base=base,
        params=params,
        objectives=objectives,
        sampler=_sampler(raw.get("sampler"), seed, params, len(objectives)),
        pruner=_pruner(raw.get("pruner"), len(objectives)),
        n_trials=n_trials,
        timeout=timeout,
        seed=seed,
        description=str(raw.get("description", "")),
        raw=raw,
    )
    _validate_space(spec)
    return spec


def load(path: str | Path) -> StudySpec:
    """Load and validate a study file; every mistake is one ``CicyError`` line that names the key."""
    path = Path(path)
    try:
        return parse(load_file(path), folder=path.parent)
    except CicyError as e:
        raise CicyError(f"{path}: {e}") from None
