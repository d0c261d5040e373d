"""One self-contained HTML report per command, and the same figures and tables as MLflow artifacts.

plotly.js is embedded once in the page, so a report opens offline (and inside MLflow's artifact viewer).
Figures take the page's width (a fixed ``layout.width`` applies to the PNG only), a section's several
figures wrap into rows, and wide tables scroll inside their box, so a page fits a window of any width.
Figures are also kept as plotly JSON (``plotly.io.read_json`` reloads them) and, where a headless Chromium
is available to kaleido, as PNG; tables as CSV.
"""

from __future__ import annotations

import html
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from . import browser
from ..errors import one_line

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 1300px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
p.note { color: #555; max-width: 70em; overflow-wrap: anywhere; }
div.table { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th { background: #f4f4f4; }
td.text { text-align: left; }
div.figure { width: 100%; min-width: 0; }
div.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 380px), 1fr)); gap: 0.5em; }
"""


@dataclass(frozen=True)
class Link:
    """A table cell shown as a hyperlink (and written to CSV as its address)."""

    url: str
    text: str = ""

    def __str__(self) -> str:
        return self.text or self.url


@dataclass
class Section:
    """A heading with text, a figure (or several, ``figures``, shown side by side and wrapped into rows) and a table."""

    title: str
    text: str = ""
    figure: go.Figure | None = None
    table: pd.DataFrame | None = None
    name: str = ""
    figures: list[go.Figure] = field(default_factory=list)

    def __post_init__(self):
        self.name = self.name or re.sub(r"[^a-z0-9]+", "_", self.title.lower()).strip("_") or "section"

    def named_figures(self) -> dict[str, go.Figure]:
        """``{name: figure}``: the section's name for one figure, ``NAME_1``, ``NAME_2``, ... for several."""
        out = {self.name: self.figure} if self.figure is not None else {}
        out.update({f"{self.name}_{i}": f for i, f in enumerate(self.figures, start=1)})
        return out


def figure_html(fig: go.Figure, div_id: str) -> str:
    """A figure as a ``<div>`` that takes its container's width and follows it when the window is resized."""
    if fig.layout.width is not None:  # a fixed width is for the PNG; on the page it would overflow narrow windows
        fig = go.Figure(fig).update_layout(width=None, autosize=True)
    inner = fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, default_width="100%", config={"responsive": True}
    )
    return f'<div class="figure">{inner}</div>'


def _cell(value) -> str:
    if isinstance(value, Link):
        return f'<td class="text"><a href="{html.escape(value.url)}">{html.escape(str(value))}</a></td>'
    if isinstance(value, float):
        return f"<td>{'' if math.isnan(value) else f'{value:.4g}'}</td>"
    if isinstance(value, (int, bool)) or value is None:
        return f"<td>{'' if value is None else value}</td>"
    return f'<td class="text">{html.escape(str(value))}</td>'


def table_html(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'



@dataclass
class Report:
    """Sections of text, figures and tables, written as one HTML page and logged to MLflow."""

    title: str
    intro: str = ""
    sections: list[Section] = field(default_factory=list)

    def add(self, title: str, **parts) -> Section:
        section = Section(title, **parts)
        names = {s.name for s in self.sections}
        base, i = section.name, 2
        while section.name in names:
            section.name, i = f"{base}_{i}", i + 1
        self.sections.append(section)
        return section

    @property
    def figures(self) -> dict[str, go.Figure]:
        return {name: f for s in self.sections for name, f in s.named_figures().items()}

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return {s.name: s.table for s in self.sections if s.table is not None}

    def html(self) -> str:
        from plotly.offline import get_plotlyjs

        body = [f"<h1>{html.escape(self.title)}</h1>"]
        if self.intro:
            body.append(f'<p class="note">{html.escape(self.intro)}</p>')
        for s in self.sections:
            body.append(f'<h2 id="{s.name}">{html.escape(s.title)}</h2>')
            if s.text:
                body.append(f'<p class="note">{html.escape(s.text)}</p>')
            if s.figure is not None:
                body.append(figure_html(s.figure, f"figure-{s.name}"))
            if s.figures:
                cells = "".join(figure_html(f, f"figure-{name}") for name, f in s.named_figures().items() if f is not s.figure)
                body.append(f'<div class="figures">{cells}</div>')
            if s.table is not None:
                body.append(table_html(s.table))
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head>\n<body>\n'
            + "\n".join(body)
            + "\n</body></html>\n"
        )

    def save(self, path: str | Path, *, png: bool = True) -> "Saved":
        """Write the page to ``path`` and, in the folder beside it named after it, every figure as plotly
        JSON (and PNG when possible) and every table as CSV."""
        path = Path(path)
        folder = path.with_suffix("")
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html())
        for name, fig in self.figures.items():
            (folder / f"{name}.json").write_text(fig.to_json())
        for name, df in self.tables.items():
            links = [c for c in df.columns if df[c].map(lambda v: isinstance(v, Link)).any()]
            df.assign(**{c: df[c].map(lambda v: v.url if isinstance(v, Link) else v) for c in links}).to_csv(
                folder / f"{name}.csv", index=False
            )
        note = export_png(self.figures, folder) if png else None
        return Saved(path, folder, note)


@dataclass
class Saved:
    html: Path
    folder: Path
    png_note: str | None

    def log(self, mlflow_client, run_id: str, artifact_path: str = "report") -> None:
        """Log the page and its folder (figures, tables) to an MLflow run."""
        mlflow_client.log_artifact(run_id, str(self.html), artifact_path)
        mlflow_client.log_artifacts(run_id, str(self.folder), f"{artifact_path}/{self.folder.name}")


def export_png(figures: dict[str, go.Figure], folder: str | Path) -> str | None:
    """Write ``NAME.png`` per figure with kaleido; returns a one-line reason when that cannot be done."""
    if not figures:
        return None
    exe = browser.find()
    if exe is None:
        return "PNG export skipped: no headless Chromium found (apt-get install chromium); the HTML report is complete"
    import importlib.util

    if importlib.util.find_spec("kaleido") is None:
        return "PNG export skipped: kaleido is not installed (pip install kaleido); the HTML report is complete"
    try:
        import plotly.io as pio

        os.environ.setdefault("BROWSER_PATH", exe)
        figs = list(figures.values())
        pio.write_images(
            figs,
            [Path(folder) / f"{n}.png" for n in figures],
            width=[f.layout.width or 1200 for f in figs],
            height=[f.layout.height or 600 for f in figs],
        )
    except Exception as e:  # kaleido could not drive the browser: PNGs are a convenience, the report stands
        reason = one_line(e)
        return f"PNG export skipped: {reason[:200]}"
    return None
