"""Learning curves: train vs validation loss and accuracy per epoch, one trace per run and metric."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots


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
                fig.add_trace(
                    go.Scatter(
                        x=list(range(len(values))),
                        y=values,
                        mode="lines",
                        name=f"{label} {'validation' if prefix else 'train'} {metric}",
                        line={"color": color, "dash": dash},
                        legendgroup=label,
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title, template="plotly_white")
    return fig
