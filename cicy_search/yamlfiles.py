"""Reading and writing YAML files: run configs, study files and recipes all come through here.

UTF-8 with or without a byte order mark, a key given twice is an error, ``1e-3`` is a number (YAML 1.1 reads it
as a string), aliases may expand a file to at most ``MAX_YAML_VALUES`` values, and every mistake is one
``CicyError`` line that names the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from .errors import CicyError

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
    (a few times faster than the pure-Python one, docs/performance.md: a config becomes a trial's MLflow run
    description on the training thread)."""

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
