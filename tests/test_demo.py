"""Does the main job run end to end on the default model: fit all three text sources, run every
analysis, write the report and a compare page, and keep its stage times?

`protoscope demo` itself takes minutes (README: its measured time); this runs the same code at
4 tokens with small analysis budgets.
"""

from __future__ import annotations

import json

import pytest

from protoscope.demo import run_demo
from protoscope.geometry.store import RunStore

pytestmark = pytest.mark.integration

SMALL = {"connectivity": {"max_pairs": 1, "bezier_steps": 10, "cross_text_pairs": 1, "grid": 11},
         "neighbourhoods": {"directions": 2, "adversarial_steps": 2},
         "information": {"repeats": 1}}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    timings = run_demo(str(out), quiet=True, texts="builtin:1+generated:1:1+random:1", length=4,
                       seeds=2, max_steps=400, options=SMALL)
    return out, timings


def test_demo_fits_every_source_and_converges(demo):
    out, _ = demo
    store = RunStore.open(out)
    rows = store.solutions()
    assert len(rows) == 6
    assert {t.source for t in store.texts()} == {"builtin", "generated", "random"}
    assert rows["converged"].sum() >= 5  # 4-token prefixes: 16-176 steps with restarts (README capacity run)


def test_demo_writes_every_analysis_and_both_pages(demo):
    out, timings = demo
    tables = {p.stem for p in (out / "analysis").glob("*.parquet")}
    assert {"uniqueness", "connectivity", "neighbourhoods", "information"} <= tables
    assert (out / "report.html").stat().st_size > 100_000  # plotly.js is embedded
    assert len(list(out.glob("compare-*.html"))) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["demo_seconds"] == timings
    assert set(timings) >= {"fit", "analysis:uniqueness", "analysis:connectivity",
                            "analysis:neighbourhoods", "analysis:information", "pages", "total"}
    assert timings["total"] >= timings["fit"] > 0
