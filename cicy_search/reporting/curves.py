"""Learning curves: train vs validation loss and accuracy per epoch, one trace per run and metric."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def _curve(values: list[float], name: str, color: str, dash: str, **options) -> go.Scatter:
    """One metric's per-epoch values as a line: the trace every learning-curve figure is made of."""
    return go.Scatter(x=list(range(len(values))), y=values, name=name, line={"color": color, "dash": dash}, **options)


def learning_curves(histories: dict[str, dict[str, list[float]]], title: str = "Learning curves") -> go.Figure:
    """``{run label: Keras-style history}`` -> a two-panel figure (loss, accuracy), train solid, validation dashed."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    for i, (label, history) in enumerate(histories.items()):
        color = palette[i % len(palette)]
        for col, metric in ((1, "loss"), (2, "accuracy")):
            for prefix, dash in (("", "solid"), ("val_", "dash")):
                values = history.get(prefix + metric)
                if not values:
                    continue
                name = f"{label} {'validation' if prefix else 'train'} {metric}"
                fig.add_trace(_curve(values, name, color, dash, legendgroup=label, mode="lines"), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title, template="plotly_white")
    return fig


def run_curves(label: str, history: dict[str, list[float]]) -> go.Figure:
    """One run's curves, loss above accuracy, train solid and validation dashed: the panel a comparison
    shows once per run (on the page the panels wrap into as many columns as the window holds).

    Four traces at most: train and validation loss, train and validation accuracy.
    """
    fig = make_subplots(rows=2, cols=1, subplot_titles=("loss", "accuracy"), vertical_spacing=0.16, shared_xaxes=True)
    for row, metric in ((1, "loss"), (2, "accuracy")):
        for prefix, color, dash, split in (("", "#1f77b4", "solid", "train"), ("val_", "#d62728", "dash", "validation")):
            values = history.get(prefix + metric)
            if not values:
                continue
            trace = _curve(
                values, f"{label} {split} {metric}", color, dash, legendgroup=split, showlegend=False,
                mode="lines+markers" if len(values) < 3 else "lines",
                hovertemplate=f"{label}<br>{split} {metric}<br>epoch %{{x}}: %{{y:.4g}}<extra></extra>",
            )
            fig.add_trace(trace, row=row, col=1)
    fig.update_yaxes(range=[0, 1.02], row=2, col=1)
    longest = max((len(v) for v in history.values()), default=1)
    fig.update_xaxes(dtick=max(1, round(longest / 8)))
    fig.update_xaxes(title_text="epoch", row=2, col=1)
    fig.update_layout(title=label, template="plotly_white", height=480, margin={"l": 50, "r": 20, "t": 60, "b": 40})
    return fig
