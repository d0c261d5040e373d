"""The run config: one plain mapping, validated once, that every model builder and trainer reads.

A YAML run file, a study's fixed settings plus an Optuna trial's sample and a keras-tuner ``hp``
all become this mapping::

    {"name": ..., "seed": 0,
     "data":  {"dataset": "original", "targets": ["h11"], "train": 0.8, ...},
     "model": {"family": "dense", "head": "classification", "depth": 3, ...},
     "train": {"epochs": 20, "batch_size": 32, "learning_rate": 0.001, ...}}

One pydantic class per section (``Data``, ``Train``, one per model family in ``FAMILIES``) gives every key its
type, default, bounds and description. ``resolve`` validates with them, fills in every default and rejects unknown
keys and wrong values with one line naming the key; ``json_schema`` and ``reference_rows`` describe them for
editors and the docs.
"""

from __future__ import annotations

import copy
import functools
import math
import operator
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, create_model, model_validator

from . import schema
from .errors import CicyError
from .schema import Section, first_error
from .schema import short as _short

# Reading YAML has its own module; run configs are read with it, and callers have always imported it from here.
from .yamlfiles import MAX_YAML_VALUES, Dumper, Loader, decode, dump_yaml, load_file, parse_yaml, read_text  # noqa: F401

# Upper bounds: far above anything useful on 12x15 matrices, low enough that a typo cannot ask for a
# network that exhausts memory or a run that never ends.
MAX_DEPTH = 64
MAX_WIDTH = 16_384
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536
MAX_KERNEL = 64
MAX_SEED = 2**32 - 1  # NumPy's and Keras's seeds are 32-bit
MAX_ENSEMBLE = 64
#: The exact invariants ``data.FEATURES`` computes (kept equal by a test: ``data`` is too heavy to import here).
FEATURES = ("euler", "c2", "koszul", "koszul_share")
TARGETS = ("h11", "h21", "h31", "h22")  # h31 and h22: 4-folds only
_SHAPE = r"\s*\d+\s*x\s*\d+\s*"  # a kernel shape written "12x1"

# --- value types: the type and bounds editors and the docs see, and the checker that refuses a value with a
# short reason (``ValueError``; ``schema.first_error`` puts the key in front) and returns it normalised ---


def checked(kind, check, **bounds):
    """``kind`` within ``bounds`` (pydantic's ge, gt, le, lt), checked first by ``check``, whose reasons users read."""
    return Annotated[kind, Field(**bounds), BeforeValidator(check)]


def _inputs(kind, check, inputs):
    """``kind`` as validated, with ``inputs`` (every spelling a user may write) as its JSON Schema."""
    return Annotated[kind, BeforeValidator(check, json_schema_input_type=inputs)]


def optional(check):
    """``check``, or null."""
    return lambda v: None if v is None else check(v)


_COMPARE = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}


def _bounded(kind, what: str, bounds: dict):
    """A checker: ``kind`` (a checker itself) then ``bounds``, refused as ``expected {what}``."""

    def check(v):
        if not all(_COMPARE[k](kind(v), b) for k, b in bounds.items()):
            raise ValueError(f"expected {what}, got {_short(v)}")
        return kind(v)

    return check


def _int(v):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected an integer, got {_short(v)}")
    return v


def int_in(low: int, high: int):
    """An integer within [low, high]; the bounds are said in the error."""
    return _bounded(_int, f"an integer from {low:,} to {high:,}", {"ge": low, "le": high})


def _between(low: int, high: int):
    return checked(int, int_in(low, high), ge=low, le=high)


_pos_int = _bounded(_int, "a positive integer", {"ge": 1})


def _float(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {_short(v)}")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise ValueError(f"expected a finite number, got {_short(v)}")
    return f


def _number(what: str, **bounds):
    """A finite number within ``bounds``; refused as ``expected {what}``."""
    return checked(float, _bounded(_float, what, bounds), **bounds)


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {_short(v)}")
    return v


def _choice(*options):
    def check(v):
        # ``1 == True``: compare types too, so ``jit_compile: 1`` is not taken for ``true``.
        if not any(v == o and type(v) is type(o) for o in options):
            raise ValueError(f"expected one of {', '.join(map(str, options))}, got {_short(v)}")
        return v

    return check


def _one_of(*options):
    return Annotated[Literal[options], BeforeValidator(_choice(*options))]


def _int_or_list(v):
    """An int (the same for every layer) or one positive int per layer, at most ``MAX_WIDTH``."""
    width = int_in(1, MAX_WIDTH)
    if isinstance(v, list):
        if not v:
            raise ValueError("expected a non-empty list")
        if len(v) > MAX_DEPTH:
            raise ValueError(f"expected at most {MAX_DEPTH} values, got {len(v):,}")
        return [width(x) for x in v]
    return width(v)


def _pair(v):
    if isinstance(v, str):
        m = re.fullmatch(_SHAPE.replace(r"\d+", r"(\d+)"), v)
        if not m:
            raise ValueError(f"expected a shape like '12x1', got {_short(v)}")
        v = [int(m.group(1)), int(m.group(2))]
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if not (isinstance(v, (list, tuple)) and len(v) == 2):
        raise ValueError(f"expected a shape [height, width], got {_short(v)}")
    return [int_in(1, MAX_KERNEL)(x) for x in v]


def kernel_set(v) -> list[list[int]]:
    """One module's kernel shapes: ``"12x1,1x15"`` or ``[[12, 1], [1, 15]]``."""
    if isinstance(v, str):
        v = [s for s in v.split(",") if s.strip()]
    if not isinstance(v, (list, tuple)) or not v:
        raise ValueError(f"expected kernel shapes like '12x1,1x15' or [[12, 1], [1, 15]], got {_short(v)}")
    if len(v) > MAX_DEPTH:
        raise ValueError(f"expected at most {MAX_DEPTH} kernel shapes, got {len(v):,}")
    return [_pair(k) for k in v]


def _kernels(v):
    """Kernel shapes: one set for every module, or a list of sets, one per module.

    A string is always one set (``"12x1,1x15"``), so a list of strings is one set per module; a list of
    pairs (``[[12, 1], [1, 15]]``) is one set and a list of lists of pairs is one set per module.
    """
    if isinstance(v, list) and v and all(
        isinstance(s, str) or (isinstance(s, list) and s and isinstance(s[0], list)) for s in v
    ):
        if len(v) > MAX_DEPTH:
            raise ValueError(f"expected at most {MAX_DEPTH} kernel sets, got {len(v):,}")
        return [kernel_set(s) for s in v]
    return kernel_set(v)


def _targets(v):
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(t, str) for t in v) or len(set(v)) != len(v):
        raise ValueError(f"expected h11, h21 or [h11, h21], got {_short(v)}")
    for t in v:  # which exist depends on the data set (_check_consistency); a data file names its own
        if not re.fullmatch(NAME, t):
            raise ValueError(f"unknown target {_short(t)}: choose from h11, h21 (and h31, h22 for 4-folds, a data file's own columns)")
    return v


def _dataset(v):
    """A shipped 3-fold list, the path of an imported 4-fold list (``cicy-search data import-cicy4``) or of a data file."""
    if v in ("original", "favourable") and isinstance(v, str):
        return v
    if isinstance(v, str) and v.endswith((".npz", ".csv", ".json")) and len(v) <= 4096:
        return v
    raise ValueError(
        f"expected original, favourable, an imported 4-fold list (.npz) or a data file (.csv, .json, .npz), got {_short(v)}"
    )


def _features(v):
    if isinstance(v, str):  # "euler,c2" (how a search space's categorical choice writes a list), "" for none
        v = [f.strip() for f in v.split(",") if f.strip()]
    if not isinstance(v, list) or len(set(v)) != len(v) or any(f not in FEATURES for f in v):
        raise ValueError(f"expected a list of exact invariants from {', '.join(FEATURES)}, got {_short(v)}")
    return v


def _string(v):
    if v is not None and not isinstance(v, str):
        raise ValueError(f"expected a string, got {_short(v)}")
    return v


Seed = _between(0, MAX_SEED)
PositiveInt = checked(int, _pos_int, ge=1)
Fraction = _number("a fraction in [0, 1]", ge=0, le=1)
Rate = _number("a rate in [0, 1)", ge=0, lt=1)
NonNegative = _number("a non-negative number", ge=0)
Positive = _number("a positive number", gt=0)
Bool = Annotated[bool, BeforeValidator(_bool)]
Head = _one_of("classification", "regression")
_Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Widths = Annotated[_Width | Annotated[list[_Width], Field(min_length=1, max_length=MAX_DEPTH)], BeforeValidator(_int_or_list)]
_Side = Annotated[int, Field(ge=1, le=MAX_KERNEL)]
_ShapeInput = Annotated[str, Field(pattern=f"^{_SHAPE}$")] | _Side | Annotated[list[_Side], Field(min_length=2, max_length=2)]
Shape = _inputs(list[int], _pair, _ShapeInput)
_KernelSetInput = (
    Annotated[str, Field(pattern=rf"^[\s,]*{_SHAPE}(,[\s,]*{_SHAPE})*[\s,]*$")]
    | Annotated[list[_ShapeInput], Field(min_length=1, max_length=MAX_DEPTH)]
)
Kernels = _inputs(
    list[list[int]] | list[list[list[int]]],
    _kernels,
    _KernelSetInput | Annotated[list[_KernelSetInput], Field(min_length=1, max_length=MAX_DEPTH)],
)
_UNIQUE = {"uniqueItems": True}
_TARGET = Literal[TARGETS]
#: A target name: a Hodge number of the CICY lists, or a column of a data file (it becomes a metric's name).
NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_NAMED = Annotated[str, Field(pattern=NAME)]
Targets = _inputs(list[str], _targets, _NAMED | Annotated[list[_NAMED], Field(min_length=1, json_schema_extra=_UNIQUE)])
#: What the JSON Schema allows as targets of a shipped or imported list (a data file names its own columns).
_CICY_TARGETS = {"anyOf": [{"enum": list(TARGETS)}, {"type": "array", "items": {"enum": list(TARGETS)}, "minItems": 1, "uniqueItems": True}]}
_DATA_FILE = r"\.(npz|csv|json)$"
Features = _inputs(list[str], _features, str | Annotated[list[Literal[FEATURES]], Field(json_schema_extra=_UNIQUE)])
Dataset = _inputs(str, _dataset, Literal["original", "favourable"] | Annotated[str, Field(pattern=_DATA_FILE, max_length=4096)])
_positive = _bounded(_float, "a positive number", {"gt": 0})
Gamma = Annotated[Literal["scale", "auto"] | Annotated[float, Field(gt=0)], BeforeValidator(lambda v: v if v in ("scale", "auto") else _positive(v))]


class Data(Section):
    """The ``data`` section: which list, which targets, the split and the inputs."""

    # Targets other than the Hodge numbers only with a data file (or a .npz, which may be one).
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "if": {"required": ["dataset"], "properties": {"dataset": {"type": "string", "pattern": _DATA_FILE}}},
        "else": {"properties": {"targets": _CICY_TARGETS}},
    })

    dataset: Dataset = Field("original", description="The shipped 3-fold list (original, favourable), the path of an imported 4-fold list (.npz) or of a data file of your own (.csv, .json, .npz).")
    targets: Targets = Field(["h11"], description="The Hodge numbers to predict (h31 and h22 for 4-folds only), or a data file's own columns; several make a multi-task model.")
    train: Fraction = Field(0.8, description="Share of the list in the training split.")
    val: Fraction = Field(0.1, description="Share of the list in the validation split (selection, early stopping, pruning); must be positive.")
    test: Fraction = Field(0.1, description="Share of the list in the test split, read once per model and never for selection.")
    seed: Seed = Field(0, description="Seed of the split: the same seed gives the same rows in every run.")
    stratify: Bool = Field(True, description="Split each h11 class in the same proportions.")
    keep_products: Bool = Field(False, description="Keep the product manifolds (h11 = 0), dropped by default.")
    limit: checked(Optional[Annotated[int, Field(ge=1)]], optional(_pos_int)) = Field(
        None, description="Use only the first this many matrices (quick runs and tests); null for the whole list."
    )
    canonical: Bool = Field(False, description="Feed every matrix in its canonical row and column order, the same for every permutation.")
    features: Features = Field([], description="Exact invariants added as input channels (a list, or names joined by commas).")
    physics: Bool = Field(False, description="Learn h11 and derive h21 (h31, h22 for 4-folds) from it with the exact Euler number.")


class Train(Section):
    """The ``train`` section: how the model is fitted."""

    epochs: _between(1, MAX_EPOCHS) = Field(20, description="Passes over the training split, at most.")
    batch_size: _between(1, MAX_BATCH) = Field(32, description="Matrices per gradient step.")
    optimizer: _one_of("adam", "sgd", "rmsprop", "adamw") = Field("adam", description="The Keras optimizer.")
    learning_rate: Positive = Field(1e-3, description="The optimizer's (initial) learning rate.")
    early_stopping: _between(0, MAX_EPOCHS) = Field(0, description="Stop after this many epochs without a lower validation loss and keep the best weights; 0 never stops early.")
    lr_schedule: _one_of("none", "reduce_on_plateau", "cosine") = Field("none", description="How the learning rate changes during training.")
    lr_factor: _number("a factor in (0, 1)", gt=0, lt=1) = Field(0.3, description="reduce_on_plateau: the factor the learning rate is multiplied by.")
    lr_patience: _between(1, MAX_EPOCHS) = Field(5, description="reduce_on_plateau: epochs without a lower validation loss before the rate is reduced.")
    steps_per_execution: checked(Optional[Annotated[int, Field(ge=1, le=MAX_EPOCHS)]], optional(int_in(1, MAX_EPOCHS))) = Field(
        None, description="loop: keras: training steps per compiled call; null for up to 32."
    )
    loop: _one_of("fast", "keras") = Field("fast", description="How an epoch runs: fast is one compiled call over in-memory tensors, keras is model.fit.")
    jit_compile: _one_of("auto", True, False) = Field("auto", description="Compile with XLA; auto: on a GPU, and on a CPU for models without convolutions.")
    mixed_precision: Bool = Field(False, description="Compute in float16 with float32 weights (for GPUs).")
    augment: _one_of("none", "permute") = Field("none", description="permute: randomly permute the rows and columns of every training batch (fast loop only).")
    ensemble: _between(1, MAX_ENSEMBLE) = Field(
        1, description="Train this many models one after the other (seeds seed, seed + 1, ...) and average their outputs; 1: one model."
    )


class _Network(Section):
    """Settings every neural network family has."""

    family: str
    head: Head = Field("classification", description="classification: softmax over the values seen in the data; regression: one output, rounded for accuracy.")
    activation: _one_of("relu", "elu", "gelu", "selu", "tanh", "swish", "linear") = Field("relu", description="Activation of the hidden layers.")
    l1: NonNegative = Field(0.0, description="L1 penalty on the weights.")
    l2: NonNegative = Field(0.0, description="L2 penalty on the weights.")
    dropout: Rate = Field(0.0, description="Dropout rate after each hidden layer.")
    batch_norm: Bool = Field(False, description="Batch normalisation after each hidden layer.")
    rows_offset: Bool = Field(
        False,
        description="classification of h11: score h11 minus the matrix's number of non-zero rows (h11 is at least that on every CICY; the model counts the rows itself).",
    )


def _default(section: type[Section], key: str, default: Any):
    """``section``'s ``key`` with another default."""
    return Field(default, description=section.model_fields[key].description)


class Dense(_Network):
    """A fully connected network on the flattened matrix (the seed talk's)."""

    family: Literal["dense"] = Field("dense", description="The model family.")
    depth: _between(1, MAX_DEPTH) = Field(3, description="Hidden layers.")
    width: Widths = Field(128, description="Units per hidden layer: one number for all, or one per layer.")


class Cnn(_Network):
    """A convolutional network with pooling, then dense layers."""

    family: Literal["cnn"] = Field(description="The model family.")
    depth: _between(1, MAX_DEPTH) = Field(2, description="Convolution layers.")
    filters: Widths = Field(32, description="Filters per convolution layer: one number for all, or one per layer.")
    kernel_size: Shape = Field([3, 3], description="Kernel shape [height, width] (or '3x3', or one side).")
    strides: Shape = Field([1, 1], description="Strides [down, across] of each convolution.")
    padding: _one_of("same", "valid") = Field("same", description="same: zero padding keeps the shape; valid: no padding.")
    pool: _one_of("max", "avg", "none") = Field("max", description="Pooling after each convolution layer.")
    pool_size: Shape = Field([2, 2], description="Pooling window [height, width].")
    dense_depth: _between(0, MAX_DEPTH) = Field(1, description="Dense layers after the convolutions.")
    dense_width: _between(1, MAX_WIDTH) = Field(128, description="Units per dense layer.")


class Inception(_Network):
    """Inception modules of parallel convolutions (Erbin & Finotello, arXiv 2007.13379)."""

    family: Literal["inception"] = Field(description="The model family.")
    head: Head = _default(_Network, "head", "regression")
    l1: NonNegative = _default(_Network, "l1", 1e-4)
    l2: NonNegative = _default(_Network, "l2", 1e-4)
    dropout: Rate = Field(0.2, description="Dropout rate before the output.")
    batch_norm: Bool = Field(True, description="Batch normalisation in each module.")
    modules: _between(1, MAX_DEPTH) = Field(3, description="Inception modules.")
    filters: Widths = Field([32, 64, 32], description="Filters per branch: one number for all modules, or one per module.")
    kernels: Kernels = Field([[12, 1], [1, 15]], description="Kernel shapes of the branches ('12x1,1x15'), one set for every module or one set per module.")
    block: _one_of("concat_norm", "talk") = Field("concat_norm", description="concat_norm: branches with bias and activation, concatenated, one batch norm; talk: per branch a convolution without bias, batch norm without scale, activation.")


class Equivariant(_Network):
    """A permutation-equivariant network whose predictions ignore row and column order (Hartford et al. 2018)."""

    family: Literal["equivariant"] = Field(description="The model family.")
    layer: _one_of("exchangeable", "bipartite") = Field("exchangeable", description="exchangeable: each entry with pooled row, column and global features; bipartite: messages between rows and columns.")
    depth: PositiveInt = Field(4, description="Equivariant layers.")
    width: PositiveInt = Field(64, description="Features per entry in each layer.")
    pooling: _one_of("mean", "sum", "max") = Field("mean", description="How the present entries are pooled into one vector for the head.")
    embedding: _one_of("onehot", "linear") = Field("onehot", description="How an entry's value becomes its first features.")
    norm: _one_of("layer", "none") = Field("layer", description="Layer normalisation in each block.")
    residual: Bool = Field(True, description="Residual connections around each block.")
    head_width: PositiveInt = Field(128, description="Units of the dense layer after the pooling.")
    update_layers: _between(1, MAX_DEPTH) = Field(1, description="bipartite only: Dense layers in each row and column update (2 or more: a multi-layer perceptron on the pooled messages).")


class Svm(Section):
    """A support vector machine on the flattened matrix (He et al.): scikit-learn's SVC or SVR."""

    family: Literal["svm"] = Field(description="The model family.")
    head: Head = Field("regression", description="classification: SVC; regression: SVR, rounded for accuracy.")
    kernel: _one_of("rbf", "linear", "poly", "sigmoid") = Field("rbf", description="The SVM kernel.")
    C: Positive = Field(10.0, description="Regularisation: larger C fits the training split more closely.")
    gamma: Gamma = Field("scale", description="Kernel coefficient: scale, auto or a positive number.")
    epsilon: NonNegative = Field(0.1, description="regression: the width of the tube inside which errors cost nothing.")


#: The model families and their settings. A plugin adds its family here: a ``Section`` whose ``family`` is a
#: required ``Literal`` of its name; run configs, the JSON Schema and the reference rows know it from then on.
FAMILIES: dict[str, type[Section]] = {"dense": Dense, "cnn": Cnn, "inception": Inception, "equivariant": Equivariant, "svm": Svm}
BUILT_IN = tuple(FAMILIES)  # the shipped families; a plugin joins FAMILIES when a config first names it


class Plugin(Section):
    """A plugin family (``package.module:function``, or an installed entry point of ``cicy_search.models``): the
    schema editors see for any plugin not named to ``json_schema``. The loader checks ``params`` against what the
    plugin declares (``plugins.Params``)."""

    family: str = Field(description="The model family: a plugin's package.module:function, or an installed entry point's name.")
    head: Head = Field("classification", description=Dense.model_fields["head"].description)
    params: Optional[dict[str, Any]] = Field(None, description="The parameters the plugin declares, by name (see the plugin's Params).")


def schema_families(plugins: tuple[str, ...] = ()) -> tuple[type[Section], ...]:
    """The model sections a JSON Schema describes: the built-in families, the ``plugins`` named (their declared
    params), and any other plugin (``Plugin``). Plugins this process happened to load are left out, so the schema
    is the same in every process."""
    for name in plugins:
        if name not in FAMILIES:
            FAMILIES[name] = _plugin(name)
    named = (*BUILT_IN, *(p for p in plugins if p not in BUILT_IN))
    # Any name but those described above (pydantic's regex engine has no look-ahead: the pattern is for the JSON
    # Schema only).
    pattern = r"^(?!(" + "|".join(map(re.escape, named)) + r")$)[A-Za-z_][\w.-]*(:[A-Za-z_]\w*)?$"
    other = create_model(
        "Plugin", __base__=Plugin, __doc__=Plugin.__doc__,
        family=(str, Field(description=Plugin.model_fields["family"].description, json_schema_extra={"pattern": pattern})),
    )  # fmt: skip
    return (*(FAMILIES[f] for f in named), other)


def _plugin(name: str) -> type[Section]:
    """The model section of a plugin family (``plugins``): ``family``, ``head`` and ``params``, a section of the
    parameters the builder declares (``plugins.Params``) with their types, bounds, defaults and help."""
    from .models import family

    found = family(name)  # one line naming the plugin when it cannot be found, imported or has a bad schema
    fields = {}
    for key, p in found.params.items():
        kind = {"int": int, "float": float, "bool": bool}.get(p.type) or Literal[p.choices]
        bounds = {"ge": p.low, "le": p.high} if p.type in ("int", "float") else {}
        fields[key] = (checked(kind, p.check, **bounds), Field(p.default, description=p.help or f"A parameter of {name}."))
    tag = re.sub(r"\W", "_", name)
    params = create_model(f"Params_{tag}", __base__=Section, __doc__=f"The parameters {name} declares.", **fields)
    doc = (found.build.__doc__ or f"The model family {name}.").strip().splitlines()[0]
    return create_model(
        f"Plugin_{tag}",
        __base__=Section,
        __doc__=doc,
        family=(Literal[name], Field(description="The model family: a plugin's package.module:function, or an installed entry point's name.")),
        head=(Head, Field("classification", description=Dense.model_fields["head"].description)),
        params=(_or_null(params), Field(params(), description=f"The parameters {name} declares.")),
    )


def _model_union(families: tuple[type[Section], ...]):
    """The families' sections, told apart by ``family`` (dense when none is given)."""
    return Annotated[Union[families], Field(discriminator="family")]


def _or_null(section):
    """A section that may also be written ``null`` (all defaults), as ``Section`` reads it."""
    return Annotated[section, BeforeValidator(lambda v: v, json_schema_input_type=Optional[section])]


class RunConfig(Section):
    """A run config: every key not given takes its default."""

    top_level: ClassVar[bool] = True
    seed: Seed = Field(0, description="Seed of the weights' initialisation and of the training order.")
    name: Annotated[Optional[str], BeforeValidator(_string)] = Field(None, description="The run's name (default: the model family).")
    data: _or_null(Data) = Field(Data(), description="Which list, which targets, the split and the inputs.")
    model: _or_null(_model_union(tuple(FAMILIES.values()))) = Field(Dense(), description="The model family and its settings.")
    train: _or_null(Train) = Field(Train(), description="How the model is fitted.")

    @model_validator(mode="before")
    @classmethod
    def _family_first(cls, given: Any) -> Any:
        """A model section needs a known family (dense when none is given) before its keys mean anything."""
        if not isinstance(given, dict) or not set(given) <= set(cls.model_fields):
            return given  # the section check reports it
        model = given.get("model") or {}
        if not isinstance(model, dict):
            raise ValueError("model: expected a mapping of settings")
        family = model.get("family", "dense")
        if not isinstance(family, str) or family not in FAMILIES:
            raise ValueError(f"unknown model family {_short(family)}: choose one of {', '.join(BUILT_IN)}, or name a plugin as package.module:function")
        return {**given, "model": {**model, "family": family}}


@functools.cache
def _run_config(families: tuple[type[Section], ...]) -> type[RunConfig]:
    """``RunConfig`` whose model section is one of ``families`` (those of ``FAMILIES`` now, plugins included)."""
    if families == RunConfig.model_fields["model"].annotation.__args__:
        return RunConfig
    shipped = RunConfig.model_fields["model"]
    model = (_or_null(_model_union(families)), Field(shipped.default, description=shipped.description))
    return create_model("RunConfig", __base__=RunConfig, __doc__=RunConfig.__doc__, model=model)


def resolve(config: dict | None) -> dict:
    """Validate a run config and fill in every default; the result is complete and self-describing."""
    config = copy.deepcopy(config or {})
    if not isinstance(config, dict):
        raise CicyError(f"a run config must be a mapping, got {type(config).__name__}")
    model = config.get("model")
    family = model.get("family") if isinstance(model, dict) else None
    if isinstance(family, str) and family not in FAMILIES:
        FAMILIES[family] = _plugin(family)
    try:
        c = _run_config(tuple(FAMILIES.values())).model_validate(config)
    except ValidationError as e:
        raise CicyError(first_error(e, skip=tuple(FAMILIES))) from None
    resolved = {
        "name": c.name or c.model.family,
        "seed": c.seed,
        "data": c.data.model_dump(),
        "model": c.model.model_dump(),
        "train": c.train.model_dump(),
    }
    _check_consistency(resolved)
    return resolved


def json_schema(plugins: tuple[str, ...] = ()) -> dict:
    """The JSON Schema of a run config (what ``cicy-search schema config`` prints): the built-in families, the
    ``plugins`` named with their declared params, or any other plugin."""
    shipped = RunConfig.model_fields["model"]
    model = (_or_null(Union[schema_families(tuple(plugins))]), Field(shipped.default, description=shipped.description))
    described = create_model("RunConfig", __base__=RunConfig, __doc__=RunConfig.__doc__, model=model)
    return schema.json_schema(described, "cicy-search run config", "A run config: data, model and train settings; every key not given takes its default.")


def reference_rows(plugins: tuple[str, ...] = ()) -> list[dict]:
    """One row per key of a run config ({key, family, type, default, bounds, description}), model keys per family
    (``plugin`` for what any other plugin family takes)."""
    js = json_schema(plugins)
    sections = {key: [(None, js["$defs"][key.capitalize()])] for key in ("data", "train")}
    sections["model"] = [
        (getattr(cls.model_fields["family"].annotation, "__args__", ("plugin",))[0], js["$defs"][cls.__name__])
        for cls in schema_families(tuple(plugins))
    ]
    return schema.rows(js, sections)


def _check_consistency(c: dict) -> None:
    m, d = c["model"], c["data"]
    if d["train"] + d["val"] + d["test"] > 1 + 1e-9:
        raise CicyError(f"data: split fractions train + val + test = {d['train'] + d['val'] + d['test']:g} > 1")
    if d["val"] == 0:
        raise CicyError("data.val: a validation split is needed for per-epoch validation curves and selection")
    for key, count in (("width", "depth"), ("filters", "depth" if m["family"] == "cnn" else "modules")):
        if isinstance(m.get(key), list) and len(m[key]) != m[count]:
            raise CicyError(f"model.{key}: {len(m[key])} values given for {count} = {m[count]}")
    if m["family"] == "equivariant" and m["update_layers"] > 1 and m["layer"] != "bipartite":
        raise CicyError("model.update_layers: the row and column updates are layer: bipartite's; layer: exchangeable has none")
    if m.get("rows_offset") and (m["head"] != "classification" or "h11" not in d["targets"]):
        raise CicyError("model.rows_offset: offsets a classification head of h11: needs model.head: classification and h11 in data.targets")
    if c["train"]["augment"] != "none" and c["train"]["loop"] != "fast":
        raise CicyError("train.augment: permutation augmentation runs in the fast loop (train.loop: fast)")
    if c["train"]["augment"] != "none" and d["canonical"]:
        raise CicyError("train.augment: permuting training matrices undoes data.canonical; choose one")
    if c["train"]["ensemble"] > 1 and m["family"] == "svm":
        raise CicyError("train.ensemble: averages neural networks; an SVM trained again is the same SVM: set it to 1")
    from .data import source

    try:
        src = source(d["dataset"])
    except CicyError as e:
        raise CicyError(f"data.dataset: {e}") from None
    four = src.kind == "cicy4"
    if src.kind == "shipped" and {"h31", "h22"} & set(d["targets"]):
        raise CicyError("data.targets: h31 and h22 are Hodge numbers of 4-folds: point data.dataset at an imported 4-fold list (.npz)")
    unknown = [t for t in d["targets"] if t not in src.targets]
    if unknown:
        raise CicyError(f"data.targets: unknown target {unknown[0]!r} for {src.describe()}: choose from {', '.join(src.targets)}")
    if d["physics"] and not src.physics:
        raise CicyError("data.physics: derives Hodge numbers from the exact Euler number of the shipped and imported CICY lists, not of a data file")
    if d["physics"] and not four and "h21" not in d["targets"]:
        raise CicyError("data.physics: derives h21 from h11 and the exact Euler number, so data.targets must include h21")
    if d["physics"] and four and not {"h31", "h22"} & set(d["targets"]):
        raise CicyError("data.physics: on 4-folds derives h31 and h22 from h11, h21 and the exact Euler number, so data.targets must include h31 or h22")
    if d["features"] and not src.invariant_features:
        raise CicyError("data.features: the invariant channels (c2) are computed for 3-folds only")
    kernels = m.get("kernels")
    if kernels and isinstance(kernels[0][0], list) and len(kernels) != m["modules"]:
        raise CicyError(f"model.kernels: {len(kernels)} kernel sets given for modules = {m['modules']}")


def shipped_configs() -> dict[str, Path]:
    """The example run configs shipped with the package, by name."""
    from importlib import resources

    folder = resources.files("cicy_search") / "configs"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def config_path(ref: str | Path, folder: str | Path | None = None) -> Path | None:
    """The file a config reference names: ``folder / ref`` (beside a recipe or study file), else the path itself,
    else the shipped example of that name (``dense``, ``inception``, ...); None when there is none."""
    for path in ([Path(folder) / str(ref)] if folder is not None else []) + [Path(ref)]:
        if path.exists():
            return path
    return shipped_configs().get(str(ref))


def load_config(ref: str | Path | None = None, overrides: dict | None = None, *, folder: str | Path | None = None) -> dict:
    """The validated run config ``ref`` names (see ``config_path``; None: the defaults) with ``overrides`` laid on
    it section by section (``merge``). Validated once; an error the file itself causes is prefixed with the file,
    one only the overrides cause (a flag, a recipe's override) is not."""
    path = None if ref is None else config_path(ref, folder) or Path(ref)
    raw = {} if path is None else load_file(path)  # its errors name the file already
    try:
        return resolve(merge(raw, overrides or {}))
    except CicyError as e:
        if path is not None and (not overrides or _invalid(raw)):
            raise CicyError(f"{path}: {e}") from None
        raise


def _invalid(raw: dict) -> bool:
    try:
        resolve(raw)
    except CicyError:
        return True
    return False


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"depth": 3}}`` -> ``{"model.depth": 3}`` (MLflow params, Optuna names)."""
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def merge(base: dict, over: dict) -> dict:
    """A deep copy of ``base`` with the mapping ``over`` laid on it, section by section."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def set_path(config: dict, dotted: str, value: Any) -> None:
    """Set ``config["model"]["depth"]`` from ``"model.depth"``."""
    *parents, leaf = dotted.split(".")
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
