"""The package layout shows the flow: no module imports from a layer above its own.

Layers, bottom to top: the top-level modules (data, model builders, config, training, the model bundle); tracking
(the MLflow client, the trial runner, curves, the study-run links and summary); reporting (reads what tracking
wrote, never trains); search (space, study files, objective, study, storages, workers, keras-tuner); serving
(export, predict); experiments (train, then report); the CLI. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cicy_search"
LAYERS = ["cicy_search", "cicy_search.tracking", "cicy_search.reporting", "cicy_search.search", "cicy_search.serving",
          "cicy_search.experiments", "cicy_search.cli"]
TOP = {"cicy_search.cli", "cicy_search.__main__"}
# Reports read: they never train a model nor run a trial.
READ_ONLY = {"cicy_search.reporting": ("cicy_search.training", "cicy_search.tracking.runner")}


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, wherever in the file the import is (a name the package
    does not have is returned as it is, so that it can be told apart)."""
    root = name.split(".")[0]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if (m == root or m.startswith(root + ".")) and m != name}


def layer(name: str) -> int:
    if name in TOP:
        return len(LAYERS) - 1
    return max(i for i, prefix in enumerate(LAYERS) if name == prefix or name.startswith(prefix + "."))


def upward_imports(found: dict[str, Path] | None = None, layer_of=layer) -> list[str]:
    """``importer -> imported`` for every import of a module from a higher layer, that a read-only layer forbids,
    or of a module the package does not have (an import the move left behind)."""
    found = modules() if found is None else found
    bad = []
    for name, path in sorted(found.items()):
        for target in sorted(imports(name, path, set(found))):
            if target not in found:
                bad.append(f"{name} -> {target} (no such module)")
                continue
            forbidden = any(name.startswith(p + ".") and target.startswith(f) for p, fs in READ_ONLY.items() for f in fs)
            if layer_of(target) > layer_of(name) or forbidden:
                bad.append(f"{name} -> {target}")
    return bad


def test_no_module_imports_from_a_layer_above_its_own():
    assert upward_imports() == []


def test_the_walker_finds_an_upward_import(tmp_path):
    """The check can fail: lazy and relative upward imports are found, a downward one is not."""
    root = tmp_path / "cicy_search"
    for sub in ("tracking", "search", "reporting"):
        (root / sub).mkdir(parents=True)
        (root / sub / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "cli.py").write_text("")
    (root / "training.py").write_text("from .tracking import runner\n")
    (root / "tracking" / "runner.py").write_text("def f():\n    from ..search import study\n")
    (root / "search" / "study.py").write_text("from .. import tracking\nfrom ..tracking.runner import f\n")
    (root / "reporting" / "html.py").write_text("from ..training import x\nimport cicy_search.cli\nfrom .errors import one_line\n")
    assert upward_imports(modules(root)) == [
        "cicy_search.reporting.html -> cicy_search.cli",
        "cicy_search.reporting.html -> cicy_search.reporting.errors (no such module)",
        "cicy_search.reporting.html -> cicy_search.training",
        "cicy_search.tracking.runner -> cicy_search.search.study",
        "cicy_search.training -> cicy_search.tracking.runner",
    ]


@pytest.mark.parametrize("package", ["search", "tracking", "reporting", "experiments", "serving"])
def test_each_layer_is_a_package_with_a_docstring(package):
    init = PACKAGE / package / "__init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{init} says what flows through it"
