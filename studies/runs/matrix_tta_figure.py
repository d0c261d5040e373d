"""Draws bench.time_to_accuracy's curves (validation h11 accuracy against seconds of training) as a figure.

Run from the worktree, after the bench:
    PYTHONPATH=$PWD python studies/runs/matrix_tta_figure.py [bench/results/matrix_family_time_to_accuracy.json]
writes, beside the JSON, NAME.png (headless Chromium, as the README's figures) and NAME.html (plotly.js inlined:
opens offline; git-ignored). The title says the budgets, so a curve cut by its budget reads as such.
"""

import json
import sys
from pathlib import Path

import plotly.graph_objects as go

from cicy_search.experiments.figures import write_png

src = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/matrix_family_time_to_accuracy.json")
out = json.loads(src.read_text())
labels = {"literature": "literature: inception (Erbin & Finotello), raw matrix",
          "project": f"project: recipes/{out['recipes']['project']['config']}.yaml (bipartite message passing, matrix only)"}
fig = go.Figure()
for (name, rec), color in zip(out["recipes"].items(), ("#ff7f0e", "#1f77b4")):
    seconds, acc = zip(*rec["curve"])
    fig.add_trace(go.Scatter(x=seconds, y=acc, mode="lines+markers", name=labels.get(name, f"{name}: {rec['config']}"),
                             line={"color": color}, marker={"size": 4}))
for t in out["thresholds"]:
    fig.add_hline(y=t, line={"dash": "dot", "width": 1, "color": "#999"})
budgets = ", ".join(f"{k} {v['budget_seconds']:.0f} s" for k, v in out["recipes"].items())
load = f"load {out['load_before'][0]:.1f} before, {out['load_after'][0]:.1f} after"
fig.update_layout(
    title=f"h11, {out.get('split', {}).get('train', 0.8):.0%} train: validation accuracy against training seconds (reduced budgets: {budgets}; 2 shared cores, {load})",
    xaxis_title="seconds of training (building and tracing included)", yaxis_title="validation h11 accuracy",
    yaxis={"range": [0, 1]}, template="plotly_white", legend={"x": 0.35, "y": 0.08}, title_font_size=12,
)
png = src.with_suffix(".png")
print(f"{png}: {write_png(fig, png, width=1000, height=480):,} bytes")
fig.write_html(src.with_suffix(".html"), include_plotlyjs=True)
print(src.with_suffix(".html"))
