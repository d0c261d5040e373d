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
    return folder


@dataclass
class Loaded:
    model: Any
    config: dict
    targets: list[Target]

    @property
    def shape(self) -> tuple[int, int]:
        from .data import padding

        return padding(self.config["data"]["dataset"])

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Integer Hodge numbers for padded matrices (N, rows, cols)."""
        from .training import predict_matrices

        return predict_matrices(self.model, x, self.targets, self.config)


def load(folder: str | Path) -> Loaded:
    folder = Path(folder)
    if not (folder / "config.yaml").is_file():
        raise CicyError(f"{folder}: not a model folder (no config.yaml)")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    targets = [Target(**t) for t in json.loads((folder / "targets.json").read_text())]
    if (folder / SVM_FILE).is_file():
        import joblib

        model = joblib.load(folder / SVM_FILE)
    else:
        import keras

        from . import training  # noqa: F401  (registers the custom accuracy metric)

        model = keras.models.load_model(folder / KERAS_FILE)
    return Loaded(model, config, targets)


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
