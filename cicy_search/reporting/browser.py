"""Headless Chromium: where it is (for kaleido's PNG export) and whether a report renders in it.

``check_render`` loads a copy of a report with a small recorder script injected first in ``<head>``; the
recorder collects JavaScript errors (thrown, rejected, ``console.error``, failed loads) and, after the page
has loaded, the state and size of every plotly figure and the page's width against the window's, and leaves
them as attributes of ``<html>`` for ``--dump-dom``. Network access is mapped to nowhere, so a report that
needs the internet fails the check; so does one wider than the window.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]

RECORDER = """<script>(function () {
  var root = document.documentElement, errors = [];
  function record(message) { errors.push(String(message)); root.setAttribute("data-js-errors", JSON.stringify(errors)); }
  root.setAttribute("data-js-errors", "[]");
  window.addEventListener("error", function (e) {
    record(e.message || ("failed to load " + ((e.target && (e.target.src || e.target.href)) || "a resource")));
  }, true);
  window.addEventListener("unhandledrejection", function (e) { record("unhandled rejection: " + ((e.reason && e.reason.message) || e.reason)); });
  var consoleError = console.error;
  console.error = function () { record(Array.prototype.join.call(arguments, " ")); consoleError.apply(console, arguments); };
  window.addEventListener("load", function () { setTimeout(function () {
    var figures = Array.prototype.map.call(document.querySelectorAll(".plotly-graph-div"), function (d) {
      var box = d.getBoundingClientRect();
      return {id: d.id, rendered: d.classList.contains("js-plotly-plot") && !!d.querySelector("svg.main-svg"),
              traces: (d.data || []).length, width: box.width, height: box.height, left: box.left, top: box.top};
    });
    root.setAttribute("data-figures", JSON.stringify(figures));
    root.setAttribute("data-page", JSON.stringify({viewport: window.innerWidth, width: document.documentElement.scrollWidth}));
  }, 500); });
})();</script>"""


def find() -> str | None:
    """The Chromium executable: ``$BROWSER_PATH`` (kaleido's own setting), else the first on the PATH."""
    override = os.environ.get("BROWSER_PATH")
    if override and Path(override).is_file():
        return override
    for name in NAMES:
        if path := shutil.which(name):
            return path
    return None


@dataclass
class RenderCheck:
    figures: list[dict]
    errors: list[str]
    screenshot: Path | None
    viewport: int = 0  # the window's inner width, px
    page_width: int = 0  # the page's scroll width, px: more than the viewport means a horizontal scroll bar

    @property
    def fits(self) -> bool:
        """Neither the page nor any figure is wider than the window."""
        return self.page_width <= self.viewport and all(f["width"] <= self.viewport for f in self.figures)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.figures) and all(f["rendered"] for f in self.figures) and self.fits


def _attribute(dom: str, name: str):
    m = re.search(rf'<html[^>]*\s{name}="([^"]*)"', dom)
    return json.loads(html.unescape(m.group(1))) if m else None


PHONE = (390, 844)  # a phone held upright, CSS pixels

# Headless Chromium keeps windows at least 500 px wide: the report is loaded in a frame of the asked size
# inside a page that copies the recorder's attributes from it.
FRAME = """<!DOCTYPE html><html><head><style>body {{ margin: 0; }} iframe {{ border: 0; display: block; }}</style></head>
<body><iframe id="report" src="{src}" style="width: {width}px; height: {height}px"></iframe><script>
window.addEventListener("load", function () {{ setTimeout(function () {{
  var inner = document.getElementById("report").contentDocument.documentElement;
  ["data-js-errors", "data-figures", "data-page"].forEach(function (name) {{
    if (inner.hasAttribute(name)) document.documentElement.setAttribute(name, inner.getAttribute(name));
  }});
}}, 2000); }});
</script></body></html>
"""


def check_render(
    report: str | Path, *, screenshot: str | Path | None = None, size=(1280, 2000), timeout: float = 120, beside: bool = False
) -> RenderCheck:
    """Open ``report`` in headless Chromium at window ``size``; the figures it drew, their sizes, the page's
    width and the JavaScript errors it raised. ``beside``: load the copy with the recorder from the report's own
    folder (removed afterwards), for a page of a site whose assets and scripts are found from its location."""
    exe = find()
    if exe is None:
        raise FileNotFoundError("no Chromium found (apt-get install chromium)")
    source = Path(report).read_text()
    head = re.search(r"<head[^>]*>", source, re.IGNORECASE)
    if head is None:
        raise ValueError(f"{report}: no <head> to inject the recorder into")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(report).resolve().with_name(f".render-check-{os.getpid()}.html") if beside else Path(tmp) / "page.html"
        page.write_text(source[: head.end()] + RECORDER + source[head.end() :])
        frame = Path(tmp) / "frame.html"
        frame.write_text(FRAME.format(width=size[0], height=size[1], src=page.as_uri()))
        shot = Path(screenshot).resolve() if screenshot is not None else None
        command = [
            exe, *FLAGS, "--allow-file-access-from-files", f"--user-data-dir={tmp}/profile",
            f"--window-size={max(size[0], 500)},{size[1]}", "--virtual-time-budget=15000", "--dump-dom",
            *([f"--screenshot={shot}"] if shot else []), frame.as_uri(),
        ]
        try:
            dom = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True).stdout
        finally:
            if beside:
                page.unlink(missing_ok=True)
    errors = _attribute(dom, "data-js-errors")
    figures = _attribute(dom, "data-figures")
    page = _attribute(dom, "data-page") or {}
    if errors is None or figures is None:
        errors = (errors or []) + ["the recorder did not run (page did not load)"]
    return RenderCheck(figures or [], errors, shot, int(page.get("viewport", 0)), int(page.get("width", 0)))
