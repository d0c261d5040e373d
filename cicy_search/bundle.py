"""A trained model on disk: the model file, the resolved config and the target ranges.

The same folder layout is logged as a run's ``model`` artifact and written by ``export``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .config import dump_yaml
from .errors import CicyError
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
    folder = Path(folder)
    if not (folder / "config.yaml").is_file():
        raise CicyError(f"{folder}: not a model folder (no config.yaml)")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    targets = [Target(**t) for t in json.loads((folder / "targets.json").read_text())]
    record = json.loads((folder / INPUT_FILE).read_text()) if (folder / INPUT_FILE).is_file() else {}
    if record.get("plugin"):  # its module registers the custom layers the model file names
        from .models import family

        family(record["plugin"]["family"])
    if (folder / SVM_FILE).is_file():
        import joblib

        model = joblib.load(folder / SVM_FILE)
    else:
        import keras

        from . import training  # noqa: F401  (registers the custom accuracy metric)

        model = keras.models.load_model(folder / KERAS_FILE)
    return Loaded(model, config, targets, tuple(record["padding"]) if record.get("padding") else None)


def plugin_files(folder: str | Path) -> list[str]:
    """The code of the plugin family a bundle's model was built by (its package folder or module file), if any."""
    path = Path(folder) / INPUT_FILE
    plugin = json.loads(path.read_text()).get("plugin") if path.is_file() else None
    if not plugin:
        return []
    from .models import family

    return list(family(plugin["family"]).files)


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
