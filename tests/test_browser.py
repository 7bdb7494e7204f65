"""Do the report pages work in a real browser: every figure drawn, no script error, hostile
texts shown as text and never run, a screenshot that is not blank, static figure files?

Renders the synthetic run's report.html and a compare page in headless Debian Chromium
(the Makefile's `browser` target installs it). The Chromium runs start side by side.
"""

from __future__ import annotations

import html

import numpy as np
import pytest

import browser
from synthetic_run import HOSTILE_ID, make_synthetic_run
from protoscope.reports.compare import build_compare
from protoscope.reports.report import build_report

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(browser.chromium() is None,
                       reason="chromium is not installed (make browser, or apt-get install "
                              "chromium)"),
]

FIGURE_DIV = '<div class="plot" data-figure='
# The DOM serialiser escapes &, < and > in text, not quotes: this is how escaped text reads back.
# Tall enough to reach past the findings table into the figures: the table grows with every
# analysis that adds a finding (the shape analyses added seven rows to the synthetic run's).
SCREENSHOT = (1400, 3600)
ESCAPED = ["&lt;script&gt;window.__pwned=1&lt;/script&gt;",
           "&lt;img src=x onerror=\"window.__pwned=1\"&gt;"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Build both pages, then dump both DOMs and take a screenshot concurrently."""
    run = make_synthetic_run(tmp_path_factory.mktemp("run") / "RUN")
    report = build_report(run)
    compare = build_compare(run, HOSTILE_ID)
    png = run / "screenshot.png"
    jobs = {
        "report": browser.start_dump_dom(browser.with_probe(report, run / "probe-report.html")),
        "compare": browser.start_dump_dom(browser.with_probe(compare,
                                                             run / "probe-compare.html")),
        "screenshot": browser.start_screenshot(report, png, SCREENSHOT),
    }
    results = {name: browser.finish(job) for name, job in jobs.items()}
    return {"run": run, "pages": {"report": report, "compare": compare}, "png": png,
            "dom": results}


@pytest.mark.parametrize("page", ["report", "compare"])
def test_every_figure_is_drawn(rendered, page):
    dom, _ = rendered["dom"][page]
    expected = rendered["pages"][page].read_text(encoding="utf-8").count(FIGURE_DIV)
    containers, drawn = browser.rendered_figures(dom)
    assert expected > 0
    assert (containers, drawn) == (expected, expected)


@pytest.mark.parametrize("page", ["report", "compare"])
def test_no_javascript_errors(rendered, page):
    dom, log = rendered["dom"][page]
    assert browser.js_errors(dom, log) == []


@pytest.mark.parametrize("page", ["report", "compare"])
def test_hostile_text_shows_and_never_runs(rendered, page):
    dom, _ = rendered["dom"][page]
    # The probe ran (attribute present) and found no marker set by an injected script.
    assert 'data-pwned="false"' in dom
    for escaped in ESCAPED + ([html.escape(HOSTILE_ID)] if page == "compare" else []):
        assert escaped in dom, f"hostile text missing from the {page} page: {escaped}"


def test_screenshot_is_not_blank(rendered):
    pixels = browser.png_pixels(rendered["png"])
    assert pixels.shape[:2] == SCREENSHOT[::-1]
    rgb = pixels[..., :3].astype(np.int64)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    assert len(np.unique(packed)) > 100  # text, axes and coloured traces, not one flat colour
    saturated = (rgb.max(axis=2) - rgb.min(axis=2)) > 60  # colours, not greys: plots drew
    assert saturated.mean() > 0.005


def test_static_export_writes_every_figure(rendered):
    run = rendered["run"]
    expected = rendered["pages"]["report"].read_text(encoding="utf-8").count(FIGURE_DIV)
    build_report(run, static="svg")
    files = sorted((run / "figures").glob("*.svg"))
    assert len(files) == expected
    assert all(f.read_text(encoding="utf-8").lstrip().startswith("<svg") for f in files)
