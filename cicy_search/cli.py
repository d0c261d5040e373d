"""The ``cicy-search`` command: parse, call one library function, print.

Errors a user can cause are ``CicyError``: one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .tracking import links
from . import signals
from .errors import CicyError, one_line, out_of_space

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(help="Hyperparameter search and experiment tracking for CICY Hodge numbers.", no_args_is_help=True)
data_app = typer.Typer(help="The embedded CICY 3-fold lists and the imported 4-fold list.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True)


@data_app.command("info")
def data_info(
    dataset: str = typer.Option("original", help="original, favourable, an imported 4-fold list (.npz) or a data file (.csv, .json, .npz)"),
    keep_products: bool = typer.Option(False, help="keep the product manifolds (h11 = 0)"),
):
    """Counts, Hodge number (target) ranges and matrix sizes of an embedded list or a data file."""
    from . import data

    kind = data.source(dataset).kind
    s = data.summary(data.load(dataset, keep_products=keep_products))
    title = {"cicy4": f"CICY 4-folds: {dataset}", "shipped": f"CICY 3-folds: {dataset} list"}.get(kind, f"data file: {dataset}")
    table = Table(title=title, show_header=False)
    for k, v in s.items():
        table.add_row(k, " .. ".join(map(str, v)) if isinstance(v, tuple) and k != "padding" else str(v))
    console.print(table)


@data_app.command("import-cicy4")
def data_import_cicy4(
    file: Path = typer.Argument(..., help="the published list, cicy4list.txt (see README: CICY 4-folds)"),
    out: Optional[Path] = typer.Option(None, help="the .npz to write (default: FILE with the suffix .npz)"),
):
    """Validate the CICY 4-fold list once and write the columnar .npz that data.dataset can point at."""
    from . import cicy4

    r = cicy4.import_list(file, out, progress=sys.stderr.isatty())  # bars only on a terminal
    table = Table(title=f"CICY 4-folds: {r.out}", show_header=False)
    for k, v in cicy4.summary(cicy4.read(r.out), name=str(r.out)).items():
        table.add_row(k, " .. ".join(map(str, v)) if isinstance(v, tuple) and k != "padding" else str(v))
    console.print(table)
    console.print(f"{r.records:,} records ({r.products:,} products, kept apart) in {r.seconds['total']:.1f} s "
                  f"(parse {r.seconds['parse']:.1f}, Euler numbers {r.seconds['euler']:.1f}, write {r.seconds['write']:.1f})", highlight=False, soft_wrap=True)


@app.command()
def train(
    config: Optional[str] = typer.Argument(None, help="run config YAML, or a shipped example: " "dense, dense_l1l2, dense_dropout, cnn, inception, svm"),
    epochs: Optional[int] = typer.Option(None, help="override train.epochs"),
    seed: Optional[int] = typer.Option(None, help="override the training seed"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or mlruns/)"),
    experiment: str = typer.Option("cicy-search-train", help="MLflow experiment"),
):
    """Train one model (default: the seed talk's dense network on h11) and log it as one MLflow run."""
    from .config import load_config

    cfg = load_config(config, {**({"train": {"epochs": epochs}} if epochs is not None else {}), **({"seed": seed} if seed is not None else {})})
    from rich.markup import escape

    from . import tracking
    from .data import select

    tracking.check_experiment_name(experiment)
    select(cfg["data"])  # a split left empty is an error before the tracking store is opened (and created)
    from .training import check_model

    check_model(cfg)  # so is a plugin model that cannot be built or has the wrong outputs
    client = tracking.client(tracking_uri)
    from .tracking.runner import run_tracked

    console.print(f"training [bold]{escape(cfg['name'])}[/] ({cfg['model']['family']}) -> {client.tracking_uri}")
    tracked = run_tracked(cfg, mlflow_client=client, experiment=experiment, progress=console.is_terminal)
    m = tracked.result.metrics
    console.print(
        f"run {tracked.run_id}: train {m['train_accuracy']:.4f}  val {m['val_accuracy']:.4f}  "
        f"test {m.get('test_accuracy', float('nan')):.4f}  ({tracked.result.n_params:,} params, {tracked.result.seconds:.1f} s)"
    )


study_app = typer.Typer(help="Optuna studies defined by study files (studies/*.yaml).", no_args_is_help=True)
app.add_typer(study_app, name="study")

STORAGE_HELP = "Optuna storage URL (default: SQLite in mlruns/); journal:PATH for a journal file"
SYSTEM_METRICS_HELP = "log CPU, memory, disk, network and GPU use of every trial (MLflow system metrics; needs psutil, nvidia-ml-py for GPUs)"


def _study_name(study: str) -> str:
    """A study name, or the name inside a study file."""
    if study.endswith((".yaml", ".yml")):
        from .search.studyfile import load

        return load(study).name
    return study


@study_app.command("create")
def study_create(
    study_file: str = typer.Argument(..., help="study file (studies/NAME.yaml)"),
    storage: Optional[str] = typer.Option(None, envvar="CICY_STORAGE", help=STORAGE_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI for the study's runs (default: $MLFLOW_TRACKING_URI or mlruns/)"),
    n_trials: Optional[int] = typer.Option(None, help="total finished trials, shared by all workers (default: the file's budget)"),
    move_tracking: bool = typer.Option(
        False, "--move-tracking", help="an existing study whose runs are in another store records --tracking-uri as its store from now on (a new parent run there; earlier runs stay where they are)"
    ),
):
    """Create a study for workers to join (idempotent; again with --n-trials changes its budget)."""
    from .search import study as studies
    from .search.budget import count_finished
    from .search.storage import default_url, redact
    from .search.studyfile import load

    s = studies.create(load(study_file), storage=storage, tracking_uri=tracking_uri, n_trials=n_trials, move_tracking=move_tracking)
    a = s.user_attrs
    console.print(
        f"study {s.study_name} in {redact(storage or default_url())}: budget {a['budget']}, {count_finished(s)} finished; "
        f"MLflow {redact(a['tracking_uri'])} parent run {a['mlflow_parent_run_id']}",
        highlight=False,
    )


@study_app.command("run")
def study_run(
    study_file: str = typer.Argument(..., help="study file (studies/NAME.yaml)"),
    n_trials: Optional[int] = typer.Option(None, help="total finished trials wanted (default: the file's budget)"),
    timeout: Optional[float] = typer.Option(None, help="stop starting trials after this many seconds"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or mlruns/)"),
    system_metrics: bool = typer.Option(False, "--system-metrics", help=SYSTEM_METRICS_HELP),
):
    """Create or resume a study and run it to its budget; every trial is one MLflow run."""
    from .search import study as studies
    from .search.studyfile import load

    from rich.markup import escape

    from .search.studyfile import check_budget

    spec = load(study_file)
    check_budget(n_trials, timeout)
    console.print(f"study [bold]{escape(spec.name)}[/]: {spec.family}, {len(spec.params)} searched settings, budget {n_trials or spec.n_trials}")
    summary = studies.run(
        spec, storage=storage, tracking_uri=tracking_uri, n_trials=n_trials, timeout=timeout, console=console,
        system_metrics=system_metrics,
    )
    console.print(f"{summary.new_trials} new trials in {summary.seconds:.0f} s; {summary.finished}/{summary.budget} finished")
    _print_best(summary.study)
    _print_links(summary.study, tracking_uri)


def _print_links(study, tracking_uri: str | None = None) -> None:
    """The study's runs table, parent run and best run(s) in the MLflow UI; a note when MLflow cannot be asked."""
    from .tracking.summary import ui_links

    try:
        found = ui_links(study, links.client(study, tracking_uri))
    except Exception as e:  # the trials are in Optuna; MLflow being away must not hide them
        console.print(f"MLflow UI: not available ({one_line(e)})", markup=False, highlight=False, soft_wrap=True)
        return
    if found.serve:
        console.print(f"MLflow UI (start it with: {found.serve}):", markup=False, highlight=False, soft_wrap=True)
    console.print(f"study runs: {found.experiment}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"study run:  {found.parent}", markup=False, highlight=False, soft_wrap=True)
    for number, url in found.runs.items():
        console.print(f"trial {number}:   {url}", markup=False, highlight=False, soft_wrap=True)


def _print_best(study) -> None:
    from .search import study as studies

    try:
        best = studies.best_trials(study)
    except CicyError:
        console.print("no complete trial yet")
        return
    names = study.user_attrs.get("objectives", ["value"])
    for t in best:
        values = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, t.values))
        console.print(f"best trial {t.number}: {values}  run {t.user_attrs.get('mlflow_run_id')}")
        console.print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()))


@study_app.command("tune")
def study_tune(
    study_file: str = typer.Argument(..., help="study file (studies/NAME.yaml)"),
    max_trials: Optional[int] = typer.Option(None, help="keras-tuner trials in all, earlier ones of a resumed search included (default: the file's budget)"),
    algorithm: str = typer.Option("random", help="random, bayesian or hyperband"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or mlruns/)"),
    directory: Optional[Path] = typer.Option(None, help="keras-tuner's folder; the search is kept (and resumed) in DIRECTORY/STUDY-ALGORITHM (default: the local home's keras-tuner/)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="start the search afresh instead of resuming it"),
):
    """Search the same space with keras-tuner; trials train like Optuna's and are logged live (MLflow experiment STUDY-keras-tuner)."""
    from .search.studyfile import check_budget, load

    spec = load(study_file)
    check_budget(max_trials, n_trials_name="--max-trials")
    from .search.tuner import check, tune  # imports TensorFlow

    check(spec, algorithm)
    summary = tune(spec, max_trials=max_trials, algorithm=algorithm, tracking_uri=tracking_uri, directory=directory, overwrite=overwrite, console=console)
    console.print(
        f"keras-tuner ({algorithm}): {summary.new_trials} new trials, {summary.n_trials} in all, best {summary.metric} "
        f"{summary.best_value:.4f}, run {summary.parent_run_id}", highlight=False,
    )


@study_app.command("compare-engines")
def study_compare_engines(
    study_file: str = typer.Argument(..., help="study file (studies/NAME.yaml)"),
    epochs_budget: int = typer.Option(..., help="training epochs each engine may spend per seed (pruned and continued trials count what they trained)"),
    seeds: int = typer.Option(3, help="repetitions of each engine, seeds STUDY_SEED .. STUDY_SEED + K - 1"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or mlruns/)"),
    out: Optional[Path] = typer.Option(None, help="HTML report (default: reports/compare-engines-STUDY.html)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the numbers to this JSON file"),
    png: bool = typer.Option(True, help="also export every figure as PNG (needs kaleido and a headless Chromium)"),
):
    """Optuna (TPE + the study's pruner) against keras-tuner (Hyperband, Bayesian) on equal budgets of training epochs."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # each winner's model is fetched to score it
    from .search.studyfile import load

    spec = load(study_file)
    from .experiments import engines  # imports TensorFlow

    engines.check(spec, epochs_budget, seeds)
    from . import tracking

    result = engines.compare(spec, tracking.client(tracking_uri), epochs_budget=epochs_budget, seeds=seeds, out=out, json_out=json_out, png=png, console=console)
    console.print(result.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"), soft_wrap=True)
    console.print(f"MLflow run {result.run_id}")
    if json_out is not None:
        console.print(f"numbers written to {json_out}")
    _report_written(result.html, result.png_note)


@study_app.command("status")
def study_status(
    study: str = typer.Argument(..., help="study name or study file"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI for the UI addresses (default: the study's own)"),
):
    """A table of the study's trials: number, state, value, params, duration, MLflow run id."""
    from .search import study as studies

    s = studies.load(_study_name(study), storage=storage)
    table = Table(title=f"study {s.study_name}")
    for col in ("#", "state", "value", "params", "seconds", "mlflow run"):
        table.add_column(col)
    for row in studies.trials_table(s):
        value = " ".join(f"{v:.4g}" for v in row["values"]) if row["values"] else (row["fail_reason"] or "")
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["params"].items())
        seconds = f"{row['seconds']:.1f}" if row["seconds"] is not None else ""
        table.add_row(str(row["number"]), row["state"], value, params, seconds, row["mlflow_run_id"] or "")
    console.print(table)
    _print_incomplete(s, tracking_uri)
    _print_spooled(s, storage)
    _print_links(s, tracking_uri)


def _print_incomplete(study, tracking_uri: str | None = None) -> None:
    """The finished trials whose MLflow run is incomplete (``links.incomplete``), one line each."""
    try:
        found = links.incomplete(study, links.client(study, tracking_uri))
    except Exception:  # the trials are in Optuna; MLflow being away is said by _print_links
        return
    if found:
        console.print(
            f"{len(found)} finished trials with an incomplete MLflow run (the next study run or worker closes runs left "
            f"RUNNING for {links.REPAIR_AFTER_SECONDS:.0f} s from Optuna's record):", markup=False, highlight=False, soft_wrap=True,
        )
    for number, what in found.items():
        console.print(f"  trial {number}: {what}", markup=False, highlight=False, soft_wrap=True)


def _print_spooled(study, storage: str | None) -> None:
    """The trials whose MLflow writes wait in the study's spool (``tracking.spool``), one line each."""
    from .search import study as studies
    from .tracking import spool

    folder = studies.spool_folder(storage, study.study_name)
    for line in spool.describe(spool.Spool(folder, "").pending(), folder):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@study_app.command("best")
def study_best(
    study: str = typer.Argument(..., help="study name or study file"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI for the UI addresses (default: the study's own)"),
):
    """The best trial (or the Pareto front) with its params and MLflow run."""
    from .search import study as studies

    s = studies.load(_study_name(study), storage=storage)
    studies.best_trials(s)  # raises a clear error when there is none
    _print_best(s)
    _print_links(s, tracking_uri)


@app.command()
def worker(
    study_file: str = typer.Argument(..., help="the study file the study was created from"),
    storage: Optional[str] = typer.Option(None, envvar="CICY_STORAGE", help=STORAGE_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the study's)"),
    gpu: Optional[str] = typer.Option(None, envvar="CICY_GPU", help="the one GPU this worker sees (CUDA index); workers may share one"),
    gpu_memory: Optional[int] = typer.Option(None, envvar="CICY_GPU_MEMORY", help="cap this worker's GPU memory (MB) to pack several on one GPU; default: grow"),
    threads: Optional[int] = typer.Option(None, envvar="CICY_THREADS", help="CPU threads for TensorFlow (default: all cores)"),
    n_trials: Optional[int] = typer.Option(None, help="run at most this many trials here; the study's budget caps the total"),
    timeout: Optional[float] = typer.Option(None, help="start no trial after this many seconds"),
    heartbeat: Optional[int] = typer.Option(None, envvar="CICY_HEARTBEAT_INTERVAL", help="seconds between a trial's heartbeats (default 30)"),
    grace_period: Optional[int] = typer.Option(None, envvar="CICY_GRACE_PERIOD", help="seconds without one before a trial is lost and retried (default 90)"),
    system_metrics: bool = typer.Option(False, "--system-metrics", help=SYSTEM_METRICS_HELP),
):
    """Join a study made by `study create` and run its trials until the study's budget is met."""
    from .search import worker as workers
    from .search.storage import default_url, redact
    from .search.studyfile import load

    from rich.markup import escape

    from .search.studyfile import check_budget

    spec = load(study_file)
    check_budget(n_trials, timeout)
    console.print(f"worker {workers.worker_id()}: study [bold]{escape(spec.name)}[/] in {redact(storage or default_url())}", highlight=False)
    summary = workers.join(
        spec, storage=storage, tracking_uri=tracking_uri, n_trials=n_trials, timeout=timeout, gpu=gpu, threads=threads,
        gpu_memory_mb=gpu_memory, heartbeat_interval=heartbeat, grace_period=grace_period, system_metrics=system_metrics,
        console=console,
    )
    console.print(f"{summary.ran} trials here; the study has {summary.finished}/{summary.budget} finished", highlight=False)


report_app = typer.Typer(help="Reports from tracked runs and studies: one offline HTML page each, also logged to MLflow.", no_args_is_help=True)
app.add_typer(report_app, name="report")
TRACKING_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or mlruns/)"
PNG_HELP = "also export every figure as PNG (needs kaleido and a headless Chromium)"


def _report_written(path, png_note) -> None:
    console.print(f"report written to {path}")
    if png_note:
        console.print(png_note)


@app.command()
def biasvar(
    config: str = typer.Argument(..., help="run config YAML, or a shipped example (dense, cnn, ...)"),
    vary: str = typer.Option(..., help="the complexity setting and its levels: PARAM=v1,v2,... (e.g. model.width=8,32,128)"),
    replicas: int = typer.Option(5, help="models per level, each on its own resample of the training split"),
    resample: str = typer.Option("bootstrap", help="bootstrap or disjoint (subsets of the training split)"),
    seed: Optional[int] = typer.Option(None, help="first replica seed (default: the config's seed)"),
    out: Optional[Path] = typer.Option(None, help="HTML report (default: reports/biasvar-PARAM.html)"),
    png: bool = typer.Option(True, help=PNG_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_HELP),
    experiment: str = typer.Option("cicy-search-biasvar", help="MLflow experiment"),
):
    """Bias-variance decomposition of the validation error as one setting (width, depth, epochs, ...) grows."""
    from . import tracking
    from .config import load_config
    from .experiments import biasvar as bv

    cfg = load_config(config)
    param, values = bv.parse_vary(vary)
    result = bv.run(
        cfg, param, values, mlflow_client=tracking.client(tracking_uri), replicas=replicas, resample=resample,
        seed=seed, experiment=experiment, out=out, png=png, progress=console.is_terminal,
    )
    console.print(result.table[[param, "target", "error", "noise", "bias", "variance", "net_variance"]].to_string(index=False, float_format=lambda v: f"{v:.4g}"), soft_wrap=True)
    console.print(f"MLflow run {result.run_id} (experiment {experiment})")
    _report_written(result.html, result.png_note)


@report_app.command("compare")
def report_compare(
    refs: list[str] = typer.Argument(..., help="run ids, parent run ids, experiment names, run names or study names"),
    out: Optional[Path] = typer.Option(None, help="HTML report (default: reports/compare.html)"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL for study names"),
    png: bool = typer.Option(True, help=PNG_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_HELP),
):
    """Train vs validation loss and accuracy of runs side by side, with the train-validation gap table."""
    from . import tracking
    from .experiments.compare import report_compare as build

    result = build(tracking.client(tracking_uri), refs, out=out, storage=storage, png=png)
    console.print(result.table.drop(columns=["run_id"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"), soft_wrap=True)
    _report_written(result.html, result.png_note)


@report_app.command("recipe")
def report_recipe(
    recipe: Path = typer.Argument(..., help="recipe file (recipes/overfitting.yaml, recipes/regularization.yaml, recipes/biasvar.yaml)"),
    epochs: Optional[int] = typer.Option(None, help="override train.epochs of every run"),
    limit: Optional[int] = typer.Option(None, help="train on a slice of this many matrices (a quick look)"),
    replicas: Optional[int] = typer.Option(None, help="bias-variance recipes: override the replicas per level"),
    out: Optional[Path] = typer.Option(None, help="HTML report (default: reports/RECIPE.html)"),
    png: bool = typer.Option(True, help=PNG_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_HELP),
):
    """Train every run of a recipe under one parent run, then write their comparison report (or, for a
    recipe with `vary`, the bias-variance decomposition)."""
    from . import tracking
    from .experiments import tradeoff
    from .experiments.compare import run_recipe

    if tradeoff.is_recipe(recipe):
        bv = tradeoff.run_recipe(recipe, tracking.client(tracking_uri), epochs=epochs, limit=limit, replicas=replicas, out=out, png=png, progress=console.is_terminal)
        columns = [bv.param, "target", "error", "error_sd", "bias", "variance", "net_variance"]
        console.print(bv.table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"), soft_wrap=True)
        console.print(f"MLflow parent run {bv.run_id}")
        _report_written(bv.html, bv.png_note)
        return
    if replicas is not None:
        raise CicyError("--replicas: only for bias-variance recipes (with vary)")
    result = run_recipe(recipe, tracking.client(tracking_uri), epochs=epochs, limit=limit, out=out, png=png, progress=console.is_terminal)
    console.print(result.table.drop(columns=["run_id"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"), soft_wrap=True)
    console.print(f"MLflow parent run {result.run_id}")
    _report_written(result.html, result.png_note)


@report_app.command("study")
def report_study(
    study: str = typer.Argument(..., help="study name"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: SQLite in mlruns/)"),
    out: Optional[Path] = typer.Option(None, help="HTML report (default: reports/study-NAME.html)"),
    top: int = typer.Option(10, help="rows in the top-trials table"),
    png: bool = typer.Option(True, help=PNG_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: the study's own)"),
):
    """Optimization history, importances, parallel/slice/contour plots, Pareto front and top trials of a study."""
    from .reporting.study import report_study as build
    from .search.study import load

    s = load(study, storage=storage)
    client = links.client(s, tracking_uri)
    result = build(s, mlflow_client=client, out=out, top=top, png=png)
    for title, reason in result.skipped.items():
        console.print(f"{title}: not drawn ({reason})")
    _report_written(result.html, result.png_note)


@app.command("results")
def results_table(
    table: Path = typer.Argument(..., help="a results table file, e.g. recipes/results.yaml"),
    rows: Optional[str] = typer.Option(None, help="only these rows (comma-separated names)"),
    train_missing: bool = typer.Option(True, "--train/--no-train", help="train the missing cells (else only summarise)"),
    out: Path = typer.Option(Path("bench/results/results_table"), help="where the table goes (.json and .md)"),
    tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_HELP),
):
    """Train every cell of a results table (rows x train fractions x seeds; resumes), then write the table."""
    from . import tracking
    from .experiments.results import load_table, run_table, summarise, write

    spec = load_table(table)
    client = tracking.client(tracking_uri)
    if train_missing:
        run_table(spec, client, rows=[r.strip() for r in rows.split(",")] if rows else None, progress=console.print)
    records = summarise(spec, client)
    json_path, md_path = write(records, out)
    console.print(md_path.read_text(), soft_wrap=True)
    console.print(f"wrote {json_path} and {md_path}")


@app.command("export")
def export_model(
    study: str = typer.Argument(..., help="study name or study file"),
    out: Path = typer.Option(..., help="folder to write: bundle, metrics.json, source.json, mlflow_model/ (must be new or empty)"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    trial: Optional[int] = typer.Option(None, help="a trial of the Pareto front (default: the best trial)"),
    retrain: bool = typer.Option(False, help="retrain from the trial's config and seed instead of fetching its logged model"),
    register: Optional[str] = typer.Option(None, help="registered model name: create a new version of it"),
    alias: str = typer.Option("champion", help="registry alias pointed at the new version"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: the study's own)"),
):
    """Export a study's best model, evaluated on its test split, as a bundle and an MLflow pyfunc; optionally register it."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from .serving.export import export

    r = export(_study_name(study), out, storage=storage, trial=trial, retrain=retrain, register=register, alias=alias, tracking_uri=tracking_uri)
    console.print(f"trial {r.trial}, run {r.run_id}{' (retrained)' if r.retrained else ''} -> {r.out}", highlight=False, soft_wrap=True)
    scores = "  ".join(f"{k}={v:.4f}" for k, v in r.metrics.items() if k.startswith("test_") and k.endswith("accuracy"))
    console.print(f"test split: {scores}", highlight=False, soft_wrap=True)
    for note in r.notes:
        err.print(f"warning: {note}", markup=False, highlight=False, soft_wrap=True)
    if r.registered:
        console.print(f"registered {r.registered['name']} version {r.registered['version']} as {r.registered['uri']}", highlight=False)


@app.command("predict")
def predict_matrices(
    model: str = typer.Argument(..., help="an export folder, an MLflow model folder, or models:/NAME@ALIAS"),
    input: str = typer.Argument(..., help="JSON or CSV file of configuration matrices, or - for standard input"),
    out: Optional[Path] = typer.Option(None, help="write the predictions to this .csv or .json file instead of printing them"),
    format: Optional[str] = typer.Option(None, "--format", help="csv or json (default: csv, or the extension of --out)"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI for models:/ (default: $MLFLOW_TRACKING_URI or mlruns/)"),
):
    """Predict Hodge numbers; each invalid matrix gets one error line (exit code 1) and the valid ones are still predicted."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from .serving.predict import output_format, predict_file, write

    fmt = output_format(out, format)  # before any work: predictions are never lost to a bad --out
    predictions = predict_file(model, input, tracking_uri=tracking_uri)
    text = write(predictions, out, fmt=fmt)
    if out is None:
        sys.stdout.write(text)
    else:
        console.print(f"{len(predictions.records)} predictions written to {out}", highlight=False)
    for line in predictions.errors:
        err.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
    if predictions.errors:
        raise typer.Exit(1)


SCHEMA_HELP = """Print the JSON Schema of a run config or a study file, for editors that check YAML as you type.

The same two schemas are shipped in schemas/. With the YAML language server (VS Code's YAML extension and others), a first line naming one makes the editor complete and check every key; in studies/*.yaml:

\b
  # yaml-language-server: $schema=../schemas/study.schema.json

and in a run config, config.schema.json. A URL works too, or a file written with --out.
"""


@app.command("schema", help=SCHEMA_HELP)
def schema_command(
    kind: str = typer.Argument(..., help="config (a run config) or study (a study file)"),
    out: Optional[Path] = typer.Option(None, help="write the schema to this file instead of printing it"),
    plugin: list[str] = typer.Option([], help="also describe this plugin family's declared params (package.module:function); repeatable"),
):
    import json

    from .config import json_schema as config_schema
    from .search.studyfile import json_schema as study_schema

    kinds = {"config": config_schema, "study": study_schema}
    if kind not in kinds:
        raise CicyError(f"unknown schema {kind[:60]!r}: choose one of {', '.join(kinds)}")
    text = json.dumps(kinds[kind](tuple(plugin)), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        try:
            out.write_text(text)
        except OSError as e:
            raise CicyError(f"{out}: cannot be written: {e.strerror or e}") from None
        console.print(f"wrote {out}", highlight=False)


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, a Kubernetes eviction, Slurm preemption, ``timeout``), raised like Ctrl-C:
    Optuna fails the running trial and the runner closes its MLflow run as FAILED with this reason."""


_terminated: list[int] = []


def _on_sigterm(signum, frame) -> None:
    if not _terminated:  # once: a second signal must not break the cleanup the first one started
        _terminated.append(signum)
        from .tracking import interrupted

        interrupted()  # MLflow requests fail fast from now on: a tracking server that went away cannot hold the exit
        raise signals.pending(Terminated("terminated by SIGTERM"))  # raised again at the next epoch if swallowed


def _on_sigint(signum, frame) -> None:
    from .tracking import interrupted

    interrupted()
    raise signals.pending(KeyboardInterrupt())  # as Python's own handler does; raised again if swallowed


#: Seconds after the queued MLflow writes' last chance (``tracking.INTERRUPTED_FLUSH_SECONDS``) at which a
#: signalled command ends even if a thread would hold its exit (``_exit_anyway``).
EXIT_GRACE_SECONDS = 10.0


def _exit_anyway(code: int) -> None:
    """Ends the process with ``code`` a few seconds after the queued MLflow writes' last chance, even if a thread
    that nobody stops would hold the exit. Optuna's heartbeat thread is not a daemon, and a signal raised while
    Optuna starts or stops it (inside its ``with``'s enter or exit) leaves it beating forever: the process then
    printed its line and never ended, until ``docker stop`` killed it. A daemon timer, so a clean exit needs no wait."""
    import threading
    import time
    from os import _exit  # the standard library's exit without cleanup: the one that does not wait for threads

    from .tracking import INTERRUPTED_FLUSH_SECONDS

    def force() -> None:
        time.sleep(INTERRUPTED_FLUSH_SECONDS + EXIT_GRACE_SECONDS)
        sys.stdout.flush()
        sys.stderr.flush()
        _exit(code)

    threading.Thread(target=force, name="exit-anyway", daemon=True).start()


class _NoTrialTracebacks:
    """Optuna logs each failed trial with its traceback. The CLI prints its own line per trial with the
    reason (``fail_reason``), and an interrupted trial is no failure to debug: ``CICY_DEBUG=1`` keeps them."""

    def filter(self, record) -> bool:
        message = record.getMessage()
        return not (record.exc_info or (message.startswith("Trial ") and " failed" in message))


class _QuietLoader:
    """Wraps TensorFlow's loader: its C++ start-up lines (oneDNN, absl) go to file descriptor 2 before any
    setting can silence them, so that descriptor points at /dev/null while the package is imported."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        try:
            self.loader.exec_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietTensorFlowImport:
    """A ``sys.meta_path`` finder that hands the first ``import tensorflow`` a ``_QuietLoader``."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def _usage_error(e) -> str:
    """A click/typer usage error as one line: the problem and where to get help."""
    message = " ".join(str(e.format_message()).split())
    ctx = getattr(e, "ctx", None)
    if ctx is not None:
        message += f" (see {ctx.command_path} --help)"
    return message


def _thread_out_of_space(default):
    """A ``threading.excepthook`` that says in one ``warning:`` line that a background thread (Optuna's heartbeat)
    could not write to a full store, where ``default`` would print its traceback; the main thread stops the study."""

    def hook(args) -> None:
        full = out_of_space(args.exc_value)
        if full is None or os.environ.get("CICY_DEBUG"):
            return default(args)
        name = args.thread.name if args.thread is not None else "a background thread"
        err.print(f"warning: {name}: a store could not be written: {full}", markup=False, highlight=False, soft_wrap=True)

    return hook


def main(args: list[str] | None = None) -> None:
    """Entry point; ``args`` defaults to ``sys.argv[1:]``. Always ends with ``sys.exit``.

    Exit codes: 0 done; 1 some ``predict`` entries were invalid; 2 a mistake (one ``error:`` line, nothing
    created); 130 Ctrl-C; 143 SIGTERM (both fail the running trial in Optuna and MLflow).
    """
    import logging
    import signal

    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    if not os.environ.get("CICY_DEBUG"):  # MLflow says INFO when it creates a store's tables: not the user's business
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        # It logs a traceback for every write a store refuses; those failures reach the user as one line each.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    _terminated.clear()
    signals.clear()
    previous = {}
    try:
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm), signal.SIGINT: signal.signal(signal.SIGINT, _on_sigint)}
    except ValueError:  # not the main thread (an embedding application): leave its handlers alone
        pass
    import threading

    thread_hook = threading.excepthook
    threading.excepthook = _thread_out_of_space(thread_hook)
    try:
        _run(args)
    finally:
        threading.excepthook = thread_hook
        for signum, handler in previous.items():  # the caller's handlers again (main is also called in-process, by tests)
            signal.signal(signum, handler)
        from .tracking import interrupted

        interrupted(False)  # MLflow requests get their retries back
        signals.clear()


def _signalled_exit(args: list[str] | None) -> None:
    """Ctrl-C's or SIGTERM's line on stderr, then its exit code (130 or 143)."""
    import signal

    code = 128 + signal.SIGTERM if _terminated else 130
    if args is None:  # the process's own command line: the process ends here, whatever threads are left
        _exit_anyway(code)
    if _terminated:
        err.print("terminated (SIGTERM): a running trial is marked failed in Optuna and MLflow; run the same command to resume", highlight=False, soft_wrap=True)
    else:
        err.print("interrupted: a running trial is marked failed in Optuna and MLflow; run the same command to resume", highlight=False, soft_wrap=True)
    sys.exit(code)


def _run(args: list[str] | None) -> None:
    """``main`` inside its signal handler: run the app and turn every way it ends into an exit code."""
    import logging
    import warnings

    from rich.markup import escape

    from .compat import OPTUNA_TRIAL_LOGGER, click_exceptions

    try:
        import optuna

        # Optuna flags group mode as experimental (users chose it) and logs each trial (the CLI prints its own line).
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        trial_log = logging.getLogger(OPTUNA_TRIAL_LOGGER)
        if not os.environ.get("CICY_DEBUG") and not any(isinstance(f, _NoTrialTracebacks) for f in trial_log.filters):
            trial_log.addFilter(_NoTrialTracebacks())
        code = app(args=args, standalone_mode=False, prog_name="cicy-search")
        if code == 130:  # typer turns Ctrl-C (and SIGTERM, a KeyboardInterrupt here) into this return value
            raise KeyboardInterrupt
        sys.exit(code if isinstance(code, int) else 0)
    except CicyError as e:
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _signalled_exit(args)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:
        if signals.is_pending():
            # Raised by cleanup code that the signal's exception interrupted: Optuna's ``_run_trial`` reads a
            # variable in its ``finally`` that a signal inside ``study.tell`` left unset (UnboundLocalError).
            # The signal is why the command ends: its line and exit code, not that traceback.
            _signalled_exit(args)
        # Usage errors: typer 0.29 raises its bundled click's exceptions, which click's own classes miss.
        import click

        typer_click = click_exceptions()
        if isinstance(e, typer_click.NoArgsIsHelpError):
            e.show()  # the help text, asked for by giving no command
            sys.exit(2)
        if isinstance(e, (typer_click.ClickException, click.exceptions.ClickException)):
            err.print(f"[red]error:[/] {escape(_usage_error(e))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        if isinstance(e, (typer.Abort, click.exceptions.Abort)):
            sys.exit(130)
        full = out_of_space(e)
        if full and not os.environ.get("CICY_DEBUG"):  # Optuna or MLflow could not write to its store: the user's disk, not a bug
            err.print(
                f"[red]error:[/] a store could not be written: {escape(full)}; a full disk or a file-size limit? "
                "free space, then run the same command to resume",
                highlight=False, soft_wrap=True,
            )
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
