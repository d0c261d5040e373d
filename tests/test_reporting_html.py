"""The report page: offline, escaped, PNG export or a one-line reason, and a render check that can fail."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from cicy_search.reporting import browser, html
from cicy_search.reporting.curves import learning_curves, run_curves


def _report():
    report = html.Report("A <report>", intro="x < y & z")
    report.add("Curves", figure=learning_curves({"run": {"loss": [2.0, 1.0], "val_loss": [2.1, 1.5]}}))
    report.add("Bars", figure=go.Figure(go.Bar(x=["a", "b"], y=[3, 1])))
    report.add("Table", table=pd.DataFrame({"run": ["<b>"], "acc": [0.5], "link": [html.Link("http://h/#/r?a=1&b=2", "r1")]}))
    return report


def _wide_report():
    """What used to overflow: a figure 1500 px wide, three panels side by side, a table of many columns."""
    report = html.Report("Wide")
    report.add("Wide figure", figure=go.Figure(go.Scatter(y=[1, 3, 2])).update_layout(width=1500, height=400))
    report.add("Runs", figures=[run_curves(f"run {i}", {"loss": [2.0, 1.0, 0.5], "val_loss": [2.1, 1.5, 1.4],
                                                        "accuracy": [0.2, 0.5, 0.7], "val_accuracy": [0.2, 0.4, 0.5]})
                                for i in range(3)])
    report.add("Many columns", table=pd.DataFrame({f"params.setting_number_{i}": [0.123456] for i in range(30)}))
    return report


def test_page_embeds_plotly_once_and_escapes_text(tmp_path):
    page = _report().save(tmp_path / "r.html", png=False).html.read_text()
    assert page.count("<script src=") == 0 and page.count("plotly.js v") >= 1  # no CDN: opens offline
    assert "<title>A &lt;report&gt;</title>" in page and "x &lt; y &amp; z" in page
    assert '<td class="text">&lt;b&gt;</td>' in page and '<a href="http://h/#/r?a=1&amp;b=2">r1</a>' in page
    assert page.count('class="plotly-graph-div"') == 2


def test_saved_folder_has_figures_as_json_and_tables_as_csv(tmp_path):
    import plotly.io as pio

    saved = _report().save(tmp_path / "r.html", png=False)
    assert sorted(p.name for p in saved.folder.iterdir()) == ["bars.json", "curves.json", "table.csv"]
    assert list(pio.read_json(saved.folder / "bars.json").data[0].y) == [3, 1]
    assert pd.read_csv(saved.folder / "table.csv")["link"].tolist() == ["http://h/#/r?a=1&b=2"]


def test_without_a_browser_png_export_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(browser, "find", lambda: None)
    saved = _report().save(tmp_path / "r.html")
    assert saved.html.is_file() and len(saved.png_note.splitlines()) == 1 and "no headless Chromium" in saved.png_note
    assert not list(saved.folder.glob("*.png"))


@pytest.mark.slow
def test_png_export_with_chromium(tmp_path, chromium):
    from PIL import Image

    saved = _report().save(tmp_path / "r.html")
    if saved.png_note and "kaleido is not installed" in saved.png_note:
        pytest.skip(saved.png_note)
    assert saved.png_note is None
    for name in ("curves", "bars"):
        image = Image.open(saved.folder / f"{name}.png")
        assert image.size == (1200, 600) and np.asarray(image.convert("L")).std() > 5


@pytest.mark.slow
def test_render_check_passes_a_good_page_and_catches_broken_ones(tmp_path, chromium):
    good = _report().save(tmp_path / "good.html", png=False).html
    check = browser.check_render(good)
    assert check.ok and [f["traces"] for f in check.figures] == [2, 1]
    # A script error, and a page that needs the network (plotly.js from a CDN), must both be caught.
    text = good.read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(text.replace("Plotly.newPlot(", "Plotly.noSuchFunction(", 1))
    check = browser.check_render(broken)
    assert not check.ok and any("noSuchFunction" in e for e in check.errors)
    assert [f["rendered"] for f in check.figures] == [False, True]
    online = tmp_path / "online.html"
    online.write_text(go.Figure(go.Bar(y=[1])).to_html(include_plotlyjs="cdn"))
    check = browser.check_render(online)
    assert not check.ok and check.errors


@pytest.mark.parametrize("size", [(1280, 1600), browser.PHONE], ids=["1280px", "phone"])
def test_pages_fit_the_window_and_panels_wrap_into_rows(tmp_path, chromium, size):
    saved = _wide_report().save(tmp_path / "wide.html", png=False)
    assert sorted(p.name for p in saved.folder.glob("*.json")) == ["runs_1.json", "runs_2.json", "runs_3.json", "wide_figure.json"]
    check = browser.check_render(saved.html, size=size)
    assert check.errors == [] and check.viewport == size[0]
    assert check.page_width <= check.viewport, "the page scrolls sideways"
    assert all(f["rendered"] and 0 < f["width"] <= check.viewport for f in check.figures) and check.ok
    wide, *panels = check.figures
    assert wide["width"] > 0.8 * min(check.viewport, 1300) - 40  # the fixed 1500 px became the page's width
    tops = {round(f["top"]) for f in panels}
    if size[0] >= 1280:
        assert len(tops) == 1 and len({round(f["left"]) for f in panels}) == 3  # side by side
    else:
        assert len(tops) == 3  # one under the other
    assert pio_width(saved.folder / "wide_figure.json") == 1500  # the PNG/JSON keep the figure as made


def pio_width(path):
    import plotly.io as pio

    return pio.read_json(path).layout.width
