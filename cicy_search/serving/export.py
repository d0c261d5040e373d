"""Export a study's best model: a bundle folder, an MLflow pyfunc model and, optionally, a registry version.

``export`` takes the study's best trial (or the Pareto-front trial named), fetches the model its MLflow
run logged (or retrains it from the trial's full config and seed), evaluates it on exactly the split
its config describes and writes::

    OUT/model.keras     the model (model.joblib for an SVM); with config.yaml and targets.json a bundle
    OUT/config.yaml     the full resolved run config
    OUT/targets.json    the predicted Hodge numbers and their class ranges
    OUT/metrics.json    train/val/test scores recomputed from the bundle, the split (seed, fractions, sizes)
                        and the figures the source run logged
    OUT/source.json     study, trial, MLflow run, data set and its sha256, registry version
    OUT/mlflow_model/   the MLflow pyfunc model (``HodgePredictor``) with signature and input example

The pyfunc takes a DataFrame with one column ``matrix`` (each cell a matrix as a list of rows, or its
JSON text) and returns one row per input: the predicted Hodge numbers (``h11``, ``h21``) and ``error``
(None when the matrix is valid). Served, it answers
``{"dataframe_records": [{"matrix": [[5]]}]}`` with ``{"predictions": [{"h11": ..., "error": null}]}``.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import mlflow
import optuna
import pandas as pd

from .. import bundle, training
from .. import data as cicy_data
from . import predict as predicting
from ..search import study as studies
from ..config import resolve
from ..errors import CicyError, one_line
from ..search.storage import redact
from ..tracking import links

INPUT_EXAMPLE = [[[5]], [[3], [3]]]  # the quintic (h11 = 1, h21 = 101) and the bicubic in P2 x P2 (2, 83)
PYFUNC_ARTIFACT = "pyfunc"  # registered pyfuncs live in the source run under pyfunc/ID (``model`` holds the bundle)
DEFAULT_ALIAS = "champion"
MODEL_CODE = """import mlflow

from cicy_search.serving.export import HodgePredictor

mlflow.models.set_model(HodgePredictor())
"""


class HodgePredictor(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc around a bundle: validates every matrix, predicts the valid ones.

    Input: a DataFrame with a ``matrix`` column (or a list of matrices). Output: a DataFrame with one
    integer column per target and an ``error`` column; invalid matrices get None predictions and their reason.
    """

    def load_context(self, context):
        self.model = bundle.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None):  # the hint turns off MLflow's type-hint checks
        if isinstance(model_input, pd.DataFrame):
            if "matrix" not in model_input.columns:
                raise CicyError(f"expected a column 'matrix', got {list(model_input.columns)}")
            values = list(model_input["matrix"])
        elif isinstance(model_input, dict):
            values = list(model_input.get("matrix", []))
        else:
            values = list(model_input)
        return predicting.predict_frame(self.model, values)


def pick_trial(study: optuna.Study, number: int | None = None) -> optuna.trial.FrozenTrial:
    """The best trial, or the trial ``number`` of the Pareto front; a multi-objective front needs a number."""
    front = studies.best_trials(study)
    numbers = ", ".join(str(t.number) for t in front)
    if number is None:
        if len(front) == 1:
            return front[0]
        raise CicyError(f"study {study.study_name!r} has {len(front)} trials on its Pareto front ({numbers}): choose one with --trial")
    for t in front:
        if t.number == number:
            return t
    what = "the best trial" if len(study.directions) == 1 else "on the Pareto front"
    raise CicyError(f"trial {number} is not {what} of study {study.study_name!r} (trials there: {numbers})")


@dataclass
class ExportResult:
    out: Path
    study: str
    trial: int
    run_id: str
    retrained: bool
    metrics: dict[str, float]  # recomputed from the written bundle
    logged: dict[str, float]  # what the source run logged
    registered: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def mismatched(self) -> list[str]:
        """Scores whose recomputed value differs from the logged one (empty when the export reproduces the run)."""
        return [k for k, v in self.metrics.items() if k in self.logged and abs(self.logged[k] - v) > 1e-12]


def _scores(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.split("_")[0] in training.SPLITS and k != "train_seconds"}


def _requirements() -> list[str]:
    """Pinned runtime requirements for the pyfunc (the cicy_search code itself travels in its code folder)."""
    names = ["mlflow", "keras", "numpy", "pandas", "pyyaml", "scikit-learn", "tensorflow-cpu", "tensorflow"]
    out = []
    for name in names:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    if any(r.startswith("tensorflow-cpu==") for r in out):
        out = [r for r in out if not r.startswith("tensorflow==")]
    return out


def save_pyfunc(bundle_dir: Path, path: Path) -> Path:
    """Write the MLflow pyfunc model for ``bundle_dir`` (copied into it) to ``path``."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    loaded = bundle.load(bundle_dir)
    signature = ModelSignature(
        inputs=Schema([ColSpec(AnyType(), "matrix")]),
        outputs=Schema(
            [ColSpec(DataType.long, name, required=False) for name in loaded.outputs]
            + [ColSpec(DataType.string, "error", required=False)]
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "cicy_search"
        shutil.copytree(Path(__file__).parent.parent, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        stage = Path(tmp) / "bundle"
        shutil.copytree(bundle_dir, stage)
        # A model from code, not a pickle: MLflow runs this file (with the code folder on sys.path) to load it.
        model_code = Path(tmp) / "hodge_predictor.py"
        model_code.write_text(MODEL_CODE)
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(model_code),
            artifacts={"bundle": str(stage)},
            code_paths=[str(code), *bundle.plugin_files(bundle_dir)],  # a plugin family's code travels too
            signature=signature,
            input_example=pd.DataFrame({"matrix": INPUT_EXAMPLE}),
            pip_requirements=_requirements(),
        )
    return path


def _fetch(client, run_id: str, folder: Path) -> None:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise CicyError(f"MLflow run {run_id} not found in {redact(client.tracking_uri)}") from None
    if run.data.tags.get("model_logged") != "true":
        raise CicyError(f"MLflow run {run_id} has no logged model: export it with --retrain")
    with tempfile.TemporaryDirectory() as tmp:
        client.download_artifacts(run_id, "model", tmp)
        shutil.copytree(Path(tmp) / "model", folder)


def _register(client, run, mlflow_model: Path, name: str, alias: str, description: str) -> dict:
    from mlflow.exceptions import MlflowException

    try:
        try:
            client.create_registered_model(name)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        # One folder per export: a later export of the same run must not change what an earlier version serves.
        path = f"{PYFUNC_ARTIFACT}/{uuid.uuid4().hex[:12]}"
        client.log_artifacts(run.info.run_id, str(mlflow_model), path)
        version = client.create_model_version(
            name, f"{run.info.artifact_uri}/{path}", run_id=run.info.run_id, description=description
        )
        client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as e:
        raise CicyError(f"registering {name!r}: {one_line(e)}") from None
    return {"name": name, "version": int(version.version), "alias": alias, "uri": f"models:/{name}@{alias}"}


def _check_registry_names(name: str, alias: str) -> None:
    """Reject a bad model name or alias before anything is trained or written."""
    from mlflow.exceptions import MlflowException

    try:
        from mlflow.utils import validation
    except ImportError:  # pragma: no cover
        return
    checks = [("_validate_model_name", name), ("_validate_model_alias_name", alias), ("_validate_model_alias_name_reserved", alias)]
    for check, value in checks:
        try:
            getattr(validation, check, lambda v: None)(value)
        except MlflowException as e:
            raise CicyError(f"registry name {value!r}: {one_line(e)}") from None


def export(
    study_name: str,
    out: str | Path,
    *,
    storage: str | None = None,
    trial: int | None = None,
    retrain: bool = False,
    register: str | None = None,
    alias: str = DEFAULT_ALIAS,
    tracking_uri: str | None = None,
) -> ExportResult:
    """Export the best (or the named Pareto-front) trial of a study; see the module docstring for the layout.

    Args:
        study_name: the study, in ``storage`` (default: SQLite in ``mlruns/``).
        out: the folder to write; it must not exist or be empty.
        trial: a trial number on the Pareto front (required when the front has several trials).
        retrain: train the trial's config again with its seed (a new tracked run in the study's
            experiment) instead of fetching the logged model.
        register: registered model name: a new version is created and ``alias`` points at it.
        tracking_uri: MLflow store (default: the study's own).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CicyError(f"{out}: exists and is not an empty folder")
    if register:
        _check_registry_names(register, alias)
    study = studies.load(study_name, storage=storage)
    chosen = pick_trial(study, trial)
    if "config" not in chosen.user_attrs:
        raise CicyError(f"trial {chosen.number} of study {study_name!r} has no recorded config")
    config = resolve(chosen.user_attrs["config"])
    client = links.client(study, tracking_uri)
    dataset = config["data"]["dataset"]
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "bundle"
        if retrain:
            from ..tracking.runner import run_tracked

            tracked = run_tracked(
                config,
                mlflow_client=client,
                experiment=study.user_attrs.get("mlflow_experiment", study_name),
                run_name=f"trial-{chosen.number}-retrain",
                tags={
                    "study": study_name,
                    "role": "retrain",
                    "retrain_of_trial": str(chosen.number),
                    "retrain_of_run": links.run_id(chosen, study) or "",
                },
            )
            run_id = tracked.run_id
            bundle.save(stage, tracked.result.model, config, tracked.result.targets)
        else:
            run_id = links.run_id(chosen, study)
            if not run_id:
                raise CicyError(f"trial {chosen.number} of study {study_name!r} has no MLflow run: export it with --retrain")
            _fetch(client, run_id, stage)
        run = client.get_run(run_id)
        logged_hash = run.data.tags.get("dataset_hash")
        if logged_hash and logged_hash != cicy_data.dataset_hash(dataset):
            raise CicyError(
                f"run {run_id} was trained on {dataset} data with sha256 {logged_hash[:12]}..., the shipped data "
                f"differs ({cicy_data.dataset_hash(dataset)[:12]}...): export it with --retrain"
            )
        try:
            loaded = bundle.load(stage)  # evaluate what was written, not what is in memory
        except CicyError as e:  # a damaged logged model: name the run's artifact, not the temporary copy
            raise CicyError(str(e).replace(str(stage), f"runs:/{run_id}/model")) from None
        prepared = training.prepare(loaded.config)
        metrics = training.evaluate(loaded.model, prepared, loaded.config["model"]["head"])
        logged = _scores(run.data.metrics)
        d = loaded.config["data"]
        split = {k: d[k] for k in ("dataset", "seed", "train", "val", "test", "stratify", "keep_products", "limit")}
        split.update({f"n_{k}": len(v) for k, v in prepared.index.items()})
        _write_json(stage / "metrics.json", {"split": split, "metrics": metrics, "logged_metrics": logged})
        source = {
            "study": study_name,
            "trial": chosen.number,
            "objectives": dict(zip(study.user_attrs.get("objectives", ["value"]), chosen.values)),
            "mlflow_run_id": run_id,
            "tracking_uri": redact(client.tracking_uri),
            "retrained": retrain,
            "seed": config["seed"],
            "dataset": dataset,
            "dataset_hash": cicy_data.dataset_hash(dataset),
            "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        _write_json(stage / "source.json", source)
        mlflow_model = save_pyfunc(stage, Path(tmp) / "mlflow_model")
        registered = None
        if register:
            accuracy = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("test_") and k.endswith("accuracy"))
            registered = _register(
                client, run, mlflow_model, register, alias, f"study {study_name}, trial {chosen.number}: {accuracy}"
            )
            _write_json(stage / "source.json", {**source, "registered": registered})
        shutil.copytree(stage, out, dirs_exist_ok=True)
        shutil.copytree(mlflow_model, out / "mlflow_model")
    result = ExportResult(out, study_name, chosen.number, run_id, retrain, metrics, logged, registered)
    if result.mismatched:
        result.notes.append(
            "recomputed scores differ from the logged ones: "
            + ", ".join(f"{k} {metrics[k]:.4f} vs {logged[k]:.4f}" for k in result.mismatched)
        )
    return result


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, default=str) + "\n")
