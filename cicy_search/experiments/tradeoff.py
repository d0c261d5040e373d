"""The bias-variance trade-off as a recipe: ``cicy-search biasvar`` with every setting kept in one file.

A recipe with a ``vary`` key (``recipes/biasvar.yaml``) is run by ``cicy-search report recipe`` like the
overfitting one, and gives the same parent run, child runs per replica and report as ``cicy-search biasvar``::

    name: biasvar
    experiment: cicy-search-biasvar
    config: dense                        # a shipped config, or a run YAML (relative to the recipe)
    override: {data: {train: 0.05}, train: {early_stopping: 0}}
    vary: {param: train.epochs, values: [1, 4, 16, 64, 256]}
    replicas: 8                          # models per level, each on its own bootstrap resample
    resample: bootstrap
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CicyError

KEYS = ("config", "description", "experiment", "name", "override", "replicas", "resample", "seed", "vary")


def is_recipe(path: str | Path) -> bool:
    """Whether the recipe file is a bias-variance one (it has ``vary``)."""
    from ..config import load_file

    return "vary" in load_file(path)


def load(path: str | Path) -> dict:
    """The recipe, checked: unknown keys, a ``vary`` without a parameter or with fewer than two levels."""
    from ..config import load_file

    path = Path(path)
    raw = load_file(path)
    unknown = sorted(set(raw) - set(KEYS), key=str)
    if unknown:
        raise CicyError(f"{path}: unknown key {str(unknown[0])[:60]!r} (allowed: {', '.join(KEYS)})")
    vary = raw.get("vary")
    if not (isinstance(vary, dict) and set(vary) == {"param", "values"} and isinstance(vary["param"], str)
            and isinstance(vary["values"], list) and len(vary["values"]) >= 2):
        raise CicyError(f"{path}: vary: expected {{param: SETTING, values: [at least two levels]}}")
    override = raw.get("override") or {}
    if not isinstance(override, dict):
        raise CicyError(f"{path}: override: expected a mapping")
    for key, kind in (("replicas", int), ("seed", int), ("config", str), ("resample", str)):
        if key in raw and (not isinstance(raw[key], kind) or isinstance(raw[key], bool)):
            raise CicyError(f"{path}: {key}: expected {'an integer' if kind is int else 'a string'}")
    return {
        "name": raw.get("name", path.stem),
        "experiment": raw.get("experiment", f"cicy-search-{path.stem}"),
        "config": raw.get("config", "dense"),
        "override": override,
        "param": vary["param"],
        "values": vary["values"],
        "replicas": raw.get("replicas", 5),
        "resample": raw.get("resample", "bootstrap"),
        "seed": raw.get("seed"),
        "base": path.parent,
    }


def recipe_config(recipe: dict, *, epochs: int | None = None, limit: int | None = None) -> dict:
    """The resolved run config every level starts from: the named config with the recipe's override."""
    from .compare import recipe_run

    if epochs is not None and recipe["param"] == "train.epochs":
        raise CicyError("--epochs: this recipe varies train.epochs itself")
    try:
        return recipe_run(recipe, recipe["config"], epochs=epochs, limit=limit)
    except CicyError as e:
        raise CicyError(f"{recipe['name']}: {e}") from None


def run_recipe(
    path: str | Path,
    client,
    *,
    epochs: int | None = None,
    limit: int | None = None,
    replicas: int | None = None,
    out: str | Path | None = None,
    png: bool = True,
    progress: bool = True,
):
    """Run the recipe's bias-variance experiment; returns ``biasvar.BiasVarianceResult``."""
    from . import biasvar

    recipe = load(path)
    cfg = recipe_config(recipe, epochs=epochs, limit=limit)
    return biasvar.run(
        cfg, recipe["param"], recipe["values"], mlflow_client=client, replicas=replicas or recipe["replicas"],
        resample=recipe["resample"], seed=recipe["seed"], experiment=recipe["experiment"],
        out=out or Path("reports") / f"{recipe['name']}.html", png=png, progress=progress,
    )
