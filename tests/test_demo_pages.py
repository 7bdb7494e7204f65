"""Do the pages of a real demo run work in a browser, and what do they look like?

Runs only when PROTOSCOPE_DEMO_RUN names a finished `protoscope demo` directory (a demo takes
minutes, so `make test` does not make one; `make demo-screenshot` does both). Opens the report
and the compare page in headless Chromium, checks every figure drew with no script error, and
writes the README's screenshot, docs/report-demo.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import browser

RUN = os.environ.get("PROTOSCOPE_DEMO_RUN")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "report-demo.png"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not RUN, reason="set PROTOSCOPE_DEMO_RUN to a demo run (make demo-screenshot)"),
    pytest.mark.skipif(browser.chromium() is None, reason="chromium is not installed"),
]


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    run = Path(RUN)
    report = run / "report.html"
    compares = sorted(run.glob("compare-*.html"))
    assert report.is_file() and compares, f"{run} holds no finished demo (report and compare page)"
    work = tmp_path_factory.mktemp("demo")
    png = work / "report.png"
    jobs = {
        "report": browser.start_dump_dom(browser.with_probe(report, work / "probe-report.html")),
        "compare": browser.start_dump_dom(browser.with_probe(compares[0], work / "probe-compare.html")),
        "screenshot": browser.start_screenshot(report, png),
    }
    dom = {name: browser.finish(job) for name, job in jobs.items()}
    return {"html": {"report": report, "compare": compares[0]}, "dom": dom, "png": png}


@pytest.mark.parametrize("page", ["report", "compare"])
def test_every_demo_figure_is_drawn_without_errors(pages, page):
    dom, log = pages["dom"][page]
    expected = pages["html"][page].read_text(encoding="utf-8").count('<div class="plot" data-figure=')
    assert expected >= (10 if page == "report" else 3)
    assert browser.rendered_figures(dom) == (expected, expected)
    assert browser.js_errors(dom, log) == []


def test_demo_screenshot_is_a_drawn_page(pages):
    rgb = browser.png_pixels(pages["png"])[..., :3].astype(np.int64)
    # The first screen is the protocol and the findings table (text; the figures come after
    # them), so "drawn" means ink on the page: a blank or failed page has none (~3% here).
    ink = rgb.max(axis=2) < 128
    assert ink.mean() > 0.01
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(pages["png"], SCREENSHOT)
