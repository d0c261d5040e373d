"""A trained model on disk: the model file, the resolved config and the target ranges.

The same folder layout is logged as a run's ``model`` artifact and written by ``export``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import dump_yaml, load_file, read_text, resolve
from .errors import CicyError, one_line
from .models import SvmModel, Target

KERAS_FILE = "model.keras"
SVM_FILE = "model.joblib"
INPUT_FILE = "input.json"


def save(folder: str | Path, model, config: dict, targets: list[Target]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, SvmModel):
        import joblib

        joblib.dump(model, folder / SVM_FILE)
    else:
        model.save(folder / KERAS_FILE)
    (folder / "config.yaml").write_text(dump_yaml(config))
    (folder / "targets.json").write_text(json.dumps([t.to_dict() for t in targets]))
    (folder / INPUT_FILE).write_text(json.dumps(_input_record(config)))
    return folder


def _input_record(config: dict) -> dict:
    """The padding the model reads and, for a plugin family, its import path and package version: what loading
    and predicting need without the data set at hand."""
    from .data import padding
    from .models import family

    name = config["model"]["family"]
    plugin = None if name == "svm" or family(name).builtin else family(name).record()
    return {"padding": list(padding(config["data"]["dataset"])), "plugin": plugin}


@dataclass
class Loaded:
    model: Any
    config: dict
    targets: list[Target]
    padding: tuple[int, int] | None = None  # recorded with the model (older bundles: from the data set's name)

    @property
    def shape(self) -> tuple[int, int]:
        from .data import padding

        return self.padding or padding(self.config["data"]["dataset"])

    @property
    def outputs(self) -> list[str]:
        """Every target the config asks for, derived ones included (``data.physics``: h21 from h11)."""
        return list(self.config["data"].get("targets") or [t.name for t in self.targets])

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Integer Hodge numbers (every target in ``outputs``) for padded matrices (N, rows, cols)."""
        from .training import predict_matrices

        return predict_matrices(self.model, x, self.targets, self.config)


def load(folder: str | Path) -> Loaded:
    """Read a model folder; a missing, truncated or malformed file is a one-line ``CicyError`` naming it."""
    folder = Path(folder)
    if not (folder / "config.yaml").is_file():
        raise CicyError(f"{folder}: not a model folder (no config.yaml)")
    record = _read_record(folder / INPUT_FILE)
    if record.get("plugin"):  # first: its module registers the custom layers the model file names, and the config's family
        from .models import family

        family(record["plugin"]["family"])
    config = _read_config(folder / "config.yaml")
    targets = _read_targets(folder / "targets.json")
    svm = (folder / SVM_FILE).is_file()
    path = folder / (SVM_FILE if svm else KERAS_FILE)
    if not path.is_file():
        raise CicyError(f"{path}: no such file (the model folder has no {KERAS_FILE} nor {SVM_FILE})")
    try:
        if svm:
            import joblib

            model = joblib.load(path)
        else:
            import keras

            from . import training  # noqa: F401  (registers the custom accuracy metric)

            model = keras.models.load_model(path)
    except Exception as e:  # a damaged file raises whatever its reader trips on (zipfile, h5py, pickle, ValueError)
        raise CicyError(f"{path}: not a readable model file ({type(e).__name__}: {one_line(e, 200)})") from None
    return Loaded(model, config, targets, tuple(record["padding"]) if record.get("padding") else None)


def plugin_files(folder: str | Path) -> list[str]:
    """The code of the plugin family a bundle's model was built by (its package folder or module file), if any."""
    plugin = _read_record(Path(folder) / INPUT_FILE).get("plugin")
    if not plugin:
        return []
    from .models import family

    return list(family(plugin["family"]).files)


def _read_json(path: Path):
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise CicyError(f"{path}: not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def _read_record(path: Path) -> dict:
    """``input.json`` (padding, plugin); older bundles have none."""
    if not path.is_file():
        return {}
    record = _read_json(path)
    good = isinstance(record, dict) and (
        record.get("padding") is None
        or (isinstance(record["padding"], list) and len(record["padding"]) == 2 and all(isinstance(n, int) and n > 0 for n in record["padding"]))
    ) and (record.get("plugin") is None or (isinstance(record["plugin"], dict) and isinstance(record["plugin"].get("family"), str)))
    if not good:
        raise CicyError(f'{path}: expected {{"padding": [rows, columns], "plugin": null or {{"family": ...}}}}')
    return record


def _read_config(path: Path) -> dict:
    config = load_file(path)
    try:
        resolve(config)
    except CicyError as e:
        raise CicyError(f"{path}: not a run config: {e}") from None
    return config


def _read_targets(path: Path) -> list[Target]:
    raw = _read_json(path)
    good = isinstance(raw, list) and raw and all(
        isinstance(t, dict)
        and set(t) == {"name", "low", "high"}
        and isinstance(t["name"], str)
        and all(isinstance(t[k], int) and not isinstance(t[k], bool) for k in ("low", "high"))
        and t["low"] <= t["high"]
        for t in raw
    )
    if not good:
        raise CicyError(f'{path}: expected a non-empty list of {{"name": str, "low": int, "high": int}} with low <= high')
    return [Target(**t) for t in raw]


def locate(folder: str | Path) -> Path:
    """The bundle inside ``folder``: the folder itself, or the ``bundle`` artifact of an MLflow model folder in it.

    Accepts an export folder (which is a bundle), its ``mlflow_model/`` subfolder, or an MLflow pyfunc model
    downloaded from the registry.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CicyError(f"{folder}: no such model folder")
    for candidate in (folder, folder / "artifacts" / "bundle", folder / "mlflow_model" / "artifacts" / "bundle"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise CicyError(f"{folder}: not a model folder (no config.yaml, nor an MLflow model with a bundle artifact)")
