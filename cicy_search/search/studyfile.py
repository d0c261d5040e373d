"""Study files (``studies/*.yaml``): one study a file, validated completely on load.

A study file names the study (also its MLflow experiment), the fixed run settings (``base`` plus the
``data``/``model``/``train`` sections of a run config), the search ``space`` (see ``space.py``), the
objective(s), the sampler, the pruner and the budget. ``load`` checks every key and tries the
extremes of every range against the model's config schema, so a wrong file fails before anything
is created in a storage or in MLflow.

The family may be searched too (a conditional space, Optuna's define-by-run idiom)::

    space:
      model.family: {type: categorical, choices: [equivariant, inception]}
      train.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}   # every family
    families:
      equivariant:                        # fixed settings and entries of equivariant trials only
        model: {layer: bipartite}
        space: {model.depth: {type: int, low: 2, high: 6}}
      inception:
        data: {canonical: true}
        space: {model.modules: {type: int, low: 1, high: 4}}

A trial of family F starts from F's defaults (``config.FAMILIES``), then: the base file's data and train
sections (its model section only when the base is of family F), the study's ``data``/``model``/``train``, and
``families.F``'s. The study's own ``model`` keys and ``model.*`` entries of ``space`` are shared by every family,
so each must be a setting of every family searched; a setting of some families only belongs in their
``families`` block, and ``load`` refuses it elsewhere with one line saying so. ``data.targets`` and
``data.physics`` (what the objective and pruning read) are the same for every family.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SkipValidation, ValidationError, create_model, model_validator

from . import space as space_mod
from .samplers import PRUNERS, SAMPLERS, Pruner, Sampler, pruner_settings, sampler_settings
from .. import config, schema
from ..config import BUILT_IN, MAX_SEED, checked, config_path, optional, load_file, resolve, set_path, shipped_configs
from ..errors import CicyError
from ..schema import Section, first_error
from ..schema import short as _short

EPOCH_METRICS = {"val_accuracy", "val_loss"}
#: Longest study name: it also names the MLflow experiment (at most 500 characters, and
#: ``NAME-keras-tuner`` for ``study tune``) and every trial's run config (``NAME-17``).
MAX_NAME = 200
MAX_TRIALS = 1_000_000


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective of a study file: a metric and its direction (``search.objective.Objective`` is what trains)."""

    metric: str
    direction: str


@dataclass
class StudySpec:
    name: str
    base: dict
    params: list[space_mod.Param]
    objectives: list[ObjectiveSpec]
    sampler: dict
    pruner: dict
    n_trials: int
    timeout: float | None
    seed: int
    description: str = ""
    raw: dict = field(default_factory=dict)
    #: A searched family's fixed settings, by family (empty when the family is fixed: then ``base`` has them).
    bases: dict[str, dict] = field(default_factory=dict)
    #: Trials the study runs first (``enqueue``): Optuna parameter values by name, checked against the space.
    enqueue: list[dict[str, Any]] = field(default_factory=list)

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def families(self) -> tuple[str, ...]:
        """The families the study's trials may be of: the choices of ``space.model.family``, or the fixed one."""
        return tuple(self.bases) or (self.base.get("model", {}).get("family", "dense"),)

    @property
    def family(self) -> str:
        """The study's family, or its searched families joined by ``|``."""
        return "|".join(self.families)

    def sample(self, trial) -> dict[str, Any]:
        """One trial's values (an Optuna trial, a keras-tuner ``HpTrial`` or a ``space.Example``), by config key."""
        return space_mod.sample(self.params, trial, self.base, self.bases or None)

    def config_for(self, values: dict[str, Any], *, seed: int, name: str | None = None) -> dict:
        """The resolved run config of one trial: the fixed settings (its family's) with the sampled ``values``."""
        config = copy.deepcopy(self.bases[values["model.family"]] if self.bases else self.base)
        for key, value in values.items():
            set_path(config, key, value)
        config["seed"] = seed
        config["name"] = name or self.name
        return resolve(config)

    def monitor(self, family: str | None = None) -> str | None:
        """The per-epoch value pruning watches in a trial of ``family`` (default: the study's): the objective itself
        when Keras logs it each epoch."""
        if len(self.objectives) > 1 or (family or self.family) == "svm":
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


def _objectives(raw: dict, targets: list[str], families: tuple[str, ...]) -> list[ObjectiveSpec]:
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
        if metric == "val_loss" and "svm" in families:
            raise CicyError("objective val_loss: an SVM has no training loss; use val_accuracy or a val_ mae/mse")
        default = "maximize" if metric.endswith("accuracy") else "minimize"
        direction = o.get("direction", default)
        if direction not in ("maximize", "minimize"):
            raise CicyError(f"objective {metric}: direction must be maximize or minimize, got {_short(direction)}")
        out.append(ObjectiveSpec(metric, direction))
    if len({o.metric for o in out}) != len(out):
        raise CicyError("objectives: the same metric is given twice")
    return out


def _base(raw: dict, folder: Path) -> tuple[dict, dict]:
    """The fixed settings (the base file's with the study's sections laid over them), and the base file's own."""
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
    from_file = copy.deepcopy(base)
    for section in ("data", "model", "train"):
        if not isinstance(base.get(section, {}), dict):
            raise CicyError(f"base: {section}: expected a mapping of settings")
        given = raw.get(section, {})
        if not isinstance(given, dict):
            raise CicyError(f"{section}: expected a mapping")
        if section == "model" and "family" in given and given["family"] != base.get("model", {}).get("family", given["family"]):
            base["model"] = {}
        base.setdefault(section, {}).update(given)
    return base, from_file


#: What a ``families`` block may fix or search; and the data settings every family shares (the objective and the
#: pruner read them, so one study cannot mix them).
FAMILY_BLOCK = ("data", "model", "train", "space")
SHARED_DATA = ("targets", "physics")


def _family_choices(raw: dict) -> tuple[str, ...] | None:
    """The families ``space.model.family`` searches (None when it is not searched), checked."""
    space, families = raw.get("space"), raw.get("families")
    entry = space.get("model.family") if isinstance(space, dict) else None
    if entry is None:
        if families is not None:
            raise CicyError("families: per-family settings need model.family in the space (model.family: {type: categorical, choices: [...]})")
        return None
    param = space_mod.parse_param("model.family", entry)
    if param.type != "categorical" or param.per is not None:
        raise CicyError("space.model.family: expected {type: categorical, choices: [FAMILY, ...]} (no per)")
    for choice in param.choices:
        if not isinstance(choice, str) or not choice.strip():
            raise CicyError(f"space.model.family.choices: {_short(choice)} is not a family name")
        try:
            resolve({"model": {"family": choice}})  # an unknown family or a plugin that cannot be loaded
        except CicyError as e:
            raise CicyError(f"space.model.family.choices: {e}") from None
    if "family" in (raw.get("model") or {}):
        raise CicyError("model.family: searched (space.model.family), so it cannot be fixed as well")
    if families is not None and not isinstance(families, dict):
        raise CicyError("families: expected a mapping of family names to {data, model, train, space}")
    for name, block in (families or {}).items():
        if name not in param.choices:
            raise CicyError(f"families.{_short(name)}: not one of space.model.family's choices ({', '.join(param.choices)})")
        block = block or {}
        if not isinstance(block, dict):
            raise CicyError(f"families.{name}: expected a mapping with keys from {', '.join(FAMILY_BLOCK)}")
        for key in block:
            if key not in FAMILY_BLOCK:
                raise CicyError(f"unknown key families.{name}.{_short(key)} (allowed: {', '.join(FAMILY_BLOCK)})")
        for section in ("data", "model", "train"):
            if not isinstance(block.get(section) or {}, dict):
                raise CicyError(f"families.{name}.{section}: expected a mapping")
        if (block.get("model") or {}).get("family", name) != name:
            raise CicyError(f"families.{name}.model.family: the block of {name} cannot name another family")
        for key in SHARED_DATA:
            if key in (block.get("data") or {}):
                raise CicyError(f"families.{name}.data.{key}: the same for every family (the objective reads it); set it in data")
    return param.choices


def _settings_of(family: str) -> set[str]:
    return set(config.FAMILIES[family].model_fields) - {"family"}


def _family_bases(raw: dict, common: dict, from_file: dict, choices: tuple[str, ...]) -> dict[str, dict]:
    """Each searched family's fixed settings: its defaults, the base file's data and train (and its model section
    when of that family), the study's sections, then the family's own block. Shared model keys must fit every
    family."""
    shared = {k: f"model.{k}" for k in common.get("model", {})}
    shared |= {k.split(".")[1]: f"space.{k}" for k in (raw.get("space") or {}) if k.startswith("model.") and k != "model.family"}
    for key, where in shared.items():
        for family in choices:
            if key not in _settings_of(family):
                owners = [f for f in choices if key in _settings_of(f)]
                hint = f"; set it under families.{owners[0]}" if owners else ""
                raise CicyError(f"{where}: shared by every family searched, but {family} has no setting {key}{hint}")
    bases = {}
    file_family = from_file.get("model", {}).get("family", "dense")
    for family in choices:
        block = (raw.get("families") or {}).get(family) or {}
        base = {}
        for section in ("data", "model", "train"):
            laid = dict(from_file.get(section, {})) if section != "model" or file_family == family else {}
            laid.update(common.get(section, {}))
            laid.update(block.get(section) or {})
            base[section] = laid
        base["model"]["family"] = family
        bases[family] = base
    return bases


def _validate_space(spec: StudySpec) -> None:
    searched = bool(spec.bases)
    seen: dict[str, space_mod.Param] = {}
    for p in spec.params:
        family_key = p.name == "model.family" and searched and p.when is None
        if (p.name in ("model.family", "seed", "name") and not family_key) or not p.name.startswith(("model.", "train.", "data.")):
            raise CicyError(f"{p.where}: not a searchable setting (search model.*, train.* or data.* keys)")
        if p.when is not None and p.name in seen and seen[p.name].when is None:
            raise CicyError(f"{p.where}: also in space (searched for every family); give it in one place")
        if p.when is not None and p.name.startswith("data.") and p.name.split(".")[1] in SHARED_DATA:
            raise CicyError(f"{p.where}: the same for every family (the objective reads it); search it in space")
        seen.setdefault(p.name, p)
    examples = []
    for family in spec.families:
        chosen = {"model.family": family} if searched else {}
        mine = [p for p in spec.params if p.when in (None, family) and p.name != "model.family"]
        examples += [space_mod.Example("low", chosen), space_mod.Example("high", chosen)] + [
            space_mod.Example("low", {**chosen, p.label: choice}) for p in mine if p.type == "categorical" for choice in p.choices
        ]
    probes = [spec.sample(example) for example in examples]
    data_sections, configs = {}, {}
    for probe in probes:
        try:
            config = spec.config_for(probe, seed=spec.seed)
        except CicyError as e:
            where = f"space (model.family {probe['model.family']})" if searched else "space"
            raise CicyError(f"{where}: {e}") from None
        data_sections[json.dumps(config["data"], sort_keys=True)] = (config["data"], any(k.startswith("data.") for k in probe))
        configs.setdefault(config["model"]["family"], []).append(config)
    for i, values in enumerate(spec.enqueue):  # each queued trial, the rest of the space at its low end
        try:
            spec.config_for(spec.sample(space_mod.Example("low", values)), seed=spec.seed)
        except CicyError as e:
            raise CicyError(f"enqueue[{i}]: {e}") from None
    from ..data import select

    for section, searched in data_sections.values():
        try:
            select(section)  # every split the study can draw must be non-empty
        except CicyError as e:
            raise CicyError(f"{'space' if searched else 'fixed settings'}: {e}") from None
    for family, family_configs in configs.items():
        if family not in BUILT_IN:  # a plugin's model at both ends of the space, built once on a tiny batch
            from ..training import check_model

            for probe_config in family_configs[:2]:
                check_model(probe_config)


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
        spec.sample(trial)
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


# --- the schema: one typed section per key of a study file ---


def _seconds(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
        raise ValueError(f"expected seconds > 0 (or none), got {_short(v)}")
    return v


def _whole(low: int, high: int):
    """An integer in [low, high]; unlike ``config.int_in`` every refusal says the bounds, as study files always did."""

    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ValueError(f"expected an integer from {low:,} to {high:,}, got {_short(v)}")
        return v

    return check


_n_trials = _whole(1, MAX_TRIALS)


def _name(v):
    if not isinstance(v, str) or not v.strip():
        raise ValueError("the study needs a name (study: my_study)")
    if len(v) > MAX_NAME or v != v.strip() or not v.isprintable():
        raise ValueError(
            f"{_short(v)}: a name of at most {MAX_NAME} printable characters, without leading or trailing "
            f"spaces, is needed (it also names the MLflow experiment); this one has {len(v):,}"
        )
    return v


class Budget(Section):
    """When the study stops: trials finished by all its workers together, and seconds."""

    not_a_mapping: ClassVar[str] = "expected a mapping"
    none_is_empty: ClassVar[bool] = False
    n_trials: checked(Optional[Annotated[int, Field(ge=1, le=MAX_TRIALS)]], optional(_n_trials)) = Field(
        10, description="Finished trials the study runs, shared by all its workers; null for no limit."
    )
    timeout: checked(Optional[Annotated[float, Field(gt=0)]], optional(_seconds)) = Field(
        None, description="Seconds after which a worker starts no new trial; null for no limit."
    )


_METRIC = Union[Literal[tuple(["val_accuracy", "val_loss", "n_params", "train_seconds"] + [
    f"val_{t}_{m}" for t in config.TARGETS for m in ("accuracy", "mae", "mse")
])], Annotated[str, Field(pattern=r"^val_[A-Za-z_][A-Za-z0-9_]*_(accuracy|mae|mse)$")]]  # a data file's own targets


class ObjectiveEntry(BaseModel):
    """One objective: a metric and whether more is better."""

    model_config = ConfigDict(extra="forbid", title="Objective")
    metric: _METRIC = Field(description="A validation metric (val_TARGET_accuracy|mae|mse for the study's targets), n_params or train_seconds.")
    direction: Optional[Literal["maximize", "minimize"]] = Field(None, description="maximize or minimize (default: maximize for accuracies, else minimize).")


_Objective = Union[_METRIC, ObjectiveEntry]


class FamilyBlock(Section):
    """What the trials of one searched family fix and search besides the study's shared settings."""

    data: Annotated[config.Data, SkipValidation] = Field(default_factory=dict, description="Data settings of this family's trials (not targets or physics: those are shared).")
    model: Annotated[Union[tuple(config.FAMILIES.values())], SkipValidation] = Field(default_factory=dict, description="Model settings of this family's trials, laid over its defaults and the study's shared model keys.")
    train: Annotated[config.Train, SkipValidation] = Field(default_factory=dict, description="Training settings of this family's trials.")
    space: Annotated[dict[str, space_mod.Entry], SkipValidation] = Field(default_factory=dict, description="Entries sampled only in this family's trials (Optuna names them FAMILY/KEY).")


class StudyFile(Section):
    """A study file: the fixed run settings, the search space, the objective(s), the sampler, the pruner and the budget.

    Keys whose checks need more than their own value (the base file beside the study file, the targets an objective
    may name, the Optuna classes) are typed here for editors and the docs, and checked by ``parse``."""

    top_level: ClassVar[bool] = True
    study: Annotated[str, BeforeValidator(_name)] = Field(description="The study's name; it also names its MLflow experiment.")
    description: Annotated[str, BeforeValidator(str)] = Field("", description="One line on what the study searches.")
    seed: checked(int, _whole(0, MAX_SEED), ge=0, le=MAX_SEED) = Field(0, description="Seed of the sampler (unless sampler.seed is given) and base seed of the trials.")
    base: Annotated[Optional[str], SkipValidation] = Field(None, description="A run config the fixed settings start from: a file (beside the study file, or a path) or a shipped example (dense, cnn, ...).")
    data: Annotated[config.Data, SkipValidation] = Field(default_factory=dict, description="Fixed data settings, laid over the base's.")
    model: Annotated[Union[tuple(config.FAMILIES.values())], SkipValidation] = Field(default_factory=dict, description="Fixed model settings, laid over the base's (a new family starts from that family's defaults); with model.family searched, settings every family searched has.")
    train: Annotated[config.Train, SkipValidation] = Field(default_factory=dict, description="Fixed training settings, laid over the base's.")
    space: Annotated[dict[str, space_mod.Entry], SkipValidation] = Field(default_factory=dict, description="The search space: dotted run config keys (model.depth) and the values to sample for each; model.family (categorical) searches the family.")
    families: Annotated[Optional[dict[str, FamilyBlock]], SkipValidation] = Field(None, description="With model.family in the space: per family, the settings its trials fix (data, model, train) and the entries only they search (space).")
    objective: Annotated[_Objective, SkipValidation] = Field("val_accuracy", description="What the study optimizes: a metric, or {metric, direction}.")
    objectives: Annotated[list[_Objective], SkipValidation] = Field(default_factory=list, description="Several objectives (a multi-objective study), instead of objective.")
    sampler: Annotated[Union[Literal[tuple(SAMPLERS)], Sampler], SkipValidation] = Field("tpe", description="The sampler: a name, or a mapping of its name and settings.")
    pruner: Annotated[Union[Literal[tuple(PRUNERS)], None, Pruner], SkipValidation] = Field("none", description="The pruner: a name, or a mapping of its name and settings.")
    budget: Budget = Field(Budget(), description="When the study stops.")
    enqueue: Annotated[list[dict[str, Any]], SkipValidation] = Field(
        default_factory=list,
        description="Trials run first, before the sampler's (Optuna's enqueue_trial): each a mapping of space keys to values inside the space; keys left out are sampled. Queued once, when the study is created.",
    )

    @model_validator(mode="before")
    @classmethod
    def _plain_and_named(cls, given: Any) -> Any:
        if not isinstance(given, dict) or not set(given) <= set(cls.model_fields):
            return given  # the section check reports it
        _check_plain(given)  # its CicyError passes through pydantic as it is: it names the place itself
        return {"study": None, **given}  # a missing name is told as an empty one


@functools.cache
def _study_file(families: tuple[type[Section], ...]) -> type[StudyFile]:
    """``StudyFile`` whose model section is described as one of ``families`` (``config.schema_families()``)."""
    model = (Annotated[Union[families], SkipValidation], Field(default_factory=dict, description=StudyFile.model_fields["model"].description))
    return create_model("StudyFile", __base__=StudyFile, __doc__=StudyFile.__doc__, model=model)


def json_schema(plugins: tuple[str, ...] = ()) -> dict:
    """The JSON Schema of a study file (what ``cicy-search schema study`` prints); ``plugins``: as
    ``config.json_schema``."""
    families = config.schema_families(tuple(plugins))
    js = schema.json_schema(_study_file(families), "cicy-search study file", "A study file: one Optuna study, its fixed settings, search space, objective(s), sampler, pruner and budget.")
    for cls in families:  # a study's model section lays keys on its base's: the family may come from there
        js["$defs"][cls.__name__].pop("required", None)
    js["properties"]["space"]["propertyNames"] = {"pattern": r"^(model|train|data)\."}
    js["$defs"]["FamilyBlock"]["properties"]["space"]["propertyNames"] = {"pattern": r"^(model|train|data)\."}
    family_data = js["$defs"]["FamilyBlock"]["properties"]["data"]
    for key in SHARED_DATA:  # the same for every family: refused in a family's block (additionalProperties: false)
        family_data["properties"].pop(key)
    for key in ("if", "else"):  # the rule for a data file's own targets: targets are not written here
        family_data.pop(key, None)
    return js


def reference_rows() -> list[dict]:
    """One row per key of a study file ({key, family, type, default, bounds, description}); a space entry's keys
    once per entry type (in ``family``), as ``space.KEY.low``."""
    js = json_schema()
    sections = {key: [(None, js["$defs"][key.capitalize()])] for key in ("sampler", "pruner", "budget")}
    sections["space"] = [(cls.model_fields["type"].annotation.__args__[0], js["$defs"][cls.__name__]) for cls in space_mod.ENTRIES]
    rows = schema.rows(js, sections)
    for row in rows:
        row["key"] = row["key"].replace("space.", "space.KEY.", 1)
    return rows


def parse(raw: dict, *, folder: Path = Path(".")) -> StudySpec:
    if not isinstance(raw, dict):
        raise CicyError("a study file must be a YAML mapping")
    try:
        valid = StudyFile.model_validate(raw)
    except ValidationError as e:
        raise CicyError(first_error(e)) from None
    choices = _family_choices(raw)
    base, from_file = _base(raw, folder) if choices is None else _base({k: v for k, v in raw.items() if k != "model"}, folder)
    if choices is not None:
        base["model"] = dict(raw.get("model") or {})  # the shared model keys; each family's are in bases
    bases = {} if choices is None else _family_bases(raw, base, from_file, choices)
    for family_base in bases.values() or [base]:
        try:
            fixed = resolve({**family_base, "seed": valid.seed})  # the fixed part alone must be a valid run config
        except CicyError as e:
            where = f"fixed settings of {family_base['model']['family']}" if bases else "fixed settings"
            raise CicyError(f"{where}: {e}") from None
    params = space_mod.parse(raw.get("space"))
    for family, block in (raw.get("families") or {}).items():
        params += space_mod.parse((block or {}).get("space"), where=f"families.{family}.space", when=family, shared=params)
    params = space_mod.order(params)
    objectives = _objectives(raw, fixed["data"]["targets"], choices or (fixed["model"]["family"],))
    spec = StudySpec(
        name=valid.study,
        base=base,
        params=params,
        objectives=objectives,
        sampler=sampler_settings(raw.get("sampler"), valid.seed, params, len(objectives)),
        pruner=pruner_settings(raw.get("pruner"), len(objectives)),
        n_trials=valid.budget.n_trials,
        timeout=valid.budget.timeout,
        seed=valid.seed,
        description=valid.description,
        raw=raw,
        bases=bases,
        enqueue=_enqueue(raw.get("enqueue"), params),
    )
    _validate_space(spec)
    _try_sampler_and_pruner(spec)
    return spec


def _enqueue(given: Any, params: list[space_mod.Param]) -> list[dict[str, Any]]:
    """The ``enqueue`` entries, each value checked against its space entry (Optuna would run a value outside
    the space with only a warning)."""
    if given is None:
        return []
    if not isinstance(given, list):
        raise CicyError("enqueue: expected a list of mappings of space keys to values")
    by_label = {p.label: p for p in params}
    trials = []
    for i, values in enumerate(given):
        if not isinstance(values, dict) or not values:
            raise CicyError(f"enqueue[{i}]: expected a mapping of space keys to values, like {{model.depth: 4}}")
        for key, value in values.items():
            p = by_label.get(key)
            if p is None:
                raise CicyError(f"enqueue[{i}].{key if isinstance(key, str) else _short(key)}: not a key of the space ({', '.join(by_label) or 'the space is empty'})")
            if p.per is not None:
                raise CicyError(f"enqueue[{i}].{key}: sampled per {p.per}: an enqueued trial cannot fix it")
            reason = space_mod.outside(p, value)
            if reason:
                raise CicyError(f"enqueue[{i}].{key}: {reason}")
        trials.append(dict(values))
    return trials


def check_budget(
    n_trials: Any = None, timeout: Any = None, *, n_trials_name: str = "--n-trials", timeout_name: str = "--timeout"
) -> None:
    """A trial count (a positive integer) and a timeout (seconds > 0), each optional; one-line errors."""
    for name, check, value in ((n_trials_name, _n_trials, n_trials), (timeout_name, _seconds, timeout)):
        if value is not None:
            try:
                check(value)
            except ValueError as e:
                raise CicyError(f"{name}: {e}") from None


def load(path: str | Path) -> StudySpec:
    """Load and validate a study file; every mistake is one ``CicyError`` line that names the key."""
    path = Path(path)
    raw = load_file(path)  # its errors name the file already
    try:
        return parse(raw, folder=path.parent)
    except CicyError as e:
        raise CicyError(f"{path}: {e}") from None
