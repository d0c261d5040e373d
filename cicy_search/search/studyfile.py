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
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import space as space_mod
from ..config import MAX_SEED, MODELS, config_path, load_file, resolve, set_path, shipped_configs
from ..errors import CicyError

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
#: Longest study name: it also names the MLflow experiment (at most 500 characters, and
#: ``NAME-keras-tuner`` for ``study tune``) and every trial's run config (``NAME-17``).
MAX_NAME = 200
MAX_TRIALS = 1_000_000
# Lower bounds of numeric sampler and pruner settings that Optuna checks only once it samples or prunes
# (n_ei_candidates: 0 fails at TPE's eleventh trial); the types come from the classes' signatures.
_RANGES = {
    "seed": (0, MAX_SEED),
    "n_startup_trials": (0, None),
    "n_ei_candidates": (1, None),
    "prior_weight": (0, None),
    "n_warmup_steps": (0, None),
    "interval_steps": (1, None),
    "n_min_trials": (1, None),
    "population_size": (2, None),
    "popsize": (1, None),
    "sigma0": (0, None),
    "min_resource": (1, None),
    "max_resource": (1, None),
    "reduction_factor": (2, None),
    "min_early_stopping_rate": (0, None),
    "bootstrap_count": (0, None),
}
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "None": "null"}


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
        data = self.base.get("data", {})
        targets = data.get("targets", ["h11"])
        targets = targets if isinstance(targets, list) else [targets]
        physics = bool(data.get("physics"))
        learned = ["h11"] if physics else targets  # with physics the network learns h11 alone
        single = {f"val_{learned[0]}_accuracy", *(["val_h21_accuracy"] if physics else [])}
        if len(learned) == 1 and o.metric in single:
            return "val_accuracy"  # one output: Keras logs it unprefixed (and physics h21 is right exactly when h11 is)
        per_epoch = EPOCH_METRICS | {f"val_{t}_accuracy" for t in learned}
        if o.metric in per_epoch:
            return o.metric
        return "val_loss" if o.direction == "minimize" else None

    def sampler_object(self, settings: dict | None = None):
        import optuna

        settings = dict(settings or self.sampler)
        cls = getattr(optuna.samplers, SAMPLERS[settings.pop("name")])
        if settings.get("n_recent_trials") is not None:
            from .history import RecentTPESampler

            return RecentTPESampler(**settings)
        settings.pop("n_recent_trials", None)
        return cls(**settings)

    def pruner_object(self):
        import optuna

        settings = dict(self.pruner)
        pruner = getattr(optuna.pruners, PRUNERS[settings.pop("name")])(**settings)
        if isinstance(pruner, optuna.pruners.PercentilePruner):  # median too: reads every complete trial each epoch
            from .history import CachedReads

            return CachedReads(pruner)
        return pruner


def _section(raw: dict, key: str, default: Any) -> Any:
    value = raw.get(key, default)
    if isinstance(default, dict) and not isinstance(value, dict):
        raise CicyError(f"{key}: expected a mapping")
    return value


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


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
        low, high = _RANGES.get(key, (None, None))
        if _matches("float", value) and ((low is not None and value < low) or (high is not None and value > high)):
            bound = f"from {low:,} to {high:,}" if high is not None else f"at least {low}"
            raise CicyError(f"{kind}.{key}: expected a value {bound}, got {_short(value)}")


def _settings(kind: str, raw: Any, default: str) -> dict:
    if raw is None or isinstance(raw, str):
        return {"name": raw or default}
    if not isinstance(raw, dict):
        raise CicyError(f"{kind}: expected a name or a mapping like {{name: {default}, ...}}, got {_short(raw)}")
    return dict(raw)


def _sampler(raw: Any, seed: int, params: list, n_objectives: int) -> dict:
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
        conditional = any(p.per for p in params)
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


def _pruner(raw: Any, n_objectives: int) -> dict:
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
        if not isinstance(o, dict) or set(o) - {"metric", "direction"} or not isinstance(o.get("metric"), str):
            raise CicyError(f"objectives: expected entries like {{metric: val_accuracy, direction: maximize}}, got {_short(o)}")
        metric = o.get("metric")
        if isinstance(metric, str) and metric.startswith("test_"):
            raise CicyError(f"objective {metric}: the test split is never used for selection; use a val_ metric")
        if metric not in allowed:
            raise CicyError(f"objective: unknown metric {_short(metric)} (allowed: {', '.join(sorted(allowed))})")
        if metric == "val_loss" and family == "svm":
            raise CicyError("objective val_loss: an SVM has no training loss; use val_accuracy or a val_ mae/mse")
        default = "maximize" if metric.endswith("accuracy") else "minimize"
        direction = o.get("direction", default)
        if direction not in ("maximize", "minimize"):
            raise CicyError(f"objective {metric}: direction must be maximize or minimize, got {_short(direction)}")
        out.append(Objective(metric, direction))
    if len({o.metric for o in out}) != len(out):
        raise CicyError("objectives: the same metric is given twice")
    return out


def _base(raw: dict, folder: Path) -> dict:
    base: dict = {}
    if "base" in raw:
        ref = raw["base"]
        shipped = shipped_configs()
        if not isinstance(ref, str) or not ref.strip():
            raise CicyError(f"base: expected a run config file or a shipped example ({', '.join(sorted(shipped))}), got {_short(ref)}")
        path = config_path(ref, folder)
        if path is None:
            raise CicyError(f"base: {_short(ref)} is neither a run config file nor a shipped example ({', '.join(sorted(shipped))})")
        base = load_file(path)
        base.pop("name", None)
    for section in ("data", "model", "train"):
        if not isinstance(base.get(section, {}), dict):
            raise CicyError(f"base: {section}: expected a mapping of settings")
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
    data_sections, configs = {}, []
    for probe in probes:
        try:
            config = spec.config_for(probe, seed=spec.seed)
        except CicyError as e:
            raise CicyError(f"space: {e}") from None
        data_sections[json.dumps(config["data"], sort_keys=True)] = (config["data"], any(k.startswith("data.") for k in probe))
        configs.append(config)
    from ..data import select

    for section, searched in data_sections.values():
        try:
            select(section)  # every split the study can draw must be non-empty
        except CicyError as e:
            raise CicyError(f"{'space' if searched else 'fixed settings'}: {e}") from None
    if spec.family not in MODELS:  # a plugin's model at both ends of the space, built once on a tiny batch
        from ..training import check_model

        for config in configs[:2]:
            check_model(config)


def _try_sampler_and_pruner(spec: StudySpec) -> None:
    """Run the sampler and the pruner for a few trials on the real space, in memory and at once.

    Some settings pass Optuna's constructors and fail only when it samples or prunes (a missing
    ``cmaes`` package, ``reduction_factor: 1``); without this every trial of the study would fail.
    Startup phases are cut short so the model-based code runs too.
    """
    import optuna

    def short(settings: dict) -> dict:
        out = dict(settings)
        for key in ("n_startup_trials", "n_warmup_steps"):
            if isinstance(out.get(key), int):
                out[key] = min(out[key], 1 if key == "n_startup_trials" else 0)
        return out

    def objective(trial, prune: bool):
        space_mod.sample(spec.params, trial, spec.base)
        values = [(trial.number * 0.37 + 0.11 * i) % 1 for i in range(len(spec.objectives))]
        if prune:
            for step in range(4):
                trial.report(values[0] + 0.01 * step, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return values[0] if len(values) == 1 else values

    pruner = dict(spec.pruner)
    pruner_object = getattr(optuna.pruners, PRUNERS[pruner.pop("name")])(**short(pruner))
    tries = [
        ("sampler", spec.sampler["name"], spec.sampler_object(short(spec.sampler)), optuna.pruners.NopPruner(), False),
        ("pruner", spec.pruner["name"], optuna.samplers.RandomSampler(seed=0), pruner_object, len(spec.objectives) == 1),
    ]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        for kind, name, sampler, pruner_obj, prune in tries:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study = optuna.create_study(sampler=sampler, pruner=pruner_obj, directions=spec.directions)
                try:
                    study.optimize(lambda t: objective(t, prune), n_trials=4, catch=())
                except CicyError:
                    raise
                except ModuleNotFoundError as e:
                    raise CicyError(f"{kind}: {name} needs the Python package {e.name!r}, which is not installed") from None
                except Exception as e:
                    first = (str(e).strip().splitlines() or [""])[0][:200]
                    raise CicyError(f"{kind}: {name} fails with these settings: {type(e).__name__}: {first}") from None
    finally:
        optuna.logging.set_verbosity(verbosity)


def _check_plain(raw: dict) -> None:
    """The file is stored as JSON with the study: YAML dates, sets or binary values cannot be."""
    try:
        json.dumps(raw)
    except (TypeError, ValueError):
        stack = [("", raw)]
        while stack:
            where, v = stack.pop()
            if isinstance(v, dict):
                stack += [(f"{where}.{k}" if where else str(k), x) for k, x in v.items()]
            elif isinstance(v, list):
                stack += [(f"{where}[{i}]", x) for i, x in enumerate(v)]
            elif not (v is None or isinstance(v, (bool, int, float, str))):
                raise CicyError(f"{where[:100]}: {type(v).__name__} values are not allowed (quote it to make it a string)") from None
        raise CicyError("the study file holds values that cannot be stored") from None


def parse(raw: dict, *, folder: Path = Path(".")) -> StudySpec:
    if not isinstance(raw, dict):
        raise CicyError("a study file must be a YAML mapping")
    unknown = sorted(set(raw) - TOP, key=str)
    if unknown:
        raise CicyError(f"unknown key {_short(unknown[0])} (allowed: {', '.join(sorted(TOP))})")
    _check_plain(raw)
    name = raw.get("study")
    if not isinstance(name, str) or not name.strip():
        raise CicyError("study: the study needs a name (study: my_study)")
    if len(name) > MAX_NAME or name != name.strip() or not name.isprintable():
        raise CicyError(
            f"study: {_short(name)}: a name of at most {MAX_NAME} printable characters, without leading or trailing "
            f"spaces, is needed (it also names the MLflow experiment); this one has {len(name):,}"
        )
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise CicyError(f"seed: expected an integer from 0 to {MAX_SEED:,}, got {_short(seed)}")
    base = _base(raw, folder)
    try:
        fixed = resolve({**base, "seed": seed})  # the fixed part alone must be a valid run config
    except CicyError as e:
        raise CicyError(f"fixed settings: {e}") from None
    params = space_mod.parse(raw.get("space"))
    objectives = _objectives(raw, fixed["data"]["targets"], fixed["model"]["family"])
    budget = _section(raw, "budget", {})
    unknown = sorted(set(budget) - {"n_trials", "timeout"}, key=str)
    if unknown:
        raise CicyError(f"unknown key budget.{str(unknown[0])[:60]} (allowed: n_trials, timeout)")
    n_trials, timeout = budget.get("n_trials", 10), budget.get("timeout")
    check_budget(n_trials, timeout, n_trials_name="budget.n_trials", timeout_name="budget.timeout")
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
    _try_sampler_and_pruner(spec)
    return spec


def check_budget(
    n_trials: Any = None, timeout: Any = None, *, n_trials_name: str = "--n-trials", timeout_name: str = "--timeout"
) -> None:
    """A trial count (a positive integer) and a timeout (seconds > 0), each optional; one-line errors."""
    if n_trials is not None and (
        isinstance(n_trials, bool) or not isinstance(n_trials, int) or not 1 <= n_trials <= MAX_TRIALS
    ):
        raise CicyError(f"{n_trials_name}: expected an integer from 1 to {MAX_TRIALS:,}, got {_short(n_trials)}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf
    ):
        raise CicyError(f"{timeout_name}: expected seconds > 0 (or none), got {_short(timeout)}")


def load(path: str | Path) -> StudySpec:
    """Load and validate a study file; every mistake is one ``CicyError`` line that names the key."""
    path = Path(path)
    raw = load_file(path)  # its errors name the file already
    try:
        return parse(raw, folder=path.parent)
    except CicyError as e:
        raise CicyError(f"{path}: {e}") from None
