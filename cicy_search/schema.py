"""The typed schema's plumbing, shared by run configs (``config.py``) and study files (``search/studyfile.py``).

One pydantic class per section gives each key its type, default, bounds and a one-sentence description. From
that one description come three things: validation (the checker functions run as ``BeforeValidator``s and raise
``ValueError(reason)``; ``first_error`` turns pydantic's located error back into the one line users always got,
``section.key: reason``), the JSON Schema editors read (``json_schema``) and the docs' reference table (``rows``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def short(v) -> str:
    """``repr(v)`` cut to one short line: values from hostile files can be huge."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


class Section(BaseModel):
    """A mapping of settings (None: all defaults); unknown keys are refused before any value is checked."""

    model_config = ConfigDict(extra="forbid")
    #: The reason given when the section is not a mapping (``{kind}``: the type given).
    not_a_mapping: ClassVar[str] = "expected a mapping of settings, got {kind}"
    #: A top-level key is shown as ``repr`` (``unknown key 'trian'``), a section's as ``section.key``.
    top_level: ClassVar[bool] = False
    #: Whether ``key: null`` means all defaults (else it is not a mapping).
    none_is_empty: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _mapping_of_known_keys(cls, given: Any) -> Any:
        if given is None and cls.none_is_empty:
            return {}
        if not isinstance(given, dict):
            raise PydanticCustomError("not_a_mapping", cls.not_a_mapping, {"kind": type(given).__name__})
        unknown = sorted(set(given) - set(cls.model_fields), key=str)
        if unknown:
            key = short(unknown[0]) if cls.top_level else str(unknown[0])[:60]
            allowed = ", ".join(sorted(set(cls.model_fields) - {"family"}))  # a family is chosen, not a setting
            raise PydanticCustomError("unknown_key", "unknown key", {"key": key, "allowed": allowed})
        return given


def first_error(e: ValidationError, skip: tuple[str, ...] = ()) -> str:
    """The first error as one line: ``unknown key data.x (allowed: ...)`` or ``data.train: reason``.

    ``skip``: parts of the location that are no keys (the tag pydantic adds for a member of a tagged union)."""
    error = e.errors(include_url=False)[0]
    where = ".".join(str(p) for p in error["loc"] if p not in skip)
    if error["type"] == "unknown_key":
        return f"unknown key {where + '.' if where else ''}{error['ctx']['key']} (allowed: {error['ctx']['allowed']})"
    reason = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
    return f"{where}: {reason}" if where else reason


class _KeysOnly(GenerateJsonSchema):
    """Pydantic's JSON Schema without the titles it makes up from field names (``Batch Size``)."""

    def field_title_should_be_set(self, schema) -> bool:
        return False


def json_schema(model: type[BaseModel], title: str, description: str) -> dict:
    """The JSON Schema (draft 2020-12) of what a user may write: validation mode, so inputs such as ``"12x1"``."""
    schema = model.model_json_schema(mode="validation", schema_generator=_KeysOnly)
    return {"$schema": DRAFT, **schema, "title": title, "description": description}


# --- reference rows: one per key, read back from the JSON Schema so the table says what editors see ---


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = {**schema["$defs"][node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _branches(schema: dict, node: dict) -> list[dict]:
    node = _resolve(schema, node)
    alternatives = node.get("anyOf") or node.get("oneOf")
    if not alternatives:
        return [node]
    return [b for a in alternatives for b in _branches(schema, a)]


def _type(schema: dict, node: dict) -> str:
    names = []
    for branch in _branches(schema, node):
        values = [branch["const"]] if "const" in branch else branch.get("enum", [])
        kinds = [branch["type"]] if "type" in branch else [_JSON_TYPES[type(v)] for v in values] or ["any"]
        if "array" in kinds and "items" in branch:
            inner = _type(schema, branch["items"])
            kinds[kinds.index("array")] = f"list of ({inner})" if "|" in inner else f"list of {inner}"
        names += [k for k in kinds if k not in names]
    return " | ".join(dict.fromkeys(names))


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


def _bounds(schema: dict, node: dict) -> str:
    parts = []
    for branch in _branches(schema, node):
        low = [f">= {branch['minimum']:,}"] if "minimum" in branch else []
        low += [f"> {branch['exclusiveMinimum']:,}"] if "exclusiveMinimum" in branch else []
        high = [f"<= {branch['maximum']:,}"] if "maximum" in branch else []
        high += [f"< {branch['exclusiveMaximum']:,}"] if "exclusiveMaximum" in branch else []
        if "enum" in branch:
            parts.append("one of " + ", ".join(map(_text, branch["enum"])))
        elif "const" in branch and branch.get("type") != "null":
            parts.append(_text(branch["const"]))
        elif "pattern" in branch:
            parts.append(f"matching {branch['pattern']}")
        elif low or high:
            parts.append(", ".join(low + high))
        if "items" in branch and (inner := _bounds(schema, branch["items"])):
            parts.append(f"items {inner}")
        low, high = branch.get("minItems"), branch.get("maxItems")
        if low is not None or high is not None:
            count = f"{low}" if low == high else f"at least {low}" if high is None else f"{low or 0} to {high}"
            parts.append(f"{count} item{'' if count.endswith(' 1') or count == '1' else 's'}")
    return "; ".join(dict.fromkeys(parts))


def _text(v) -> str:
    return {True: "true", False: "false", None: "null"}.get(v, str(v)) if isinstance(v, (bool, type(None))) else str(v)


def rows(schema: dict, sections: dict[str, list[tuple[str | None, dict]]] | None = None) -> list[dict]:
    """One reference row per key of ``schema``: {key, family, type, default, bounds, description}.

    ``sections`` names the keys whose value is a section of settings, each with its variants (a model family, or a
    space entry's type, with its definition; None where there is one); their settings become rows of their own,
    with the variant in ``family`` (``model.depth`` once per family that has it)."""
    out = []
    for key, node in schema["properties"].items():
        for family, section in (sections or {}).get(key, [(None, None)]):
            if section is None:
                out.append(_row(schema, key, None, node))
                continue
            out += [_row(schema, f"{key}.{k}", family, v) for k, v in section["properties"].items()]
    return out


def _row(schema: dict, key: str, family: str | None, node: dict) -> dict:
    resolved = _resolve(schema, node)
    return {
        "key": key,
        "family": family,
        "type": _type(schema, node),
        "default": resolved.get("default", resolved.get("const")),
        "bounds": _bounds(schema, node),
        "description": resolved.get("description", ""),
    }
