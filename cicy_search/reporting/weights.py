"""What L1 and L2 do to a trained network's weights: per-layer histograms and the fraction of weights near zero.

With a penalty ``λ2 |w|²`` (L2, weight decay) the least-squares weight along a principal direction of the
data with singular value d becomes ``d² / (d² + λ)`` times itself: every weight shrinks, none vanishes.
With ``λ1 |w|`` (L1) the solution is soft-thresholded: weights whose unpenalised value lies within the
threshold become exactly zero, the others move towards zero by it (``shrinkage_figure`` draws both for
one weight). A stochastic optimiser such as Adam does not land L1 weights on exactly zero but keeps them
within about a learning rate of it, so the measure here is the fraction of weights below a small threshold
(``THRESHOLDS``), per layer: L1 piles weights up there, L2 narrows the whole distribution.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .html import Section

THRESHOLDS = (1e-3, 1e-2)
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
BINS = 81


def kernels(model) -> list[tuple[str, np.ndarray]]:
    """``[(label, kernel)]`` of every layer with a kernel (dense and convolution layers; biases left out), in
    order: ``layer 1 (180x128)``, ..., the last one labelled ``output``. Layer names are not used: Keras
    numbers them per process, so the same network built twice gets different ones."""
    found = [np.asarray(layer.kernel) for layer in getattr(model, "layers", []) if hasattr(layer, "kernel")]
    out = []
    for i, k in enumerate(found, start=1):
        shape = "x".join(map(str, k.shape))
        out.append((f"output ({shape})" if i == len(found) else f"layer {i} ({shape})", k))
    return out


def _key(label: str) -> str:
    return f"frac_below_{label}"


def summary(models: dict[str, object], thresholds=THRESHOLDS) -> pd.DataFrame:
    """One row per run and layer: size, mean and largest |w|, and the fraction of |w| below each threshold."""
    rows = []
    for run, model in models.items():
        for layer, k in kernels(model):
            a = np.abs(k.ravel())
            rows.append(
                {
                    "run": run,
                    "layer": layer,
                    "weights": a.size,
                    "mean_abs": float(a.mean()),
                    "max_abs": float(a.max()),
                    **{_key(f"{t:g}"): float(np.mean(a < t)) for t in thresholds},
                }
            )
    return pd.DataFrame(rows)


def groups(models: dict[str, object]) -> list[dict[str, list[tuple[str, np.ndarray]]]]:
    """Runs whose networks have the same layers (kernel shapes), each group ``{run: kernels}``; Keras models only."""
    out: dict[tuple, dict] = {}
    for run, model in models.items():
        ks = kernels(model)
        if ks:
            out.setdefault(tuple(k.shape for _, k in ks), {})[run] = ks
    return list(out.values())


def figure(group: dict[str, list[tuple[str, np.ndarray]]], *, threshold: float = THRESHOLDS[0], title: str | None = None) -> go.Figure:
    """Runs of one architecture: per layer (columns) the weight histograms of every run (top) and the fraction
    of weights with |w| < ``threshold`` (bottom). Histograms share bins per layer and a log count axis, so
    L1's pile at zero and L2's narrower spread both show."""
    runs = list(group)
    layers = [label for label, _ in next(iter(group.values()))]
    fig = make_subplots(
        rows=2, cols=len(layers), row_heights=[0.68, 0.32], vertical_spacing=0.16, horizontal_spacing=0.05,
        subplot_titles=layers + [""] * len(layers),
    )
    for col, layer in enumerate(layers, start=1):
        values = [group[r][col - 1][1].ravel() for r in runs]
        edge = float(np.quantile(np.abs(np.concatenate(values)), 0.999)) or 1.0
        bins = np.linspace(-edge, edge, BINS + 1)
        centers = (bins[:-1] + bins[1:]) / 2
        for i, (run, v) in enumerate(zip(runs, values)):
            color = PALETTE[i % len(PALETTE)]
            counts, _ = np.histogram(np.clip(v, -edge, edge), bins)
            share = counts / v.size
            fig.add_trace(
                go.Scatter(x=centers, y=np.where(share > 0, share, np.nan), mode="lines", line={"color": color, "width": 1.5, "shape": "hvh"},
                           name=run, legendgroup=run, showlegend=col == 1,
                           hovertemplate=f"{run}<br>w %{{x:.3g}}: %{{y:.3g}} of the layer<extra></extra>"),
                row=1, col=col,
            )
            fig.add_trace(
                go.Bar(x=[run], y=[float(np.mean(np.abs(v) < threshold))], marker_color=color, name=run, legendgroup=run,
                       showlegend=False, hovertemplate=f"{run}<br>|w| < {threshold:g}: %{{y:.1%}}<extra></extra>"),
                row=2, col=col,
            )
        fig.update_xaxes(title_text="weight", row=1, col=col)
        fig.update_xaxes(showticklabels=False, row=2, col=col)
    fig.update_yaxes(type="log", dtick=1, exponentformat="power", row=1)
    fig.update_yaxes(title_text="share of weights", row=1, col=1)
    fig.update_yaxes(title_text=f"|w| < {threshold:g}", row=2, col=1)
    fig.update_yaxes(tickformat=".2~%", rangemode="tozero", row=2)
    fig.update_layout(
        title=title or "Weights per layer", template="plotly_white", height=560, bargap=0.15,
        legend={"orientation": "h", "y": -0.08, "x": 0}, margin={"l": 60, "r": 20, "t": 70, "b": 50},
    )
    return fig


def shrinkage_figure(l1: float = 1.0, l2: float = 1.0) -> go.Figure:
    """What each penalty does to one weight w (orthonormal inputs, loss ½(w - ŵ)²): none keeps ŵ, L2 divides it
    by 1 + λ (d²/(d² + λ) with d = 1), L1 soft-thresholds it (zero for |ŵ| <= λ), both do both."""
    w = np.linspace(-3, 3, 601)
    soft = np.sign(w) * np.maximum(np.abs(w) - l1, 0.0)
    curves = [("none", w), (f"L2 (λ = {l2:g})", w / (1 + l2)), (f"L1 (λ = {l1:g})", soft), ("L1 + L2", soft / (1 + l2))]
    fig = go.Figure()
    for i, (name, y) in enumerate(curves):
        fig.add_trace(go.Scatter(x=w, y=y, mode="lines", name=name, line={"color": PALETTE[i], "dash": "dot" if i == 0 else "solid"}))
    fig.update_layout(
        title="Penalised weight against the unpenalised one", xaxis_title="unpenalised weight ŵ", yaxis_title="penalised weight",
        template="plotly_white", height=420,
    )
    return fig


def sections(models: dict[str, object]) -> list[Section]:
    """The report's weights part: one figure per architecture among the runs, the theory, and the table."""
    found = groups(models)
    if not found:
        return []
    figures = [figure(g, title=f"Weights per layer: {', '.join(g)}") for g in found]
    text = (
        f"Per layer, the distribution of the trained kernel weights (biases left out; log scale) and the fraction "
        f"with |w| < {THRESHOLDS[0]:g}. L2 shrinks every weight (by d²/(d² + λ) along a direction of singular "
        f"value d), L1 soft-thresholds: small weights go to zero. With Adam they stay within about a learning rate "
        f"of zero instead of exactly on it, hence the threshold. The output layer carries no penalty (heads are "
        f"never regularised)."
    )
    return [
        Section("Weights", text=text, figures=[*figures, shrinkage_figure()]),
        Section("Weights per layer", table=summary(models), name="weights_table"),
    ]


def log_fractions(client, run_id: str, model, thresholds=THRESHOLDS) -> None:
    """The fraction of all kernel weights below each threshold, as metrics of the run that trained ``model``."""
    ks = kernels(model)
    if not ks:
        return
    a = np.abs(np.concatenate([k.ravel() for _, k in ks]))
    for t in thresholds:
        client.log_metric(run_id, f"weights_frac_below_{t:g}", float(np.mean(a < t)))
