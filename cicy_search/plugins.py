"""Model families as plugins: the contract every model builder follows, built-in or the user's own.

A builder is a function ``build(config, inputs, targets) -> keras.Model``:

* ``config``: the resolved run config (``config["model"]["params"]`` holds the plugin's hyperparameters,
  validated against what it declares, ``config["model"]["head"]`` the kind of output).
* ``inputs``: an ``InputSpec``: the shape of one input (``(rows, cols)``, or ``(rows, cols, channels)`` with
  feature channels), the padding and the number of channels. Padding is zeros: the rows and columns of a matrix
  that hold no non-zero entry are absent (``present_mask`` computes them inside a model).
* ``targets``: one ``TargetSpec`` per output (name, kind, value range): a classification output has
  ``n_classes`` softmax units (class k <-> value low + k), a regression output one unit.

With one target the model returns one output; with several, a dict ``{target name: output}``. The host checks
this on a tiny batch every time it builds a model, so a mistake is one line naming the plugin. The builder
declares its hyperparameters with ``Params`` (names, types, bounds, defaults); study files search them as
``model.params.NAME`` and MLflow logs them like every other value::

    from cicy_search.plugins import Param, Params, builder

    @builder(params=Params(width=Param.int(64, low=8, high=512), heads=Param.int(4, low=1, high=8)))
    def build(config, inputs, targets):
        p = config["model"]["params"]
        ...

A run config names it ``model: {family: "mypackage.attention:build", params: {heads: 2}}``, or by the name of an
entry point in the group ``cicy_search.models`` of an installed package. The built-in families (``models.py``) are
builders of the same signature.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .errors import CicyError, one_line

ENTRY_POINTS = "cicy_search.models"
_SPEC = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class InputSpec:
    """What one model input looks like (without the batch axis)."""

    shape: tuple[int, ...]  # (rows, cols), or (rows, cols, channels) with feature channels
    padding: tuple[int, int]  # the (rows, cols) every matrix is zero-padded to
    channels: int  # 1 for the bare matrix, more with data.features
    mask: str = "zero rows and columns are padding"

    @classmethod
    def of(cls, shape: tuple[int, ...]) -> "InputSpec":
        shape = tuple(int(s) for s in shape)
        return cls(shape, (shape[0], shape[1]), shape[2] if len(shape) == 3 else 1)


@dataclass(frozen=True)
class Target:
    """One predicted quantity and its value range in the data set (class k <-> value low + k)."""

    name: str
    low: int
    high: int

    @property
    def n_classes(self) -> int:
        return self.high - self.low + 1

    @classmethod
    def from_values(cls, name: str, values) -> "Target":
        return cls(name, int(values.min()), int(values.max()))

    def to_dict(self) -> dict:
        return {"name": self.name, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class TargetSpec(Target):
    """One output as a builder sees it: a ``Target`` and its kind (classification or regression)."""

    kind: str = "classification"

    @property
    def units(self) -> int:
        """Output units: one per class, or one value."""
        return self.n_classes if self.kind == "classification" else 1


def present_mask(x):
    """(batch, rows, cols, 1) floats: 1 on the entries of present rows and columns, 0 on padding (Keras ops).

    ``x`` is a model input, (batch, rows, cols) or (batch, rows, cols, channels) whose first channel is the matrix.
    """
    from keras import ops

    entries = x if len(x.shape) == 3 else x[..., 0]
    rows = ops.cast(ops.sum(entries, axis=2, keepdims=True) > 0, x.dtype)
    cols = ops.cast(ops.sum(entries, axis=1, keepdims=True) > 0, x.dtype)
    return ops.expand_dims(rows * cols, -1)


# --- hyperparameters a builder declares ---

_TYPES = ("int", "float", "bool", "choice")


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its type, default, and bounds (int, float) or choices (choice).

    Build them with ``Param.int(4, low=1, high=8)``, ``Param.float(0.1, low=0, high=0.5)``, ``Param.bool(True)``
    or ``Param.choice("mean", ["mean", "max"])``.
    """

    type: str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    help: str = ""

    @classmethod
    def int(cls, default: int, *, low: int, high: int, help: str = "") -> "Param":
        return cls("int", default, low, high, help=help)

    @classmethod
    def float(cls, default: float, *, low: float, high: float, help: str = "") -> "Param":
        return cls("float", default, low, high, help=help)

    @classmethod
    def bool(cls, default: bool, *, help: str = "") -> "Param":
        return cls("bool", default, help=help)

    @classmethod
    def choice(cls, default, choices, *, help: str = "") -> "Param":
        return cls("choice", default, choices=tuple(choices), help=help)

    def problem(self) -> str | None:
        """What is wrong with the declaration itself, or None."""
        if self.type not in _TYPES:
            return f"type {self.type!r} is not one of {', '.join(_TYPES)}"
        if self.type in ("int", "float"):
            for end in ("low", "high"):
                v = getattr(self, end)
                if not _is_number(v, self.type):
                    return f"{end} = {v!r} is not {'an integer' if self.type == 'int' else 'a finite number'}"
            if self.low > self.high:
                return f"low = {self.low} > high = {self.high}"
        if self.type == "choice" and not self.choices:
            return "a choice needs at least one choice"
        try:
            self.check(self.default)
        except ValueError as e:
            return f"default: {e}"
        return None

    def check(self, value):
        """The value, checked; ``ValueError`` with a short reason otherwise."""
        if self.type == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {_short(value)}")
        elif self.type == "choice":
            if not any(value == c and type(value) is type(c) for c in self.choices):
                raise ValueError(f"expected one of {', '.join(map(str, self.choices))}, got {_short(value)}")
        else:
            if not _is_number(value, self.type):
                raise ValueError(f"expected {'an integer' if self.type == 'int' else 'a number'}, got {_short(value)}")
            if not self.low <= value <= self.high:
                raise ValueError(f"expected {'an integer' if self.type == 'int' else 'a number'} from {self.low:g} to {self.high:g}, got {_short(value)}")
            value = int(value) if self.type == "int" else float(value)
        return value


def _is_number(v, kind: str) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if kind == "int":
        return isinstance(v, int)
    return math.isfinite(v)


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


class Params(Mapping):
    """A builder's hyperparameters by name: ``Params(heads=Param.int(4, low=1, high=8), ...)``."""

    def __init__(self, **params: Param):
        self._params = dict(params)

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def problem(self) -> str | None:
        """What is wrong with the declaration (a name, a parameter), or None."""
        for name, p in self._params.items():
            if not _NAME.fullmatch(name):
                return f"parameter name {name!r} is not an identifier"
            if not isinstance(p, Param):
                return f"{name}: expected a cicy_search.plugins.Param, got {type(p).__name__}"
            reason = p.problem()
            if reason:
                return f"{name}: {reason}"
        return None


def builder(*, params: Params | None = None) -> Callable[[Callable], Callable]:
    """Mark a function as a model builder and attach the hyperparameters it declares (``fn.params``)."""

    def mark(fn: Callable) -> Callable:
        fn.params = params if params is not None else Params()
        return fn

    return mark


# --- finding a family ---


@dataclass(frozen=True)
class Family:
    """A model family: its name as written in ``model.family``, its builder and where the builder comes from."""

    name: str
    build: Callable
    params: Params | None = None  # None: the built-in families' keys live in config.MODELS
    module: str = ""
    version: str | None = None  # the installed distribution that ships the module, if any
    builtin: bool = False
    files: tuple[str, ...] = field(default=())  # the plugin's code: a module file or its top-level package folder

    def record(self) -> dict:
        """What a bundle records to load the model again: the import path and the package version."""
        return {"family": self.name, "module": self.module, "version": self.version}

    def build_model(self, config: dict, inputs: InputSpec, targets: list[TargetSpec]):
        """The builder's model, checked: a Keras model whose outputs fit the targets on a tiny batch."""
        import keras

        try:
            model = self.build(config, inputs, targets)
        except CicyError:
            raise
        except ValueError as e:
            if self.builtin:  # e.g. pooling that shrinks a 12x15 matrix to nothing
                raise CicyError(f"model {self.name} cannot be built from this config: {one_line(e)}") from None
            raise CicyError(f"model.family {self.name}: the builder raised {type(e).__name__}: {one_line(e)}") from None
        except Exception as e:
            if self.builtin:
                raise
            raise CicyError(f"model.family {self.name}: the builder raised {type(e).__name__}: {one_line(e)}") from None
        if not isinstance(model, keras.Model):
            raise CicyError(f"model.family {self.name}: the builder returned {type(model).__name__}, not a keras.Model")
        if not self.builtin:
            check_outputs(self.name, model, inputs, targets)
        return model


def check_outputs(name: str, model, inputs: InputSpec, targets: list[TargetSpec]) -> None:
    """Call ``model`` on two zero matrices and check one output per target, of the units each needs."""
    import numpy as np

    try:
        out = model(np.zeros((2, *inputs.shape), dtype=np.float32), training=False)
    except Exception as e:
        raise CicyError(f"model.family {name}: the model fails on an input of shape {(2, *inputs.shape)}: {type(e).__name__}: {one_line(e)}") from None
    if len(targets) == 1:
        if isinstance(out, (dict, list, tuple)):
            raise CicyError(f"model.family {name}: with one target ({targets[0].name}) the model must return one output, not a {type(out).__name__}")
        outputs = {targets[0].name: out}
    else:
        names = [t.name for t in targets]
        if not isinstance(out, dict) or sorted(out) != sorted(names):
            got = sorted(out) if isinstance(out, dict) else type(out).__name__
            raise CicyError(f"model.family {name}: with several targets the model must return a dict {{{', '.join(names)}}} of outputs, got {got}")
        outputs = out
    for t in targets:
        shape = tuple(outputs[t.name].shape)
        want = [(2, t.units)] + ([(2,)] if t.units == 1 else [])
        if shape not in want:
            what = f"{t.n_classes} classes for {t.low}..{t.high}" if t.kind == "classification" else "one value"
            raise CicyError(f"model.family {name}: output {t.name} has shape {shape} for a batch of 2, expected {want[0]} ({t.kind}: {what})")


def is_plugin_name(name: str) -> bool:
    """Whether ``name`` is written as a plugin's import path, ``package.module:function``."""
    return isinstance(name, str) and ":" in name


def _entry_point(name: str):
    for ep in metadata.entry_points(group=ENTRY_POINTS):
        if ep.name == name:
            return ep
    return None


def entry_point_names() -> list[str]:
    """Names of the installed plugins (entry points in the group ``cicy_search.models``)."""
    return sorted(ep.name for ep in metadata.entry_points(group=ENTRY_POINTS))


_loaded: dict[str, Family] = {}


def load(name: str, *, known: tuple[str, ...] = ()) -> Family:
    """The plugin family ``name`` names: ``package.module:function``, or an entry point of ``cicy_search.models``.

    ``known``: the built-in families, named in the error for a name that is neither. Every way it can fail (not importable, no such function, not callable, a bad ``Params`` declaration) is one
    ``CicyError`` naming the plugin and the reason.
    """
    if name in _loaded:
        return _loaded[name]
    spec = name
    if not is_plugin_name(name):
        ep = _entry_point(name)
        if ep is None:
            return _unknown(name, known)
        spec = ep.value
    if not _SPEC.fullmatch(spec):
        raise CicyError(f"model.family {name}: expected package.module:function, got {_short(spec)}")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # the plugin's own import errors too: a syntax error, a missing dependency
        hint = " (is its folder on PYTHONPATH, or its package installed?)" if isinstance(e, ModuleNotFoundError) and e.name and module_name.startswith(e.name) else ""
        raise CicyError(f"model.family {name}: cannot import {module_name}: {type(e).__name__}: {one_line(e)}{hint}") from None
    fn: Any = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise CicyError(f"model.family {name}: module {module_name} has no {attr}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise CicyError(f"model.family {name}: {attr} is a {type(fn).__name__}, not a function")
    params = getattr(fn, "params", Params())
    if not isinstance(params, Params):
        raise CicyError(f"model.family {name}: declares a bad schema: params must be cicy_search.plugins.Params, got {type(params).__name__}")
    reason = params.problem()
    if reason:
        raise CicyError(f"model.family {name}: declares a bad schema: {reason}")
    family = Family(name, fn, params, module_name, _version(module_name), False, _files(module))
    _loaded[name] = family
    return family


def _unknown(name: str, known: tuple[str, ...]):
    shown = _short(name) if isinstance(name, str) else repr(name)[:60]
    installed = entry_point_names()
    raise CicyError(
        f"unknown model family {shown}: choose one of {', '.join([*known, *installed])}, "
        "or name a plugin as package.module:function"
    )


@functools.lru_cache(maxsize=4)
def _distributions(path: tuple[str, ...]) -> dict[str, list[str]]:
    """Top-level module -> the installed distributions that provide it, for this ``sys.path``: reading every
    distribution's file list takes about a quarter of a second, once for all the plugin families a process loads
    (and loads again after forgetting them, as the tests do)."""
    return metadata.packages_distributions()


def _version(module_name: str) -> str | None:
    top = module_name.split(".")[0]
    for dist in _distributions(tuple(sys.path)).get(top, []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return getattr(sys.modules.get(top), "__version__", None)


def _files(module) -> tuple[str, ...]:
    """The code to ship with an exported model: the top-level package's folder, or the module's file."""
    top = sys.modules.get(module.__name__.split(".")[0], module)
    path = getattr(top, "__file__", None)
    if not path:
        return ()
    path = Path(path)
    return (str(path.parent),) if path.name == "__init__.py" else (str(path),)
