"""Does the main job run end to end on the default model: fit all three text sources, run every
analysis, write the report and a compare page, and keep its stage times?

`protoscope demo` itself takes minutes (README: its measured time); this runs the same code at
4 tokens with small analysis budgets.
"""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from protoscope.workflows import studies
from protoscope.geometry.store.runstore import RunStore

pytestmark = pytest.mark.integration

SMALL = {"connectivity": {"max_pairs": 1, "bezier_steps": 10, "cross_text_pairs": 1, "grid": 11},
         "neighbourhoods": {"directions": 2, "adversarial_steps": 2},
         "information": {"repeats": 1}}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    result = studies.run("demo", str(out), quiet=True, texts="builtin:1+generated:1:1+random:1",
                         length=4, seeds=2, max_steps=400, options=SMALL)
    assert set(result.pages) == {"report", "compare"}
    return out, result.seconds


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
    assert len(list(out.glob("compare-*.html"))) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["study_seconds"] == {k: round(v, 1) for k, v in timings.items()}
    assert manifest["protocol"]["name"] == "demo"
    assert set(timings) >= {"fit", "analysis:uniqueness", "analysis:connectivity",
                            "analysis:neighbourhoods", "analysis:information", "pages", "total"}
    assert timings["total"] >= timings["fit"] > 0


def drawn_figures(page: str) -> dict[str, tuple[str, list[dict]]]:
    """Every figure a page draws, read back from its Plotly.newPlot call: div id -> (title,
    traces)."""
    decoder, out = json.JSONDecoder(), {}
    for match in re.finditer(r'Plotly\.newPlot\(\s*"([^"]+)",\s*', page):
        traces, end = decoder.raw_decode(page, match.end())
        layout, _ = decoder.raw_decode(page, page.index("{", end))
        out[match.group(1)] = ((layout.get("title") or {}).get("text", ""), traces)
    return out


def values(array) -> np.ndarray:
    """A trace's numeric x or y: a plain list (None at gaps) or plotly's typed array."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).astype(float)
    return np.array([np.nan if v is None else v for v in array], dtype=float)


def test_the_report_draws_the_runs_own_data(demo):
    """The page's own figures, read back from report.html, hold this run's tables: every
    analysis section draws, the PCA map has every solution where analysis/maps puts it, and
    every point of the path figures is a row of analysis/connectivity."""
    out, _ = demo
    store = RunStore.open(out)
    page = (out / "report.html").read_text(encoding="utf-8")
    figures = drawn_figures(page)
    drawn = {div.rsplit("-", 1)[0] for div in figures}
    assert {"uniqueness", "connectivity", "neighbourhoods", "information"} <= drawn
    # The overview draws its histograms only when they say more than a sentence would.
    accuracies = store.solutions()["accuracy"]
    if accuracies.nunique() == 1 and accuracies.iloc[0] == 1.0:
        assert f"All {len(accuracies)} solutions reconstruct their text exactly" in page
    assert not re.search(r"No \w+ analysis in this run", page)
    by_title = {title: traces for title, traces in figures.values()}
    maps = store.analysis("maps")
    pca = maps[(maps["method"] == "pca") & (maps["vector"] == "e")][["x", "y"]]
    drawn_map = by_title["PCA map of the solutions (vector e)"]
    points = np.concatenate([np.stack([values(t["x"]), values(t["y"])], 1) for t in drawn_map])
    assert len(pca) == len(store.solutions())
    assert sorted(map(tuple, points.round(5))) == sorted(map(tuple, pca.to_numpy(float).round(5)))
    grid = store.analysis("connectivity")
    for path in ("linear", "bezier"):
        lines = [t for t in by_title[f"Accuracy along {path} paths"]
                 if "each pair" in t.get("name", "")]
        points = np.concatenate([np.stack([values(t["x"]), values(t["y"])], 1) for t in lines])
        points = points[~np.isnan(points).any(axis=1)].round(6)
        rows = grid[grid["path"] == path][["t", "accuracy"]].to_numpy(float).round(6)
        assert len(rows) and sorted(map(tuple, points)) == sorted(map(tuple, rows)), path
