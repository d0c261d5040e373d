"""The run config: one plain mapping, validated once, that every model builder and trainer reads.

A YAML run file, a study's fixed settings plus an Optuna trial's sample and a keras-tuner ``hp``
all become this mapping::

    {"name": ..., "seed": 0,
     "data":  {"dataset": "original", "targets": ["h11"], "train": 0.8, ...},
     "model": {"family": "dense", "head": "classification", "depth": 3, ...},
     "train": {"epochs": 20, "batch_size": 32, "learning_rate": 0.001, ...}}

``resolve`` fills in defaults and rejects unknown keys and wrong types with one line naming the key.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import CicyError

# --- value checkers: each returns the normalised value or raises ValueError with a short reason ---


def _short(v) -> str:
    """``repr(v)`` cut to one short line: values from hostile files can be huge."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(v):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected an integer, got {_short(v)}")
    return v


def _int_in(low: int, high: int):
    """An integer within [low, high]; the bounds are said in the error."""

    def check(v):
        if not low <= _int(v) <= high:
            raise ValueError(f"expected an integer from {low:,} to {high:,}, got {_short(v)}")
        return v

    return check


# Upper bounds: far above anything useful on 12x15 matrices, low enough that a typo cannot ask for a
# network that exhausts memory or a run that never ends.
MAX_DEPTH = 64
MAX_WIDTH = 16_384
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536
MAX_KERNEL = 64
MAX_SEED = 2**32 - 1  # NumPy's and Keras's seeds are 32-bit
_seed = _int_in(0, MAX_SEED)


def _pos_int(v):
    if _int(v) < 1:
        raise ValueError(f"expected a positive integer, got {v!r}")
    return v


def _nonneg_int(v):
    if _int(v) < 0:
        raise ValueError(f"expected a non-negative integer, got {v!r}")
    return v


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


def _nonneg(v):
    if _float(v) < 0:
        raise ValueError(f"expected a non-negative number, got {v!r}")
    return float(v)


def _positive(v):
    if _float(v) <= 0:
        raise ValueError(f"expected a positive number, got {v!r}")
    return float(v)


def _rate(v):
    if not 0 <= _float(v) < 1:
        raise ValueError(f"expected a rate in [0, 1), got {v!r}")
    return float(v)


def _fraction(v):
    if not 0 <= _float(v) <= 1:
        raise ValueError(f"expected a fraction in [0, 1], got {v!r}")
    return float(v)


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _optional(check):
    return lambda v: None if v is None else check(v)


def _factor(v):
    if not 0 < _float(v) < 1:
        raise ValueError(f"expected a factor in (0, 1), got {_short(v)}")
    return float(v)


def _choice(*options):
    def check(v):
        # ``1 == True``: compare types too, so ``jit_compile: 1`` is not taken for ``true``.
        if not any(v == o and type(v) is type(o) for o in options):
            raise ValueError(f"expected one of {', '.join(map(str, options))}, got {_short(v)}")
        return v

    return check


def _int_or_list(v):
    """An int (the same for every layer) or one positive int per layer, at most ``MAX_WIDTH``."""
    width = _int_in(1, MAX_WIDTH)
    if isinstance(v, list):
        if not v:
            raise ValueError("expected a non-empty list")
        if len(v) > MAX_DEPTH:
            raise ValueError(f"expected at most {MAX_DEPTH} values, got {len(v):,}")
        return [width(x) for x in v]
    return width(v)


def _pair(v):
    if isinstance(v, str):
        m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", v)
        if not m:
            raise ValueError(f"expected a shape like '12x1', got {v!r}")
        v = [int(m.group(1)), int(m.group(2))]
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if not (isinstance(v, (list, tuple)) and len(v) == 2):
        raise ValueError(f"expected a shape [height, width], got {_short(v)}")
    return [_int_in(1, MAX_KERNEL)(x) for x in v]


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
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", t):
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
    from .data import FEATURES

    if isinstance(v, str):  # "euler,c2" (how a search space's categorical choice writes a list), "" for none
        v = [f.strip() for f in v.split(",") if f.strip()]
    if not isinstance(v, list) or len(set(v)) != len(v) or any(f not in FEATURES for f in v):
        raise ValueError(f"expected a list of exact invariants from {', '.join(FEATURES)}, got {v!r}")
    return v


def _gamma(v):
    if v in ("scale", "auto"):
        return v
    return _positive(v)


# --- the schema ---

Spec = dict[str, tuple[Callable[[Any], Any], Any]]

DATA: Spec = {
    "dataset": (_dataset, "original"),
    "targets": (_targets, ["h11"]),
    "train": (_fraction, 0.8),
    "val": (_fraction, 0.1),
    "test": (_fraction, 0.1),
    "seed": (_seed, 0),
    "stratify": (_bool, True),
    "keep_products": (_bool, False),
    "limit": (_optional(_pos_int), None),
    # Symmetry and exact invariants (data.model_inputs): a canonical row/column order, invariants as
    # input channels, and physics-informed targets (h21 = h11 - euler/2 with the exact Euler number).
    "canonical": (_bool, False),
    "features": (_features, []),
    "physics": (_bool, False),
}

TRAIN: Spec = {
    "epochs": (_int_in(1, MAX_EPOCHS), 20),
    "batch_size": (_int_in(1, MAX_BATCH), 32),
    "optimizer": (_choice("adam", "sgd", "rmsprop", "adamw"), "adam"),
    "learning_rate": (_positive, 1e-3),
    "early_stopping": (_int_in(0, MAX_EPOCHS), 0),
    "lr_schedule": (_choice("none", "reduce_on_plateau", "cosine"), "none"),
    "lr_factor": (_factor, 0.3),
    "lr_patience": (_int_in(1, MAX_EPOCHS), 5),
    "steps_per_execution": (_optional(_int_in(1, MAX_EPOCHS)), None),
    # How an epoch runs, not what it computes (see training.fast_fit and README "Throughput"):
    # "fast" = one compiled call per epoch over in-memory tensors, "keras" = model.fit.
    "loop": (_choice("fast", "keras"), "fast"),
    "jit_compile": (_choice("auto", True, False), "auto"),  # XLA; auto = on GPU, and on CPU without convolutions
    "mixed_precision": (_bool, False),  # float16 compute with float32 weights: for GPUs
    # Random row and column permutations of every training batch (never validation or test); fast loop only.
    "augment": (_choice("none", "permute"), "none"),
}

_COMMON: Spec = {
    "head": (_choice("classification", "regression"), "classification"),
    "activation": (_choice("relu", "elu", "gelu", "selu", "tanh", "swish", "linear"), "relu"),
    "l1": (_nonneg, 0.0),
    "l2": (_nonneg, 0.0),
    "dropout": (_rate, 0.0),
    "batch_norm": (_bool, False),
}

MODELS: dict[str, Spec] = {
    "dense": {**_COMMON, "depth": (_int_in(1, MAX_DEPTH), 3), "width": (_int_or_list, 128)},
    "cnn": {
        **_COMMON,
        "depth": (_int_in(1, MAX_DEPTH), 2),
        "filters": (_int_or_list, 32),
        "kernel_size": (_pair, [3, 3]),
        "strides": (_pair, [1, 1]),
        "padding": (_choice("same", "valid"), "same"),
        "pool": (_choice("max", "avg", "none"), "max"),
        "pool_size": (_pair, [2, 2]),
        "dense_depth": (_int_in(0, MAX_DEPTH), 1),
        "dense_width": (_int_in(1, MAX_WIDTH), 128),
    },
    "inception": {
        **_COMMON,
        "head": (_choice("classification", "regression"), "regression"),
        "l1": (_nonneg, 1e-4),
        "l2": (_nonneg, 1e-4),
        "dropout": (_rate, 0.2),
        "batch_norm": (_bool, True),
        "modules": (_int_in(1, MAX_DEPTH), 3),
        "filters": (_int_or_list, [32, 64, 32]),
        "kernels": (_kernels, [[12, 1], [1, 15]]),
        # concat_norm: branches with bias and activation, concatenated, then one batch norm (Erbin & Finotello);
        # talk: per branch conv without bias -> batch norm without scale -> activation, then concatenated.
        "block": (_choice("concat_norm", "talk"), "concat_norm"),
    },
    # Permutation-equivariant network (exchangeable matrix layers, Hartford et al. 2018): see models.py.
    "equivariant": {
        **_COMMON,
        "layer": (_choice("exchangeable", "bipartite"), "exchangeable"),
        "depth": (_pos_int, 4),
        "width": (_pos_int, 64),
        "pooling": (_choice("mean", "sum", "max"), "mean"),
        "embedding": (_choice("onehot", "linear"), "onehot"),
        "norm": (_choice("layer", "none"), "layer"),
        "residual": (_bool, True),
        "head_width": (_pos_int, 128),
    },
    "svm": {
        "head": (_choice("classification", "regression"), "regression"),
        "kernel": (_choice("rbf", "linear", "poly", "sigmoid"), "rbf"),
        "C": (_positive, 10.0),
        "gamma": (_gamma, "scale"),
        "epsilon": (_nonneg, 0.1),
    },
}

TOP = {"name", "seed", "data", "model", "train"}


def _resolve_section(section: str, given: Any, spec: Spec) -> dict:
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise CicyError(f"{section}: expected a mapping of settings, got {type(given).__name__}")
    unknown = sorted(set(given) - set(spec), key=str)
    if unknown:
        raise CicyError(f"unknown key {section}.{str(unknown[0])[:60]} (allowed: {', '.join(sorted(spec))})")
    out = {}
    for key, (check, default) in spec.items():
        value = given.get(key, copy.deepcopy(default))
        try:
            out[key] = check(value)
        except ValueError as e:
            raise CicyError(f"{section}.{key}: {e}") from None
    return out


def resolve(config: dict | None) -> dict:
    """Validate a run config and fill in every default; the result is complete and self-describing."""
    config = copy.deepcopy(config or {})
    if not isinstance(config, dict):
        raise CicyError(f"a run config must be a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - TOP, key=str)
    if unknown:
        raise CicyError(f"unknown key {_short(unknown[0])} (allowed: {', '.join(sorted(TOP))})")
    model = config.get("model") or {}
    if not isinstance(model, dict):
        raise CicyError("model: expected a mapping of settings")
    family = model.get("family", "dense")
    if not isinstance(family, str) or family not in MODELS:
        from .models import family as plugin_family

        spec = plugin_family(family).params  # a plugin: one-line errors when it cannot be found or loaded
        keys = {"head": _COMMON["head"], "params": (spec.validate, {})}
    else:
        keys = MODELS[family]
    try:
        seed = _seed(config.get("seed", 0))
    except ValueError as e:
        raise CicyError(f"seed: {e}") from None
    name = config.get("name")
    if name is not None and not isinstance(name, str):
        raise CicyError(f"name: expected a string, got {_short(name)}")
    resolved = {
        "name": name or family,
        "seed": seed,
        "data": _resolve_section("data", config.get("data"), DATA),
        "model": {"family": family, **_resolve_section("model", {k: v for k, v in model.items() if k != "family"}, keys)},
        "train": _resolve_section("train", config.get("train"), TRAIN),
    }
    _check_consistency(resolved)
    return resolved


def _check_consistency(c: dict) -> None:
    m, d = c["model"], c["data"]
    if d["train"] + d["val"] + d["test"] > 1 + 1e-9:
        raise CicyError(f"data: split fractions train + val + test = {d['train'] + d['val'] + d['test']:g} > 1")
    if d["val"] == 0:
        raise CicyError("data.val: a validation split is needed for per-epoch validation curves and selection")
    for key, count in (("width", "depth"), ("filters", "depth" if m["family"] == "cnn" else "modules")):
        if isinstance(m.get(key), list) and len(m[key]) != m[count]:
            raise CicyError(f"model.{key}: {len(m[key])} values given for {count} = {m[count]}")
    if c["train"]["augment"] != "none" and c["train"]["loop"] != "fast":
        raise CicyError("train.augment: permutation augmentation runs in the fast loop (train.loop: fast)")
    if c["train"]["augment"] != "none" and d["canonical"]:
        raise CicyError("train.augment: permuting training matrices undoes data.canonical; choose one")
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


# --- reading YAML files ---

#: How many values (scalars, lists, mappings) a file may expand to through aliases (``*name``): a few
#: aliases nested in each other ("billion laughs") turn a 1 kB file into gigabytes once copied or stored.
MAX_YAML_VALUES = 10_000

# YAML 1.1 reads ``1e-3`` as a string (its floats need a dot); every other reader, and every user, takes a number.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys, reads ``1e-3`` as a float and counts aliases."""

    def __init__(self, stream):
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # ``<<: *base`` then overriding a merged key is what merges are for
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # unhashable: the base class reports it
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {str(key)[:60]!r}", key_node.start_mark
                    )
        return super().construct_mapping(node, deep)


Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"] for k, v in Loader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _count_values(data, limit: int) -> int:
    """Values in ``data`` as expanded (shared aliases counted each time), stopping past ``limit``."""
    count, stack = 0, [data]
    while stack and count <= limit:
        v = stack.pop()
        count += 1
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return count


def parse_yaml(text: str):
    """YAML text -> Python data with ``Loader``; ``yaml.YAMLError`` or ``ValueError`` say what is wrong."""
    loader = Loader(text)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    if loader.aliases and _count_values(data, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise ValueError(f"its aliases expand to more than {MAX_YAML_VALUES:,} values")
    return data


class Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
    """``yaml.SafeDumper`` that quotes what ``Loader`` would read as another type (a string ``1e-3``: PyYAML's
    own dumper leaves it bare, and this project reads it as a number); libyaml's C emitter when PyYAML has it
    (a dense config in 0.5 ms against 1.5 ms here: it becomes a trial's MLflow run description on the training
    thread)."""

    yaml_implicit_resolvers = Loader.yaml_implicit_resolvers


def dump_yaml(data) -> str:
    """Python data -> YAML text, keys in their order, that ``parse_yaml`` reads back as the same data."""
    return yaml.dump(data, Dumper=Dumper, sort_keys=False)


def read_text(path: str | Path) -> str:
    """A file's text: UTF-8, with or without a byte order mark; one-line errors naming the file."""
    path = Path(path)
    if path.is_dir():
        raise CicyError(f"{path}: is a folder, expected a file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CicyError(f"{path}: no such file") from None
    except OSError as e:
        raise CicyError(f"{path}: cannot be read: {e.strerror or e}") from None
    return decode(raw, str(path))


def decode(raw: bytes, name: str) -> str:
    """UTF-8 bytes (a leading byte order mark is dropped) -> text; other bytes are a one-line error."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CicyError(f"{name}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def load_file(path: str | Path) -> dict:
    """Read a YAML mapping; one-line errors that name the file (missing, a folder, not UTF-8, bad YAML)."""
    path = Path(path)
    text = read_text(path)
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise CicyError(f"{path}: not valid YAML{where}" + (f": {problem}" if problem else "")) from None
    except (ValueError, RecursionError) as e:
        reason = str(e) if isinstance(e, ValueError) else "nested too deep"
        raise CicyError(f"{path}: {reason}") from None
    if not isinstance(data, dict):
        raise CicyError(f"{path}: expected a YAML mapping at the top level")
    return data


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
