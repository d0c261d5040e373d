"""Bias-variance experiment: expected error and its decomposition as one setting (the complexity) grows.

For each level of the setting, B replicas of the run config train on independent resamples of the training
split (bootstrap samples, or disjoint subsets) with replica seeds ``seed + b`` (data resample and weight
initialisation, so the variance includes both), and predict the same fixed evaluation set: the validation
split (the test split stays unused, as everywhere in cicy-search). Regression heads are decomposed under
squared loss on the raw outputs, classification heads under 0-1 loss (Domingos 2000; see
``decomposition``). The Hodge numbers are a deterministic function of the configuration matrix, so the
noise term is 0 and the expected error equals the measured mean error over replicas.

One MLflow parent run carries the table (CSV), the figures and the report; each replica is a child run.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import yaml
from plotly.subplots import make_subplots

from ..config import flatten, resolve, set_path
from ..errors import CicyError
from ..reporting import decomposition
from ..reporting.html import Report

EVAL_SPLIT = "val"
RESAMPLING = ("bootstrap", "disjoint")


def parse_vary(spec: str) -> tuple[str, list[Any]]:
    """``"model.width=8,32,128"`` -> ``("model.width", [8, 32, 128])``; values are read as YAML scalars."""
    param, sep, values = spec.partition("=")
    param = param.strip()
    if not sep or not param or not values.strip():
        raise CicyError(f"--vary {spec!r}: expected PARAM=v1,v2,... (for example model.width=16,64,256)")
    try:
        from ..config import parse_yaml  # the study files' reading: 1e-3 is a number

        parsed = [parse_yaml(v.strip()) for v in values.split(",") if v.strip()]
    except (yaml.YAMLError, ValueError, RecursionError):
        raise CicyError(f"--vary {spec!r}: cannot read the values") from None
    if len(parsed) < 2:
        raise CicyError(f"--vary {spec!r}: give at least two levels")
    return param, parsed


def level_configs(config: dict, param: str, values: list) -> list[dict]:
    """One resolved config per level; an unknown setting or a bad value is a ``CicyError``."""
    if param not in flatten(config):
        raise CicyError(f"unknown parameter {param!r} for a {config['model']['family']} config "
                        f"(e.g. {', '.join(k for k in flatten(config) if k.startswith('model.'))})")
    out = []
    for value in values:
        cfg = copy.deepcopy(config)
        set_path(cfg, param, value)
        try:
            out.append(resolve(cfg))
        except CicyError as e:
            raise CicyError(f"{param}={value}: {e}") from None
    return out


def _replica(prepared, index: np.ndarray):
    """The prepared arrays with the training split replaced by the resample ``index``."""
    train = prepared.index["train"][index]
    return dataclasses.replace(
        prepared,
        x={**prepared.x, "train": prepared.x["train"][index]},
        y={**prepared.y, "train": {k: v[index] for k, v in prepared.y["train"].items()}},
        index={**prepared.index, "train": train},
    )


def eval_predictions(model, x: np.ndarray, targets, head: str) -> dict[str, np.ndarray]:
    """Class labels for classification heads, raw real outputs for regression heads."""
    from ..models import SvmModel
    from ..training import decode

    outputs = model.predict(x) if isinstance(model, SvmModel) else model.predict(x, batch_size=1024, verbose=0)
    if head == "classification":
        return decode(outputs, targets, head)
    if not isinstance(outputs, dict):
        outputs = {targets[0].name: outputs}
    return {t.name: np.asarray(outputs[t.name], dtype=np.float64).reshape(len(x)) for t in targets}


@dataclass
class BiasVarianceResult:
    param: str
    table: pd.DataFrame
    figure: go.Figure
    run_id: str
    html: Path
    png_note: str | None
    predictions: list[dict[str, np.ndarray]]  # per level: {target: (replicas, points) on the validation split}


def run(
    config: dict,
    param: str,
    values: list,
    *,
    mlflow_client,
    replicas: int = 5,
    resample: str = "bootstrap",
    seed: int | None = None,
    experiment: str = "cicy-search-biasvar",
    out: str | Path | None = None,
    png: bool = True,
    progress: bool = True,
) -> BiasVarianceResult:
    """Train ``replicas`` models per level of ``param`` and decompose their error on the validation split.

    Args:
        config: a resolved run config, the base every level starts from.
        param: dotted setting varied (``model.width``, ``model.depth``, ``train.epochs``, ...).
        values: its levels, in order of growing complexity.
        replicas: models per level (B >= 2).
        resample: ``bootstrap`` (n draws with replacement per replica) or ``disjoint`` (B disjoint subsets).
        seed: first replica seed (default: the config's seed).
        out: the HTML report (default ``reports/biasvar-PARAM.html``).
    """
    if replicas < 2:
        raise CicyError(f"--replicas {replicas}: need at least 2 replicas to measure a variance")
    if resample not in RESAMPLING:
        raise CicyError(f"unknown resampling {resample!r}: choose {' or '.join(RESAMPLING)}")
    configs = level_configs(config, param, values)
    seed = config["seed"] if seed is None else seed
    loss = "zero_one" if config["model"]["head"] == "classification" else "squared"
    from .. import tracking
    from ..tracking.runner import run_tracked
    from ..training import prepare

    prepared_by_data: dict[str, Any] = {}
    for cfg in configs:  # prepared before any run exists, so a request that cannot work leaves nothing in MLflow
        key = repr(cfg["data"])
        if key not in prepared_by_data:
            prepared_by_data[key] = prepare(cfg)
        n_train = len(prepared_by_data[key].x["train"])
        if resample == "disjoint" and replicas > n_train:
            raise CicyError(f"--replicas {replicas}: more than the {n_train} training examples to split")
    with tracking.Run.start(
        mlflow_client, experiment, run_name=f"biasvar {param}", tags={"report": "biasvar", "biasvar.param": param}
    ) as parent:
        parent.log_params(
            {
                **flatten(config),
                "biasvar.param": param,
                "biasvar.values": ",".join(map(str, values)),
                "biasvar.replicas": replicas,
                "biasvar.resample": resample,
                "biasvar.seed": seed,
                "biasvar.eval_split": EVAL_SPLIT,
                "biasvar.loss": loss,
            }
        )
        for cfg in configs:  # the splits the replicas resample (each replica run lists its own resample)
            p = prepared_by_data[repr(cfg["data"])]
            parent.log_inputs(tracking.dataset_inputs(cfg["data"], p.dataset.hash, p.index))
        rows, predictions = [], []
        with _progress(progress, len(values) * replicas) as advance, _quiet_retracing():
            for value, cfg in zip(values, configs):
                prepared = prepared_by_data[repr(cfg["data"])]
                indices = decomposition.resample(len(prepared.x["train"]), replicas, resample, seed)
                preds: dict[str, list] = {t.name: [] for t in prepared.targets}
                n_params = []
                for b, index in enumerate(indices):
                    replica_cfg = {**cfg, "seed": seed + b}
                    tracked = run_tracked(
                        replica_cfg,
                        mlflow_client=mlflow_client,
                        experiment=experiment,
                        run_name=f"{param}={value} replica {b}",
                        parent_run_id=parent.run_id,
                        tags={"biasvar.level": str(value), "biasvar.replica": str(b)},
                        params={"biasvar.replica": b, "biasvar.resample": resample, "biasvar.resample_seed": seed + b},
                        prepared=_replica(prepared, index),
                        log_model=False,
                    )
                    n_params.append(tracked.result.n_params)
                    out_b = eval_predictions(tracked.result.model, prepared.x[EVAL_SPLIT], prepared.targets, cfg["model"]["head"])
                    for name, p in out_b.items():
                        preds[name].append(p)
                    advance(f"{param}={value} replica {b + 1}/{replicas}")
                predictions.append({k: np.stack(v) for k, v in preds.items()})
                for t in prepared.targets:
                    d = decomposition.decompose(loss, np.stack(preds[t.name]), prepared.y[EVAL_SPLIT][t.name])
                    spread = replica_spread(loss, np.stack(preds[t.name]), prepared.y[EVAL_SPLIT][t.name])
                    rows.append({param: value, "target": t.name, "n_params": int(np.mean(n_params)), **d.row(), **spread})
        table = pd.DataFrame(rows)
        fig = figure(table, param)
        report = build_report(table, fig, param, config=config, replicas=replicas, resample=resample, loss=loss)
        saved = report.save(out or Path("reports") / f"biasvar-{param}.html", png=png)
        saved.log(mlflow_client, parent.run_id)
        parent.log_artifacts({"biasvar.csv": table.to_csv(index=False)})
        for level, part in enumerate(rows[i : i + len(prepared.targets)] for i in range(0, len(rows), len(prepared.targets))):
            parent.log_metrics({f"{r['target']}_{k}": r[k] for r in part for k in TERM_KEYS}, step=level)
    return BiasVarianceResult(param, table, fig, parent.run_id, saved.html, saved.png_note, predictions)


def replica_spread(loss: str, preds: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """How much one replica's own error varies around the expected error: its sd, min and max over replicas."""
    y = np.asarray(target, dtype=np.float64)
    errors = np.mean((preds - y) ** 2, axis=1) if loss == "squared" else np.mean(preds != y, axis=1)
    return {"error_sd": float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0,
            "error_min": float(errors.min()), "error_max": float(errors.max())}


@contextlib.contextmanager
def _quiet_retracing():
    """Every replica builds a new model, so TensorFlow warns about retracing each time: expected here."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _progress:
    """A rich progress bar over all replicas; a no-op when ``enabled`` is false."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda status: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("replicas"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}"))
        self.bar.start()
        task = self.bar.add_task("replicas", total=self.total, status="")
        return lambda status: self.bar.update(task, advance=1, status=status)

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()


TERMS = (
    ("error", "expected error", "#111111", "solid"),
    ("bias", "bias", "#1f77b4", "solid"),
    ("net_variance", "net variance", "#d62728", "solid"),
    ("variance", "variance", "#d62728", "dot"),
    ("noise", "noise", "#7f7f7f", "dash"),
)
TERM_KEYS = tuple(t[0] for t in TERMS)


def figure(table: pd.DataFrame, param: str) -> go.Figure:
    """Error, bias, variance and noise against the varied setting, one panel per target."""
    targets = list(dict.fromkeys(table["target"]))
    fig = make_subplots(rows=1, cols=len(targets), subplot_titles=targets)
    values = list(dict.fromkeys(table[param]))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    squared = set(table["loss"]) == {"squared"}
    for col, target in enumerate(targets, start=1):
        part = table[table["target"] == target]
        x = list(part[param]) if numeric else [str(v) for v in part[param]]
        for key, label, color, dash in TERMS:
            name = "bias²" if key == "bias" and squared else label
            fig.add_trace(
                go.Scatter(x=x, y=list(part[key]), mode="lines+markers", name=name, legendgroup=key,
                           showlegend=col == 1, line={"color": color, "dash": dash}),
                row=1, col=col,
            )
        if "error_sd" in part:  # the spread of single replicas' errors: ±1 sd around the expected error
            low, high = list(part["error"] - part["error_sd"]), list(part["error"] + part["error_sd"])
            fig.add_trace(
                go.Scatter(x=x + x[::-1], y=high + low[::-1], mode="lines", fill="toself", fillcolor="rgba(17,17,17,0.12)", line={"width": 0},
                           name="one replica's error ± 1 sd", legendgroup="spread", showlegend=col == 1, hoverinfo="skip"),
                row=1, col=col,
            )
    log = numeric and min(values) > 0 and max(values) / min(values) >= 16
    axis = {"type": "log" if log else ("linear" if numeric else "category")}
    if numeric:
        axis.update(tickvals=values, ticktext=[str(v) for v in values])
    fig.update_xaxes(title_text=param, **axis)
    loss = "squared loss" if squared else "0-1 loss"
    fig.update_layout(title=f"Bias-variance decomposition against {param} ({loss})", template="plotly_white",
                      yaxis_title=f"{loss} on the {EVAL_SPLIT} split")
    return fig


def build_report(table, fig, param, *, config, replicas, resample, loss) -> Report:
    loss_text = (
        "0-1 loss, decomposed as in Domingos (ICML 2000): main prediction = mode of the replicas; "
        "expected error = noise + bias + net variance, where net variance = variance on unbiased points minus "
        "(weighted) variance on biased points."
        if loss == "zero_one"
        else "Squared loss on the raw regression outputs: main prediction = mean of the replicas; "
        "expected error = noise + bias² + variance."
    )
    report = Report(
        f"Bias-variance decomposition: {config['name']}, varying {param}",
        intro=(
            f"{replicas} replicas per level, trained on {resample} resamples of the training split with seeds "
            f"seed + b, evaluated on the fixed validation split. {loss_text} The Hodge numbers are a "
            f"deterministic function of the matrix, so the noise term is 0. The parts add up to the measured "
            f"error to within {decomposition.IDENTITY_TOL:g} (column residual)."
        ),
    )
    report.add("Error and its decomposition", figure=fig)
    report.add("Table", table=table)
    return report
