"""The documentation cannot drift from the code: the site builds strictly, every YAML example loads, every
``cicy-search`` command shown exists with the options shown, the hand-written reference pages name only what
the code writes, and the built site renders in headless Chromium without errors or sideways scrolling."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cicy_search import config
from cicy_search.search import studyfile

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *DOCS.rglob("*.md")])
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _hook():
    spec = importlib.util.spec_from_file_location("docs_reference_hook", DOCS / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _hook()


def blocks(language: str):
    """(page, text) of every fenced block of ``language`` in the README and the docs."""
    for page in PAGES:
        for lang, text in FENCE.findall(page.read_text()):
            if lang == language:
                yield page.relative_to(ROOT), text


def command_lines() -> list[tuple[Path, str]]:
    """Every ``cicy-search ...`` command a page shows: lines of shell blocks (a ``$ `` prompt stripped,
    continuation lines joined) and inline code spans."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for lang, body in FENCE.findall(text):
            if lang not in ("bash", "console", "sh", "shell"):
                continue
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("cicy-search"):
                    found.append((page.relative_to(ROOT), line))
        prose = FENCE.sub("", text)
        found += [(page.relative_to(ROOT), m) for m in re.findall(r"`(cicy-search [^`]*)`", prose)]
    return found


# --- the site builds ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """``mkdocs build --strict`` (what ``make docs`` runs): a broken link, a missing anchor or a page left out of the
    nav is an error. Built with this checkout's code on the path, whatever the virtual environment points at."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.xdist_group("docs_site")  # with the page checks: the site is built once
def test_the_site_builds_strictly_with_every_page_and_the_generated_reference(site):
    for page in ["index.html", "getting-started.html", "results.html", "performance.html", "reference/cli.html",
                 "reference/config.html", "reference/study-file.html", "reference/api.html"]:
        assert (site / page).is_file(), page
    cli = (site / "reference" / "cli.html").read_text()
    assert "cicy-search study run" in cli and "--n-trials" in cli and "CICY_STORAGE" in cli
    api = (site / "reference" / "api.html").read_text()
    assert "load_config" in api and "h11_koszul" in api  # mkdocstrings rendered the modules
    results = (site / "results.html").read_text()
    assert "linear on shared Koszul counts" in results  # the table file was included, not a dangling snippet line


# --- examples and commands ------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Argument ``group`` is an experimental feature")
def _beside(study: dict) -> Path:
    """The folder a study example's relative ``base`` is read from: studies/, or examples/ (the plugin tutorial's)."""
    folders = [ROOT / "studies", ROOT / "examples"]
    return next((f for f in folders if not study.get("base") or (f / str(study["base"])).is_file()), folders[0])


def test_every_yaml_example_loads_through_the_config_or_study_loader_and_its_json_schema(monkeypatch):
    """A block with ``study:`` is a study file (relative bases read from studies/), any other a run config; each
    also passes the JSON Schema that editors are pointed at (schemas/*.schema.json). Paths are read from the
    repository's root with examples/ on the import path, as the plugin tutorial tells its reader to run them."""
    import json

    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT / "examples"))

    import jsonschema

    schemas = {kind: json.loads((ROOT / "schemas" / f"{kind}.schema.json").read_text()) for kind in ("config", "study")}
    examples = list(blocks("yaml"))
    assert len(examples) >= 5
    for page, text in examples:
        raw = config.parse_yaml(text)
        kind = "study" if isinstance(raw, dict) and "study" in raw else "config"
        try:
            studyfile.parse(raw, folder=_beside(raw)) if kind == "study" else config.resolve(raw)
        except Exception as e:
            pytest.fail(f"{page}: YAML example does not load: {e}\n{text}")
        validator = jsonschema.validators.validator_for(schemas[kind])(schemas[kind])
        errors = [e.message for e in validator.iter_errors(raw)]
        assert errors == [], (page, text)


def test_every_command_shown_exists_with_the_options_shown():
    tree = reference.commands()
    lines = command_lines()
    assert len(lines) >= 40
    shown = {path for _, line in lines for path in tree if line.startswith(" ".join(("cicy-search", *path)) + " ")}
    assert {("train",), ("study", "run"), ("worker",), ("export",), ("predict",)} <= shown
    problems = [f"{page}: {p}" for page, line in lines for p in reference.check_command_line(line, tree)]
    assert problems == []


def test_the_command_check_catches_unknown_commands_and_options():
    tree = reference.commands()
    assert reference.check_command_line("cicy-search study run studies/quickstart.yaml --n-trials 6 [--timeout S]", tree) == []
    assert reference.check_command_line("cicy-search data info --no-keep-products", tree) == []
    assert reference.check_command_line("cicy-search study run studies/q.yaml --trials 6", tree) == [
        "'cicy-search study run studies/q.yaml --trials 6': cicy-search study run has no option --trials"
    ]
    assert reference.check_command_line("cicy-search study launch studies/q.yaml", tree) == [
        "'cicy-search study launch studies/q.yaml': cicy-search study has no command launch"
    ]


def test_the_cli_reference_has_every_command_and_option():
    page = reference.cli_markdown()
    for path, command in reference.commands().items():
        assert f"`{' '.join(('cicy-search', *path))}`" in page
        for param in command.params:
            for name in param.opts if param.param_type_name == "option" else [param.name.upper()]:
                assert f"`{name}`" in page, (path, name)


# --- hand-written pages against the code ----------------------------------------------------------------------------


def _code() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "cicy_search").rglob("*.py"))


def test_every_mlflow_name_on_the_reference_page_is_written_by_the_code():
    """A renamed metric, tag, param or artifact fails here until the page follows it. A name's fixed part must be
    a string literal's start in ``cicy_search/`` (``"trial_`` for ``trial_<objective>``); after a placeholder
    (``*_mae``), its longest fixed part must occur in the code."""
    code = _code()
    page = (DOCS / "reference" / "mlflow.md").read_text()
    names = []
    for row in re.findall(r"^\| (`[^|]+`(?:, `[^|]+`)*) \|", page, re.MULTILINE):
        names += re.findall(r"`([^`]+)`", row)
    assert len(names) >= 60
    missing = []
    for name in names:
        parts = [p for p in re.split(r"\*|<[^>]*>", name.rstrip("/")) if p]
        if re.match(r"[*<]", name):
            if max(parts, key=len) not in code:
                missing.append(name)
        elif not re.search(rf"[\"']{re.escape(parts[0])}", code):
            missing.append(name)
    assert missing == []


def test_the_exit_code_page_lists_the_codes_the_cli_documents():
    from cicy_search import cli

    text = cli.main.__doc__.split("Exit codes:")[1]
    documented = {int(m.group(1)) for part in text.split(";") if (m := re.match(r"\s*(\d+)\s", part))}
    page = (DOCS / "reference" / "exit-codes.md").read_text()
    listed = {int(c) for c in re.findall(r"^\| (\d+) \|", page, re.MULTILINE)}
    assert listed == documented == {0, 1, 2, 130, 143}


def test_bench_results_hold_one_latest_result_per_bench_and_the_pages_name_existing_files():
    results = ROOT / "bench" / "results"
    named = set()
    for page in (DOCS / "performance.md", ROOT / "bench" / "README.md"):
        named |= set(re.findall(r"`([\w.-]+\.json)`", page.read_text()))
    missing = sorted(n for n in named if not (results / n).is_file() and "*" not in n)
    assert missing == []
    benches = {p.stem for p in (ROOT / "bench").glob("*.py")} - {"__init__", "__main__", "flops", "measure", "probe", "processes"}
    performance = (DOCS / "performance.md").read_text()
    assert [b for b in sorted(benches) if f"bench.{b}" not in performance] == []


# --- the site in a browser ------------------------------------------------------------------------------------------


@pytest.mark.xdist_group("docs_site")
@pytest.mark.parametrize("page", ["index.html", "reference/cli.html", "reference/config.html", "results.html", "performance.html"])
def test_pages_open_in_chromium_without_errors_and_fit_a_phone(site, page, chromium):
    """Each page is loaded from the built site by file:// (its own assets, no network: Chromium maps every host to
    nowhere) at a phone's width and a desktop's:
    no JavaScript or console error, no failed load, and the page never scrolls sideways (wide tables and code
    scroll inside their boxes)."""
    from cicy_search.reporting import browser

    for size in (browser.PHONE, (1280, 900)):
        check = browser.check_render(site / page, size=size, beside=True)
        assert check.errors == [], (page, size)
        assert 0 < check.page_width <= check.viewport, (page, size, check.page_width)


def test_the_readmes_links_and_images_point_at_files_that_exist():
    """mkdocs checks the site's links; the READMEs (read on the forge, outside the site) are checked here."""
    for readme in (ROOT / "README.md", ROOT / "bench" / "README.md"):
        targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme.read_text())
        local = [t for t in targets if not re.match(r"[a-z]+://", t)]
        assert [t for t in local if not (readme.parent / t).exists()] == [], readme
        if readme.name == "README.md" and readme.parent == ROOT:
            assert len(local) >= 10
