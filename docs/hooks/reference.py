"""MkDocs hook: the reference pages that are generated from the code, so that they cannot drift from it.

- ``reference/cli.md``: every ``cicy-search`` command, argument and option, walked from the typer app's click
  command tree (``typer.main.get_command``; click's public ``Group.commands`` and ``Parameter`` attributes);
- ``reference/config.md`` and ``reference/study-file.md``: every run-config and study-file key with its type,
  default, bounds and meaning, from ``cicy_search.config.reference_rows()`` and
  ``cicy_search.search.studyfile.reference_rows()`` (the same models that validate the files).

The pages are added to the build as generated files (nothing is written into ``docs/``). ``tests/test_docs.py``
imports this module for ``commands`` and ``check_command_line``.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROG = "cicy-search"


def _import_project() -> None:
    """The repository's own package first (``mkdocs`` may run from a virtual environment installed elsewhere)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# --- the command line -------------------------------------------------------------------------------------------


def root_command():
    """The click command behind ``cicy-search``."""
    _import_project()
    import typer.main

    from cicy_search import cli

    return typer.main.get_command(cli.app)


def commands(command=None, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every command and group by its path of names, ``()`` for ``cicy-search`` itself, in the order ``--help`` lists them."""
    command = command or root_command()
    found = {path: command}
    for name, sub in getattr(command, "commands", {}).items():
        if not getattr(sub, "hidden", False):
            found.update(commands(sub, (*path, name)))
    return found


def _is_option(param) -> bool:
    return getattr(param, "param_type_name", "") == "option"


def option_names(command) -> set[str]:
    """Every spelling of every option of ``command`` (``--n-trials``, ``--no-keep-products``), ``--help`` included."""
    names = {"--help"}
    for p in command.params:
        if _is_option(p):
            names.update(p.opts)
            names.update(p.secondary_opts)
    return names


def check_command_line(line: str, tree: dict | None = None) -> list[str]:
    """What is wrong with one ``cicy-search ...`` command line as a page shows it: an unknown command or option.

    ``[--gpu 0]`` (optional parts in brackets) and ``...`` are read as the options inside them; placeholders in
    capitals (``STUDY``, ``RUN_ID``) are arguments like any other. Options given as ``--name=value`` are split.
    """
    tree = tree or commands()
    try:
        words = shlex.split(line.replace("[", " ").replace("]", " "), comments=True)
    except ValueError as e:
        return [f"{line!r}: cannot be split into words ({e})"]
    if not words or words[0] != PROG:
        return [f"{line!r}: does not start with {PROG}"]
    path: tuple[str, ...] = ()
    rest = words[1:]
    while rest and (*path, rest[0]) in tree:
        path = (*path, rest.pop(0))
    command = tree[path]
    if getattr(command, "commands", None) and (not rest or not rest[0].startswith("-")):
        wanted = rest[0] if rest else "(none)"
        return [f"{line!r}: {' '.join((PROG, *path))} has no command {wanted}"]
    known = option_names(command)
    return [
        f"{line!r}: {' '.join((PROG, *path))} has no option {word.split('=')[0]}"
        for word in rest
        if word.startswith("--") and word.split("=")[0] not in known
    ]


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|") if text not in (None, "") else ""


def _default(param, ctx) -> str:
    if param.required:
        return "required"
    value = param.get_default(ctx)
    if value is None or value == () or (getattr(param, "is_flag", False) and not param.secondary_opts):
        return ""
    if isinstance(value, bool):
        return (param.opts if value else param.secondary_opts)[0]
    return f"`{value}`"


def _type(param, ctx) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    return param.display_type(ctx).strip("<>")


def cli_markdown() -> str:
    """The command-line reference page."""
    import typer

    tree = commands()
    lines = [
        "# Command line",
        "",
        "Generated from the `cicy-search` command itself (its typer app, walked through click's command tree) each",
        "time the site is built; `cicy-search COMMAND --help` prints the same. Every mistake on the command line is",
        "one `error:` line and exit code 2 ([errors and exit codes](exit-codes.md)).",
        "",
    ]
    for path, command in tree.items():
        name = " ".join((PROG, *path))
        ctx = typer.Context(command, info_name=name)
        depth = min(len(path) + 1, 3) if path else 2
        lines += [f"{'#' * (depth + 0)} `{name}`" if path else "## `cicy-search`", ""]
        text = (command.help or "").strip()
        if text:
            lines += [text.split("\n\n")[0].replace("\n", " "), ""]
        if getattr(command, "commands", None):
            lines += ["| command | what it does |", "|---|---|"]
            for sub_name, sub in command.commands.items():
                if not getattr(sub, "hidden", False):
                    anchor = "cicy-search-" + "-".join((*path, sub_name))
                    lines.append(f"| [`{sub_name}`](#{anchor}) | {_cell(sub.get_short_help_str(limit=200))} |")
            lines.append("")
        else:
            usage = " ".join(command.collect_usage_pieces(ctx))
            lines += ["```text", f"{name} {usage}".rstrip(), "```", ""]
        lines += _parameter_tables(command, ctx)
    return "\n".join(lines) + "\n"


def _parameter_tables(command, ctx) -> list[str]:
    """The arguments and the options of one command as two tables."""
    lines: list[str] = []
    arguments = [p for p in command.params if not _is_option(p)]
    options = [p for p in command.params if _is_option(p)]
    if arguments:
        lines += ["| argument | type | default | meaning |", "|---|---|---|---|"]
        for p in arguments:
            lines.append(f"| `{p.name.upper()}` | {_type(p, ctx)} | {_default(p, ctx)} | {_cell(getattr(p, 'help', ''))} |")
        lines.append("")
    if options:
        lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
        for p in options:
            spelled = " / ".join(f"`{o}`" for o in (*p.opts, *p.secondary_opts))
            env = f" (environment: `{p.envvar}`)" if getattr(p, "envvar", None) else ""
            lines.append(f"| {spelled} | {_type(p, ctx)} | {_default(p, ctx)} | {_cell(getattr(p, 'help', ''))}{env} |")
        lines.append("")
    return lines


# --- run config and study file ------------------------------------------------------------------------------------

INTRO = {
    "config": (
        "# Run config",
        "A run config (a YAML file given to `cicy-search train`, a study's fixed settings, a recipe's runs) has four "
        "sections besides `name` and `seed`; every key not given takes its default, and an unknown key, a wrong type or "
        "a value out of bounds is one `error:` line naming the key. Generated from `cicy_search.config.reference_rows()`, "
        "the same description that validates the files ([JSON Schema](json-schema.md)).",
    ),
    "study": (
        "# Study file",
        "A study file (`studies/*.yaml`, one study a file; see [Run and resume a study](../tutorials/studies.md)) names "
        "the study, its fixed run settings (`base` plus `data`/`model`/`train` sections, keyed as in the "
        "[run config](config.md)), the search `space`, the objective(s), the sampler, the pruner and the budget. "
        "Generated from `cicy_search.search.studyfile.reference_rows()`.",
    ),
}


def _value(v) -> str:
    """A default as it is written in YAML (``true``, ``[h11]``), blank for none."""
    if v is None or v == "":
        return ""
    return f"`{v if isinstance(v, str) else json.dumps(v)}`"


def _bounds(text) -> str:
    """Bounds as the schema words them; regular expressions keep their backslashes, stars and brackets (which
    Markdown and mkdocs-autorefs would otherwise read as emphasis and cross-references)."""
    return _cell(text).replace("\\", "\\\\").replace("*", "\\*").replace("[", "\\[").replace("]", "\\]").replace("<", "&lt;")


def _table(rows: list[dict]) -> list[str]:
    lines = ["| key | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| `{r['key']}` | {_cell(r.get('type'))} | {_cell(_value(r.get('default')))} | {_bounds(r.get('bounds'))} | {_cell(r.get('description'))} |"
        )
    return [*lines, ""]


def keys_markdown(kind: str, rows: list[dict]) -> str:
    """A reference page from ``reference_rows()``: one table per section (the key's first dotted part); keys that
    belong to one variant (``family``: a model family, a space entry's type) get one table per variant."""
    title, intro = INTRO[kind]
    sections: dict[str, list[dict]] = {}
    for row in rows:
        head = row["key"].split(".")[0] if "." in row["key"] else ""
        sections.setdefault(head, []).append(row)
    lines = [title, "", intro, ""]
    for head, group in sections.items():
        lines += [f"## `{head}`" if head else "## Top level", ""]
        families: dict[str, list[dict]] = {}
        for r in group:
            families.setdefault(r.get("family") or "", []).append(r)
        if list(families) == [""]:
            lines += _table(group)
            continue
        # The key that picks the variant is the one whose default is the variant's name (model.family: dense).
        chooser = next((r["key"] for r in group if r.get("family") and r.get("default") == r["family"]), "")
        name = chooser.rsplit(".", 1)[-1]
        lines += [f"Which keys apply depends on `{chooser}`; each choice's keys and defaults:", ""]
        for family, members in families.items():
            lines += [f"### `{name}: {family}`" if family else "### Every choice", "", *_table(members)]
    return "\n".join(lines) + "\n"


def config_markdown() -> str:
    _import_project()
    from cicy_search import config

    return keys_markdown("config", config.reference_rows())


def study_markdown() -> str:
    _import_project()
    from cicy_search.search import studyfile

    return keys_markdown("study", studyfile.reference_rows())


PAGES = {"reference/cli.md": cli_markdown, "reference/config.md": config_markdown, "reference/study-file.md": study_markdown}


# --- MkDocs events ------------------------------------------------------------------------------------------------


def on_files(files, config):
    """Add the generated pages to the build."""
    from mkdocs.structure.files import File

    for uri, make in PAGES.items():
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=make()))
    return files
