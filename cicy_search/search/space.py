"""Search spaces: study-file entries -> Optuna suggestions -> values for the run config.

An entry is keyed by the dotted config key it sets (``model.width``)::

    model.depth:   {type: int, low: 1, high: 5}
    model.width:   {type: int, low: 16, high: 256, log: true, per: model.depth}   # one width per layer
    model.dropout: {type: float, low: 0.0, high: 0.5, step: 0.05}
    model.kernels: {type: categorical, choices: ["12x1,1x15", "3x3"], per: model.modules}

``per`` names an int (sampled or fixed) and samples one value per layer or module, as Optuna params
``model.width.0``, ``model.width.1``, ...: these exist only up to the sampled depth, which is why
depth-dependent spaces want TPE's group mode.

Conditional spaces (Optuna's define-by-run idiom): when ``model.family`` is itself an entry, a study file's
``families`` block gives each family its own entries, sampled only in trials of that family and named in Optuna
``FAMILY/KEY`` (``inception/model.modules``), so two families' ``model.depth`` are separate parameters with
their own ranges (``Param.when``; ``sample`` skips the entries of the families not chosen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from ..errors import CicyError
from ..schema import short as _short

MAX_INT = 2**53  # Optuna stores every parameter as a float: integers beyond this are not kept exactly

# The entries' schema (types, bounds, descriptions: the JSON Schema and the docs); ``parse_param`` checks an
# entry with the messages below, which need the entry as a whole (a step that does not divide the range).
_PER = "Sample one value per layer or module: the dotted name of an int setting (an entry of the space or fixed)."


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IntEntry(_Entry):
    """An integer range: Optuna's ``suggest_int``."""

    type: Literal["int"] = Field(description="int: an integer range.")
    low: int = Field(ge=-MAX_INT, le=MAX_INT, description="The smallest value (included).")
    high: int = Field(ge=-MAX_INT, le=MAX_INT, description="The largest value (included).")
    step: Optional[int] = Field(None, gt=0, description="Only low, low + step, ...; it must divide high - low.")
    log: bool = Field(False, description="Sample on a log scale (needs low > 0, no step).")
    per: Optional[str] = Field(None, description=_PER)


class FloatEntry(_Entry):
    """A range of numbers: Optuna's ``suggest_float``."""

    type: Literal["float"] = Field(description="float: a range of numbers.")
    low: float = Field(description="The smallest value (included).")
    high: float = Field(description="The largest value (included).")
    step: Optional[float] = Field(None, gt=0, description="Only low, low + step, ...; it must divide high - low.")
    log: bool = Field(False, description="Sample on a log scale (needs low > 0, no step).")
    per: Optional[str] = Field(None, description=_PER)


class CategoricalEntry(_Entry):
    """A list of choices: Optuna's ``suggest_categorical``."""

    type: Literal["categorical"] = Field(description="categorical: one of a list of choices.")
    choices: list[Union[None, bool, int, float, str]] = Field(
        min_length=1, json_schema_extra={"uniqueItems": True},
        description="The values to choose from: numbers, strings, booleans or null (kernel sets as '12x1,1x15').",
    )
    per: Optional[str] = Field(None, description=_PER)


ENTRIES = (IntEntry, FloatEntry, CategoricalEntry)
#: One entry of a study file's ``space``, told apart by its ``type``.
Entry = Annotated[Union[ENTRIES], Field(discriminator="type")]
TYPES = tuple(cls.model_fields["type"].annotation.__args__[0] for cls in ENTRIES)
_KEYS = {key for cls in ENTRIES for key in cls.model_fields}


def _number(where: str, v: Any, kind: str, what: str = "a number") -> float | int:
    """A finite number (an integer for int entries); one-line errors naming the key."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise CicyError(f"{where}: expected {what}, got {_short(v)}")
    if isinstance(v, float) and not math.isfinite(v):
        raise CicyError(f"{where}: expected a finite number, got {_short(v)}")
    if kind == "int":
        if isinstance(v, float) and not v.is_integer():
            raise CicyError(f"{where}: expected an integer, got {_short(v)}")
        if abs(v) > MAX_INT:
            raise CicyError(f"{where}: expected an integer within +-2**53 (Optuna keeps parameters as floats), got {_short(v)}")
        return int(v)
    if abs(v) > 1e300:
        raise CicyError(f"{where}: expected a finite number, got {_short(v)}")
    return v


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple | None = None
    per: str | None = None
    #: The family whose trials sample this entry (a study file's ``families`` block); None: every trial.
    when: str | None = None

    @property
    def label(self) -> str:
        """The Optuna parameter name: the config key, behind its family for a family's own entry."""
        return f"{self.when}/{self.name}" if self.when else self.name

    @property
    def where(self) -> str:
        """Where the entry is written in a study file (for errors)."""
        return f"families.{self.when}.space.{self.name}" if self.when else f"space.{self.name}"

    def suggest(self, trial, name: str | None = None):
        name = name or self.label
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.type == "float":
            return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)
        return trial.suggest_categorical(name, list(self.choices))

    def example(self):
        """A value inside the range, used to check a study file before anything is created."""
        return self.choices[0] if self.type == "categorical" else (int(self.low) if self.type == "int" else float(self.low))


def outside(p: Param, value: Any) -> str | None:
    """Why ``value`` is not one ``p`` can take (None when it is): a choice, or a number in range on its step."""
    if p.type == "categorical":
        same = any(c == value and isinstance(c, bool) == isinstance(value, bool) for c in p.choices)
        return None if same else f"{_short(value)} is not one of the choices {list(p.choices)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (p.type == "int" and not float(value).is_integer()):
        return f"{_short(value)} is not {'an integer' if p.type == 'int' else 'a number'}"
    if not math.isfinite(value) or not p.low <= value <= p.high:
        return f"{_short(value)} is outside [{p.low:g}, {p.high:g}]"
    if p.step and not math.isclose((value - p.low) / p.step, round((value - p.low) / p.step), abs_tol=1e-9):
        return f"{_short(value)} is not on the grid low + k * step ({p.low:g} + k * {p.step:g})"
    return None


def parse_param(name: str, entry: Any, *, where: str | None = None, when: str | None = None) -> Param:
    """One entry of a space (``where``: its place in the file, for errors; ``when``: the family it belongs to)."""
    where = where or f"space.{name}"
    if not isinstance(entry, dict):
        raise CicyError(f"{where}: expected a mapping like {{type: int, low: 1, high: 5}}")
    unknown = sorted(set(entry) - _KEYS, key=str)
    if unknown:
        raise CicyError(f"{where}: unknown key {_short(unknown[0])} (allowed: {', '.join(sorted(_KEYS))})")
    kind = entry.get("type")
    if not isinstance(kind, str) or kind not in TYPES:
        raise CicyError(f"{where}.type: expected one of {', '.join(TYPES)}, got {_short(kind)}")
    per = entry.get("per")
    if per is not None and not isinstance(per, str):
        raise CicyError(f"{where}.per: expected the dotted name of an integer setting, got {_short(per)}")
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise CicyError(f"{where}.choices: expected a non-empty list")
        for c in choices:
            if not (c is None or isinstance(c, (bool, int, float, str))):
                raise CicyError(f"{where}.choices: {_short(c)} is not a number, string, bool or null (write kernel sets as '12x1,1x15')")
            if isinstance(c, float) and not math.isfinite(c):
                raise CicyError(f"{where}.choices: {c!r} is not a finite number")
        if len({(type(c), c) for c in choices}) != len(choices):
            raise CicyError(f"{where}.choices: a choice is given twice")
        extra = sorted(set(entry) & {"low", "high", "step", "log"})
        if extra:
            raise CicyError(f"{where}.{extra[0]}: not used by a categorical entry")
        return Param(name, kind, choices=tuple(choices), per=per, when=when)
    if "choices" in entry:
        raise CicyError(f"{where}.choices: only for type: categorical")
    what = "an integer" if kind == "int" else "a number"
    low = _number(f"{where}.low", entry.get("low"), kind, what)
    high = _number(f"{where}.high", entry.get("high"), kind, what)
    step, log = entry.get("step"), entry.get("log", False)
    if low > high:
        raise CicyError(f"{where}: bad range, low = {low} > high = {high}")
    if not isinstance(log, bool):
        raise CicyError(f"{where}.log: expected true or false, got {_short(log)}")
    if log and low <= 0:
        raise CicyError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None:
        step = _number(f"{where}.step", step, kind, "a positive integer" if kind == "int" else "a positive number")
        if step <= 0:
            raise CicyError(f"{where}.step: expected a positive {'integer' if kind == 'int' else 'number'}, got {step}")
        if log:
            raise CicyError(f"{where}: step and log cannot be combined")
        # Optuna would silently lower ``high`` to the last multiple of the step; say so instead.
        span = Decimal(str(high)) - Decimal(str(low))
        if span % Decimal(str(step)) != 0:
            last = Decimal(str(low)) + (span // Decimal(str(step))) * Decimal(str(step))
            raise CicyError(
                f"{where}.step: {step} does not divide the range {low}..{high} (the last value would be {last}); "
                "change high or step"
            )
    return Param(name, kind, low, high, step, log, per=per, when=when)


def parse(space: Any, *, where: str = "space", when: str | None = None, shared: list[Param] = ()) -> list[Param]:
    """Parse and order a study file's ``space`` (or a family's, ``when``, whose ``per`` may also name an entry of
    the ``shared`` space): ``model.family`` first, then the plain entries, then those that depend on others
    (``per``)."""
    if space is None:
        return []
    if not isinstance(space, dict):
        raise CicyError(f"{where}: expected a mapping of dotted config keys to entries")
    for k in space:
        if not isinstance(k, str) or len(k) > 200:
            raise CicyError(f"{where}: {_short(k)} is not a dotted config key like model.depth")
    params = [parse_param(k, v, where=f"{where}.{k}", when=when) for k, v in space.items()]
    known = {p.name: p for p in [*shared, *params]}
    for p in params:
        if p.per and p.per in known and known[p.per].type != "int":
            raise CicyError(f"{where}.{p.name}.per: {p.per} must be an int entry")
    return order(params)


def order(params: list[Param]) -> list[Param]:
    """The order entries are sampled in: ``model.family`` (the others may depend on it), then plain entries, then
    ``per`` entries (they read the count the others drew)."""
    return sorted(params, key=lambda p: (p.name != "model.family", p.per is not None))


def _lookup(config: dict, dotted: str):
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def sample(params: list[Param], trial, base: dict, bases: dict[str, dict] | None = None) -> dict[str, Any]:
    """Draw one value per entry (a list for ``per`` entries) from an Optuna trial (or ``Example``), keyed by config
    key. Entries of a family (``when``) are drawn only when ``model.family`` came out as that family; then the
    fixed settings ``per`` counts are read from are that family's (``bases``), not ``base``."""
    values: dict[str, Any] = {}
    for p in order(params):
        if p.when is not None and values.get("model.family") != p.when:
            continue
        if p.name == "model.family" and bases is not None:
            values[p.name] = p.suggest(trial)
            base = bases.get(values[p.name], base)
            continue
        if p.per is None:
            values[p.name] = p.suggest(trial)
            continue
        count = values.get(p.per, _lookup(base, p.per))
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise CicyError(f"{p.where}.per: {p.per} is neither an int entry of the space nor a fixed positive integer setting")
        values[p.name] = [p.suggest(trial, f"{p.label}.{i}") for i in range(count)]
    return values


class Example:
    """A stand-in trial for checking a space without a study: every range at its low (or high) end,
    categorical entries at their first choice, unless ``choose`` names another value (by Optuna name)."""

    def __init__(self, end: str = "low", choose: dict[str, Any] | None = None):
        self.end = end
        self.choose = choose or {}

    def _pick(self, name, low, high):
        if name in self.choose:
            return self.choose[name]
        return high if self.end == "high" else low

    def suggest_int(self, name, low, high, step=1, log=False):
        return self._pick(name, low, high)

    def suggest_float(self, name, low, high, step=None, log=False):
        return self._pick(name, low, high)

    def suggest_categorical(self, name, choices):
        return next((v for k, v in self.choose.items() if name == k or name.startswith(k + ".")), choices[0])
