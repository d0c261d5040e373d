"""The README's figures: the results-table plot from the table's JSON, written as a small PNG."""

import json
import subprocess
import sys
import os

import pytest

from cicy_search.experiments import figures

RECORDS = [
    {"row": "dense (talk)", "fraction": 0.8, "seeds": 3, "estimate": False, "h11": [0.805, 0.006]},
    {"row": "dense (talk)", "fraction": 0.3, "seeds": 3, "estimate": False, "h11": [0.714, 0.004]},
    {"row": "svm", "fraction": 0.8, "seeds": 1, "estimate": False, "h11": [0.687, 0.0]},
    {"row": "inception (literature)", "fraction": 0.8, "seeds": 3, "estimate": True, "h11": [0.9, 0.01]},
    {"row": "equivariant", "fraction": 0.8, "seeds": 0, "estimate": False, "h11": None},  # not trained yet
]


def test_results_figure_has_one_bar_series_per_fraction_with_sd_error_bars():
    fig = figures.results_figure(RECORDS)
    assert [t.name for t in fig.data] == ["80% train", "30% train"]
    eighty = fig.data[0]
    assert list(eighty.x) == ["dense (talk)", "svm", "inception (literature) (estimate)"]
    assert list(eighty.y) == pytest.approx([80.5, 68.7, 90.0])
    assert list(eighty.error_y.array) == pytest.approx([0.6, 0.0, 1.0])
    assert list(eighty.text) == ["80.5", "68.7 (n=1)", "90.0"]  # a cell still short of its seeds says so
    assert list(fig.data[1].x) == ["dense (talk)"]


def test_results_png_is_small(tmp_path, chromium):
    table = tmp_path / "results_table.json"
    table.write_text(json.dumps(RECORDS))
    sizes = figures.main(["--only", "results", "--results", str(table), "--out", str(tmp_path / "figs")])
    png = tmp_path / "figs" / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < sizes["results"] == png.stat().st_size < figures.MAX_BYTES


def test_unknown_figure_name_is_a_usage_error():
    with pytest.raises(SystemExit) as e:
        figures.main(["--only", "nope"])
    assert e.value.code == 2


def _draw_results_refused(tmp_path, capsys) -> str:
    """``figures --only results`` on a small table into tmp_path/figs, which must exit 2: its stderr."""
    table = tmp_path / "results_table.json"
    table.write_text(json.dumps(RECORDS))
    with pytest.raises(SystemExit) as e:
        figures.main(["--only", "results", "--results", str(table), "--out", str(tmp_path / "figs")])
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("browser_path", [None, "", "/nonexistent/chromium", "docs"])
def test_no_chromium_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, browser_path):
    """Without a browser on the PATH (and BROWSER_PATH unset, empty, missing or a folder) nothing is drawn."""
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no chromium on it
    if browser_path is None:
        monkeypatch.delenv("BROWSER_PATH", raising=False)
    else:
        monkeypatch.setenv("BROWSER_PATH", browser_path)
    err = _draw_results_refused(tmp_path, capsys)
    assert err.count("\n") == 1 and err.startswith("error: no headless Chromium found")
    assert not (tmp_path / "figs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("behaviour", ["sleep 600", "exit 1", "kill -SEGV $$"])
def test_a_browser_that_hangs_or_dies_is_one_line_and_exit_2_with_nothing_written(tmp_path, monkeypatch, capsys, behaviour):
    """Kaleido waits forever on a Chromium that died under it: each PNG is drawn in a child process that is killed with
    its browser after ``RENDER_SECONDS`` and tried once more; then one line, exit 2, and no PNG, whole or partial."""
    started = tmp_path / "started"
    fake = tmp_path / "chromium"  # a real executable that never answers kaleido: it hangs, fails or crashes
    fake.write_text(f"#!/bin/sh\necho $$ >> {started}\n{behaviour}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    monkeypatch.setattr(figures, "RENDER_SECONDS", 8.0)
    drawers = []  # the real child processes, counted: under load a child may be killed before it starts a browser
    popen = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: drawers.append(popen(*a, **k)) or drawers[-1])
    err = _draw_results_refused(tmp_path, capsys)  # MLflow's own log lines (a new tracking store) may come first
    lines = err.splitlines()
    assert lines[-1].startswith(f"error: {tmp_path / 'figs' / 'results.png'}: the PNG could not be drawn: ")
    assert "Traceback" not in err and sum(line.startswith("error") for line in lines) == 1
    assert list((tmp_path / "figs").iterdir()) == []
    drawers = [d for d in drawers if d.args[:2] == [sys.executable, "-c"]]  # not, say, platform's uname
    assert len(drawers) == 2 and all(d.returncode is not None for d in drawers)  # drawn twice, both ended
    pids = [int(p) for p in started.read_text().split()] if started.exists() else []
    for pid in pids:  # none of the browsers is left running
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_biasvar_figure_is_on_a_log_axis_with_the_minimum_marked():
    import pandas as pd

    rows = [(1, 40.9, 40.7, 0.2), (20, 2.5, 2.26, 0.24), (200, 3.13, 2.25, 0.88)]
    table = pd.DataFrame([
        {"train.epochs": e, "target": "h11", "loss": "squared", "error": err, "noise": 0.0, "bias": b, "variance": v,
         "net_variance": v, "error_sd": 0.1} for e, err, b, v in rows
    ])
    fig = figures.biasvar_figure(table, "train.epochs")
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.type == "log"
    assert fig.layout.annotations[-1].text == "minimum 2.50 at 20; 3.13 at 200"
    assert [t.name for t in fig.data][:3] == ["expected error", "bias²", "net variance"]
