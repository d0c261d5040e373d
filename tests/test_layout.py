"""The package layout shows the flow: no module imports from a layer above its own.

Layers, bottom to top: the top-level modules (data, model builders, config, training, the model bundle); tracking
(the MLflow client, the trial runner, curves, the study-run links and summary); reporting (reads what tracking
wrote, never trains); search (space, study files, objective, study, storages, workers, keras-tuner); serving
(export, predict); experiments (train, then report); the CLI. Imports inside functions count too, and no two modules
import each other, directly or through others.

And the libraries are used through their public APIs: only ``cicy_search/compat.py`` (top layer, imports nothing of
the package) may name a private module or attribute of Optuna, MLflow, typer, Keras, keras-tuner or TensorFlow.
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


def plant(tmp_path: Path, files: dict[str, str]) -> Path:
    """A package ``cicy_search`` under ``tmp_path`` made of ``files`` (path inside it -> text), with its __init__.py."""
    root = tmp_path / "cicy_search"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_walker_finds_an_upward_import(tmp_path):
    """The check can fail: lazy and relative upward imports are found, a downward one is not."""
    root = plant(tmp_path, {
        "tracking/__init__.py": "", "search/__init__.py": "", "reporting/__init__.py": "", "cli.py": "",
        "training.py": "from .tracking import runner\n",
        "tracking/runner.py": "def f():\n    from ..search import study\n",
        "search/study.py": "from .. import tracking\nfrom ..tracking.runner import f\n",
        "reporting/html.py": "from ..training import x\nimport cicy_search.cli\nfrom .errors import one_line\n",
    })  # fmt: skip
    assert upward_imports(modules(root)) == [
        "cicy_search.reporting.html -> cicy_search.cli",
        "cicy_search.reporting.html -> cicy_search.reporting.errors (no such module)",
        "cicy_search.reporting.html -> cicy_search.training",
        "cicy_search.tracking.runner -> cicy_search.search.study",
        "cicy_search.training -> cicy_search.tracking.runner",
    ]


def import_cycles(found: dict[str, Path] | None = None) -> list[list[str]]:
    """The package's import cycles (imports inside functions count), each as its sorted modules: the strongly
    connected components of more than one module in the import graph (Tarjan's algorithm, iterative)."""
    found = modules() if found is None else found
    graph = {name: sorted(m for m in imports(name, path, set(found)) if m in found) for name, path in found.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, edges = work[-1]
            nxt = next((m for m in edges if m not in index or m in stack), None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = stack[stack.index(node):]
                    del stack[stack.index(node):]
                    if len(component) > 1:
                        cycles.append(sorted(component))
            elif nxt in index:
                low[node] = min(low[node], index[nxt])
            else:
                index[nxt] = low[nxt] = len(index)
                stack.append(nxt)
                work.append((nxt, iter(graph[nxt])))
    return sorted(cycles)


def test_no_module_imports_another_that_imports_it_back():
    """A cycle, even through an import inside a function, means two modules that cannot be read apart."""
    assert import_cycles() == []


def test_the_cycle_check_finds_planted_cycles(tmp_path):
    root = plant(tmp_path, {
        "search/__init__.py": "", "lists.py": "", "userdata.py": "from .lists import x\n",
        "data.py": "def f():\n    from . import cicy4\n", "cicy4.py": "from .data import f\n",
        "search/study.py": "def g():\n    from .worker import h\n", "search/worker.py": "from . import budget\n",
        "search/budget.py": "from .study import g\n",
    })  # fmt: skip
    assert import_cycles(modules(root)) == [
        ["cicy_search.cicy4", "cicy_search.data"],
        ["cicy_search.search.budget", "cicy_search.search.study", "cicy_search.search.worker"],
    ]


@pytest.mark.parametrize("package", ["search", "tracking", "reporting", "experiments", "serving"])
def test_each_layer_is_a_package_with_a_docstring(package):
    init = PACKAGE / package / "__init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{init} says what flows through it"


# --- Private names of the libraries: only cicy_search/compat.py may use them -------------------------------------

ROOT = PACKAGE.parent
ADAPTER = PACKAGE / "compat.py"
LIBRARIES = ("optuna", "optuna_integration", "mlflow", "typer", "click", "keras", "keras_tuner", "tensorflow")
# Packages the libraries keep private without an underscore: Keras's and keras-tuner's implementation, TensorFlow's.
PRIVATE_PACKAGES = ("keras.src", "keras_tuner.src", "tensorflow.python")
# The libraries' private names the package has used (compat.py's contract tests cover them): refused everywhere else
# even where the package names something of its own so, since a reader could not tell the two apart.
LIBRARY_PRIVATE = {
    "_storage", "_study_id", "_trial_id", "_backend", "_sync_with_backend", "_thread_lock", "_replay_result", "_studies",
    "_study_id_to_trial_ids", "_trials", "_get_trials", "_get_stale_trial_ids", "_percentile", "_n_startup_trials",
    "_n_warmup_steps", "_interval_steps", "_n_min_trials", "_keras_history", "_click", "_cached_frozen_trial",
    "_get_checkpoint_fname",
}  # fmt: skip


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _library_path(dotted: str) -> bool:
    """A dotted module path of one of the libraries that names a private module or package."""
    parts = dotted.split(".")
    return parts[0] in LIBRARIES and (any(map(_private, parts[1:])) or any(dotted == p or dotted.startswith(p + ".") for p in PRIVATE_PACKAGES))


def _defined(tree: ast.AST) -> set[str]:
    """The private names a file defines itself: functions, classes, class and module attributes, ``x._name = ...``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            for t in ast.walk(target):
                if isinstance(t, ast.Attribute) and isinstance(t.ctx, ast.Store):
                    found.add(t.attr)
                elif isinstance(t, ast.Name):
                    found.add(t.id)
    return {n for n in found if _private(n)}


def private_uses(files: list[Path], adapter: Path = ADAPTER) -> list[str]:
    """``file:line: what`` for every private name of the libraries a file other than ``adapter`` imports, reads, defines
    or names in a string (a logger's name): a private module (``optuna.storages._heartbeat``, ``keras.src``), an
    underscore name imported from a library, an attribute ``x._name`` that no file given defines itself, or one of
    ``LIBRARY_PRIVATE`` whoever defines it."""
    trees = {path: ast.parse(path.read_text()) for path in files if path != adapter}
    own = set().union(*map(_defined, trees.values())) - LIBRARY_PRIVATE
    bad = []
    for path, tree in sorted(trees.items()):
        parts = path.parts
        where = "/".join(parts[max(i for i, p in enumerate(parts) if p in ("cicy_search", "bench")):])
        for node in ast.walk(tree):
            found = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names if _library_path(a.name)]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                if _library_path(node.module):
                    found = [node.module]
                elif node.module.split(".")[0] in LIBRARIES:
                    found = [f"{node.module}.{a.name}" for a in node.names if _private(a.name)]
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                if node.attr in LIBRARY_PRIVATE or node.attr not in own:
                    found = [f"{ast.unparse(node.value)}.{node.attr}"]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in LIBRARY_PRIVATE:
                found = [f"def {node.name}"]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr", "setattr", "delattr"):
                name = node.args[1] if len(node.args) > 1 else None
                if isinstance(name, ast.Constant) and isinstance(name.value, str) and _private(name.value):
                    if name.value in LIBRARY_PRIVATE or name.value not in own:
                        found = [f"{node.func.id}(..., {name.value!r})"]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _library_path(node.value):
                found = [repr(node.value)]
            bad += [(where, node.lineno, what) for what in found]
    return [f"{where}:{line}: {what}" for where, line, what in sorted(bad)]


def checked_files() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *(ROOT / "bench").glob("*.py")])


def test_only_the_adapter_uses_private_names_of_the_libraries():
    """Optuna, MLflow, typer, Keras and keras-tuner through their public APIs only, but in ``cicy_search/compat.py``
    (whose contract tests say when a release changes a name it uses): add a function there, not a private use here."""
    assert private_uses(checked_files()) == []


def test_the_private_name_check_finds_planted_uses(tmp_path):
    """The check can fail: each kind of private use, planted in a copy of a real module, is found; the module's own
    private names and the adapter's uses are not."""
    real = PACKAGE / "search" / "history.py"
    planted = tmp_path / "cicy_search" / "search" / "history.py"
    planted.parent.mkdir(parents=True)
    lines = [
        "from optuna.storages._heartbeat import BaseHeartbeat",
        "import keras.src.layers",
        "from optuna.pruners import _percentile",
        "x = study._storage",
        "y = trial.some_private._new_name",
        "z = getattr(storage, '_backend', None)",
        "logger = logging.getLogger('optuna.study._optimize')",
        "def _get_stale_trial_ids(self, study_id): ...",
    ]
    planted.write_text(real.read_text() + "\n" + "\n".join(lines) + "\n")
    adapter = tmp_path / "cicy_search" / "compat.py"
    adapter.write_text("from optuna.storages._heartbeat import BaseHeartbeat\nx = study._storage\n")
    found = private_uses([planted, adapter], adapter=adapter)
    n = len(real.read_text().splitlines()) + 1
    assert found == [
        f"cicy_search/search/history.py:{n + 1}: optuna.storages._heartbeat",
        f"cicy_search/search/history.py:{n + 2}: keras.src.layers",
        f"cicy_search/search/history.py:{n + 3}: optuna.pruners._percentile",
        f"cicy_search/search/history.py:{n + 4}: study._storage",
        f"cicy_search/search/history.py:{n + 5}: trial.some_private._new_name",
        f"cicy_search/search/history.py:{n + 6}: getattr(..., '_backend')",
        f"cicy_search/search/history.py:{n + 7}: 'optuna.study._optimize'",
        f"cicy_search/search/history.py:{n + 8}: def _get_stale_trial_ids",
    ]
    assert private_uses([real]) == []
