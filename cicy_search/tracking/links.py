"""The link between an Optuna study and MLflow, in one place: the user attributes that hold it and how to read them.

A study records its MLflow parent run and tracking URI when it is created (``study.create``); each trial records
its own run as soon as the run starts (``objective``). Everything that goes from Optuna to MLflow reads them here.
"""

from __future__ import annotations

RUN_ID = "mlflow_run_id"  # on a trial: its MLflow run
PARENT_RUN_ID = "mlflow_parent_run_id"  # on a study: the parent run its trials are children of
TRACKING_URI = "tracking_uri"  # on a study: the MLflow tracking URI it was created with


def run_id(trial) -> str | None:
    """The MLflow run of a trial (FrozenTrial or Trial), None before its run started."""
    return trial.user_attrs.get(RUN_ID)


def parent_run_id(study) -> str | None:
    return study.user_attrs.get(PARENT_RUN_ID)


def tracking_uri(study, given: str | None = None) -> str | None:
    """The tracking URI a command was given, else the one the study was created with."""
    return given or study.user_attrs.get(TRACKING_URI)


def client(study, given: str | None = None):
    """An MLflow client on the study's tracking server (``given`` first)."""
    from .. import tracking

    return tracking.client(tracking_uri(study, given))
