"""The README's figures: small PNGs under ``docs/figures/``, each drawn from what one named command produces.

    make figures                                   # = python -m cicy_search.experiments.figures
    python -m cicy_search.experiments.figures --only results,study

=================  ==========================================================================================
overfitting.png    ``cicy-search report recipe recipes/regularization.yaml``: the dense network plain, with
                   l1 = l2 = 0.001 and with dropout 0.2, train (solid) and validation (dashed) curves
weights.png        the same recipe's runs: per-layer weight histograms and |w| < 0.001 for none, L1, L2, both
biasvar.png        ``cicy-search report recipe recipes/biasvar.yaml``: error, bias², variance, replica spread
study.png          ``cicy-search study run studies/quickstart.yaml``: the study's optimisation history
results.png        ``cicy-search results recipes/results.yaml``: test h11 accuracy per row and train fraction
=================  ==========================================================================================

Every command logs to MLflow as it always does (``MLFLOW_TRACKING_URI`` or ``mlruns/``); a study or a table
already complete is not trained again (the quickstart study resumes to its budget; ``results`` is only read from
``bench/results/results_table.json``, which ``cicy-search results`` writes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from ..reporting import browser

OUT = Path("docs/figures")
NAMES = ("overfitting", "weights", "biasvar", "study", "results")
MAX_BYTES = 150_000
OVERFITTING_RUNS = ("dense", "dense_l1l2", "dense_dropout")
WEIGHT_RUNS = ("dense", "dense_l1", "dense_l2", "dense_l1l2")


class RenderError(RuntimeError):
    """A PNG that could not be drawn: no Chromium, or kaleido failed or hung twice."""


#: Seconds one PNG may take. Kaleido waits forever on a Chromium that died under it (plotly/Kaleido#134, #440:
#: seen here as a test run that stopped for good), so each PNG is drawn in a child process that is ended, with its
#: browser, when it runs past this, and drawn once more.
RENDER_SECONDS = 120.0
_RENDER = (
    "import sys, plotly.io as pio\n"
    "pio.write_image(pio.from_json(sys.stdin.read()), sys.argv[1], width=int(sys.argv[2]), height=int(sys.argv[3]), scale=1)"
)


def write_png(fig: go.Figure, path: Path, *, width: int = 900, height: int = 420) -> int:
    """The figure as a PNG of ``width`` x ``height`` CSS pixels (scale 1): returns its size in bytes.

    Drawn by kaleido in a child process: one that outlives ``RENDER_SECONDS`` is killed, its Chromium with it,
    and tried once more; a second failure is a ``RenderError`` naming the file.
    """
    exe = browser.find()
    if exe is None:
        raise RenderError("no headless Chromium found (apt-get install chromium): the PNGs cannot be written")
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = go.Figure(fig).update_layout(width=width, height=height).to_json()
    part = path.with_name(f".{path.stem}.{os.getpid()}.part.png")  # renamed once whole: no half-written PNG
    command = [sys.executable, "-c", _RENDER, str(part), str(width), str(height)]
    why = ""
    for _ in range(2):
        child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "BROWSER_PATH": exe},
        )
        try:
            _, err = child.communicate(spec, timeout=RENDER_SECONDS)
        except subprocess.TimeoutExpired:
            _kill_tree(child)
            child.wait()
            why = f"kaleido did not finish within {RENDER_SECONDS:g} s"
            continue
        if child.returncode == 0 and part.is_file():
            os.replace(part, path)
            return path.stat().st_size
        why = (err.strip().splitlines() or [f"kaleido exited with {child.returncode}"])[-1]
    part.unlink(missing_ok=True)
    raise RenderError(f"{path}: the PNG could not be drawn: {why}")


def _kill_tree(child: subprocess.Popen) -> None:
    """Kill a child and every process under it: kaleido starts Chromium in a session of its own."""
    import psutil

    try:
        tree = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=10)


def results_figure(records: list[dict]) -> go.Figure:
    """Test h11 accuracy (mean ± sd over split seeds) per results-table row, one bar colour per train fraction."""
    fractions = sorted({r["fraction"] for r in records if r.get("h11")}, reverse=True)
    rows = list(dict.fromkeys(r["row"] + (" (estimate)" if r.get("estimate") else "") for r in records if r.get("h11")))
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"]
    most = max((r.get("seeds") or 0 for r in records), default=0)  # cells still training show their n
    fig = go.Figure()
    for i, f in enumerate(fractions):
        part = [r for r in records if r["fraction"] == f and r.get("h11")]
        fig.add_trace(
            go.Bar(
                x=[r["row"] + (" (estimate)" if r.get("estimate") else "") for r in part],
                y=[100 * r["h11"][0] for r in part],
                error_y={"type": "data", "array": [100 * r["h11"][1] for r in part], "visible": True},
                customdata=[r.get("seeds") for r in part],
                text=[f"{100 * r['h11'][0]:.1f}" + (f" (n={r['seeds']})" if r.get("seeds") != most else "") for r in part],
                textposition="inside", insidetextanchor="start", textfont={"color": "white"},
                hovertemplate="%{x}<br>%{y:.2f} ± %{error_y.array:.2f}% (%{customdata} seeds)<extra></extra>",
                name=f"{round(100 * f)}% train", marker_color=colors[i % len(colors)],
            )
        )
    fig.update_layout(
        title="Test accuracy on h11 (mean ± sd over split seeds)", barmode="group", template="plotly_white",
        yaxis={"title": "test h11 accuracy (%)", "range": [0, 100]}, xaxis={"categoryorder": "array", "categoryarray": rows, "tickangle": -20},
        legend={"orientation": "h", "y": 1.0, "x": 1, "xanchor": "right", "yanchor": "bottom"},
        margin={"l": 60, "r": 20, "t": 70, "b": 110},
    )
    return fig


def curves_figure(histories: dict[str, dict[str, list[float]]]) -> go.Figure:
    """The overfitting picture: loss and accuracy of several runs, train solid, validation dashed."""
    from ..reporting.curves import learning_curves

    fig = learning_curves(histories, title="Overfitting: train (solid) and validation (dashed), dense network on h11")
    fig.update_layout(legend={"font": {"size": 10}}, margin={"l": 50, "r": 10, "t": 60, "b": 40})
    return fig


def _regularization(client, out: Path, wanted: set[str]) -> dict[str, int]:
    from .compare import history, run_recipe
    from ..reporting.weights import figure, kernels

    result = run_recipe("recipes/regularization.yaml", client, png=False)
    sizes = {}
    names = dict(zip(result.table["run"], result.table["run_id"]))
    if "overfitting" in wanted:
        labels = {"dense": "plain", "dense_l1l2": "l1 = l2 = 0.001", "dense_dropout": "dropout 0.2"}
        histories = {labels[n]: history(client, names[n]) for n in OVERFITTING_RUNS}
        sizes["overfitting"] = write_png(curves_figure(histories), out / "overfitting.png", width=1000, height=440)
    if "weights" in wanted:
        # The report's figure covers every run of the recipe; the README's shows none, L1, L2 and both.
        models = _models(client, {n: names[n] for n in WEIGHT_RUNS})
        labels = {"dense": "none", "dense_l1": "L1", "dense_l2": "L2", "dense_l1l2": "L1 + L2"}
        group = {labels[n]: kernels(m) for n, m in models.items()}
        fig = figure(group, title="Trained weights per layer: none, L1, L2, both (0.001 each); bottom: share with |w| < 0.001")
        sizes["weights"] = write_png(fig, out / "weights.png", width=1100, height=520)
    return sizes


def _models(client, run_ids: dict[str, str]) -> dict:
    """The models the recipe's runs logged, reloaded (``cicy_search.bundle``)."""
    import tempfile

    from .. import bundle

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run_id in run_ids.items():
            folder = client.download_artifacts(run_id, "model", str(Path(tmp) / name))
            out[name] = bundle.load(folder).model
    return out


def _biasvar(client, out: Path) -> dict[str, int]:
    from .tradeoff import run_recipe

    result = run_recipe("recipes/biasvar.yaml", client, png=False)
    return {"biasvar": write_png(biasvar_figure(result.table, result.param), out / "biasvar.png", width=900, height=460)}


def biasvar_figure(table, param: str) -> go.Figure:
    """The bias-variance report's figure on a log axis (bias falls by an order of magnitude while the variance
    grows), the minimum of the expected error marked."""
    from .biasvar import figure

    fig = figure(table, param)
    fig.update_yaxes(type="log", tickvals=[0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50], title_text="squared loss on the validation split")
    best = table.loc[table["error"].idxmin()]
    last = table.iloc[-1]
    fig.add_annotation(
        x=np.log10(best[param]), y=np.log10(best["error"]), ax=0, ay=-45, showarrow=True, arrowhead=2,
        text=f"minimum {best['error']:.2f} at {best[param]}; {last['error']:.2f} at {last[param]}",
    )
    fig.update_layout(
        title="Bias-variance trade-off: error = bias² + variance against training epochs",
        legend={"orientation": "h", "y": -0.2, "x": 0}, margin={"l": 60, "r": 20, "t": 60, "b": 90},
    )
    return fig


def _study(out: Path, tracking_uri: str | None) -> dict[str, int]:
    from optuna.visualization import plot_optimization_history

    from ..search import study as studies
    from ..search.studyfile import load

    summary = studies.run(load("studies/quickstart.yaml"), tracking_uri=tracking_uri, report=False)
    fig = plot_optimization_history(summary.study, target_name="validation accuracy")
    fig.update_layout(title="Optimisation history of the quickstart study (TPE, median pruning)", template="plotly_white",
                      legend={"orientation": "h", "y": 1.0, "x": 1, "xanchor": "right", "yanchor": "bottom"})
    return {"study": write_png(fig, out / "study.png", width=900, height=400)}


def _results(out: Path, table: Path, client) -> dict[str, int]:
    """From the table ``cicy-search results`` last wrote; without one, summarised from MLflow (nothing trained)."""
    if table.is_file():
        records = json.loads(table.read_text())
    else:
        from .results import load_table, summarise

        records = summarise(load_table("recipes/results.yaml"), client)
    return {"results": write_png(results_figure(records), out / "results.png", width=1000, height=460)}


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(prog="python -m cicy_search.experiments.figures", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(NAMES), help=f"comma-separated subset of {','.join(NAMES)}")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--results", type=Path, default=Path("bench/results/results_table.json"))
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = wanted - set(NAMES)
    if unknown:
        parser.error(f"unknown figure {sorted(unknown)[0]!r} (choose from {', '.join(NAMES)})")
    if browser.find() is None:  # checked before anything trains or is read: every figure ends as a PNG
        parser.exit(2, "error: no headless Chromium found (apt-get install chromium, or set BROWSER_PATH): the PNGs cannot be written\n")
    from .. import tracking

    try:
        return _draw(wanted, args, tracking.client(args.tracking_uri))
    except RenderError as e:  # a PNG that could not be drawn: the ones before it are written
        parser.exit(2, f"error: {e}\n")


def _draw(wanted: set[str], args: argparse.Namespace, client) -> dict[str, int]:
    sizes: dict[str, int] = {}
    if "results" in wanted:
        sizes.update(_results(args.out, args.results, client))
    if wanted & {"overfitting", "weights"}:
        sizes.update(_regularization(client, args.out, wanted))
    if "biasvar" in wanted:
        sizes.update(_biasvar(client, args.out))
    if "study" in wanted:
        sizes.update(_study(args.out, args.tracking_uri))
    for name, size in sizes.items():
        flag = "" if size <= MAX_BYTES else f"  (over {MAX_BYTES // 1000} kB)"
        print(f"{args.out / (name + '.png')}: {size / 1000:.0f} kB{flag}")
    return sizes


if __name__ == "__main__":
    main()
