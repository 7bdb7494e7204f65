"""Do the figure builders and page assembly hold their contract without a browser?

Each builder on the synthetic run's tables returns a Figure with the expected traces and axis
titles; on a missing or empty table it returns a no-data figure whose sentence the page shows;
hostile texts never reach a page unescaped; the report and compare pages are built from the
run store and fail with one clear error on bad input.
"""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from synthetic_run import HOSTILE_ID, IMG_TEXT, SCRIPT_TEXT, make_synthetic_run
from protoscope.geometry.errors import ProtoscopeError, StoreError
from protoscope.reports import figures_capacity as cap
from protoscope.reports import figures_compare as fc
from protoscope.reports import figures_connectivity as conn
from protoscope.reports import figures_information as info
from protoscope.reports import figures_neighbourhoods as hood
from protoscope.reports import figures_uniqueness as uniq
from protoscope.reports.compare import build_compare, choose_pair, pairs_of
from protoscope.reports.figures import no_data_reason
from protoscope.reports.page import Section, html_table, render_page
from protoscope.reports.report import build_report, open_run

RAW_HOSTILE = ("<script>window.__pwned", "<img src=x")
FIGURE_DIV = '<div class="plot" data-figure='


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_synthetic_run(tmp_path_factory.mktemp("figures") / "RUN")


@pytest.fixture(scope="module")
def store(run):
    return open_run(run)


def _ids(store, text_id="t0"):
    solutions = store.solutions()
    return sorted(solutions.loc[solutions["text_id"] == text_id, "solution_id"].tolist())


# builder, tables it reads (None: solutions), extra args, trace types, x title, y title
CASES = [
    (cap.accuracy_distribution, [None], {}, {"histogram"}, "accuracy (C_tokens / N)",
     "solutions"),
    (cap.steps_distribution, [None], {}, {"histogram"}, "steps (including restarts)",
     "solutions"),
    (cap.capacity_curves, ["capacity"], {}, {"scatter"}, "prefix length (tokens)",
     "accuracy (mean over seeds)"),
    (cap.capacity_by_source, ["capacity"], {}, {"box"}, "source", "capacity (tokens)"),
    (cap.hlm_vs_capacity, ["information"], {}, {"scatter"}, "capacity (tokens)",
     "H_LM of the reconstructed prefix (bits)"),
    (cap.one_step_vs_mem, ["capacity"], {}, {"scatter"},
     "[mem] capacity (tokens, median over seeds)",
     "one-step capacity (tokens, median over seeds)"),
    (uniq.distance_by_pair_kind, ["uniqueness"], {}, {"box"}, "vector", "cosine distance"),
    (uniq.distance_vs_text_distance, ["uniqueness"], {"text_distance": "tfidf"}, {"scatter"},
     "TF-IDF cosine distance of the texts", "cosine distance of e+m"),
    (uniq.distance_vs_text_distance, ["uniqueness"], {"text_distance": "semantic"},
     {"scatter"}, "semantic distance of the texts (MiniLM cosine)", "cosine distance of e+m"),
    (conn.path_accuracy, ["connectivity"], {"path": "linear"}, {"scatter"},
     "t (0 = solution a, 1 = solution b)", "accuracy"),
    (conn.path_accuracy, ["connectivity"], {"path": "bezier"}, {"scatter"},
     "t (0 = solution a, 1 = solution b)", "accuracy"),
    (conn.pair_summary, ["connectivity_pairs"], {"value": "barrier"}, {"box"}, "path",
     "barrier (max loss minus mean endpoint loss, nats)"),
    (conn.pair_summary, ["connectivity_pairs"], {"value": "length_ratio"}, {"box"}, "path",
     "curve length / straight length"),
    (hood.accuracy_vs_radius, ["neighbourhoods"], {}, {"scatter"},
     "radius (relative to the vector norm)", "accuracy (mean of trials)"),
    (hood.radius_vs_nearest, ["neighbourhood_radii"], {}, {"scatter"},
     "relative distance to the nearest other solution", "radius_99 (relative radius)"),
    (hood.solution_map, ["maps"], {"method": "pca"}, {"scatter"}, "PCA 1", "PCA 2"),
    (hood.solution_map, ["maps"], {"method": "umap", "vector": "m"}, {"scatter"}, "UMAP 1",
     "UMAP 2"),
    (info.probe_scores, ["probes"], {}, {"scatter"}, "what the probe predicts",
     "score (accuracy, macro AUC or R^2)"),
    (info.bits_per_dimension, ["information"], {}, {"box"}, "source", "bits per dimension"),
    (info.attention_by_layer, ["attention"], {}, {"scatter"}, "layer", "mean attention share"),
    (info.prompting_overlap, ["prompting"], {}, {"histogram"},
     "token overlap with the target text", "solutions"),
    (info.throughput, ["throughput"], {}, {"scatter"}, "text length (tokens)",
     "tokens per second"),
]


def _table(store, name):
    return store.solutions() if name is None else store.analysis(name)


@pytest.mark.parametrize("builder, tables, kwargs, types, x_title, y_title", CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_builder_makes_the_expected_figure(store, builder, tables, kwargs, types, x_title,
                                           y_title):
    fig = builder(*[_table(store, t) for t in tables], **kwargs)
    assert isinstance(fig, go.Figure)
    assert no_data_reason(fig) is None
    assert {trace.type for trace in fig.data} == types
    assert fig.layout.xaxis.title.text == html.escape(x_title)
    assert fig.layout.yaxis.title.text == html.escape(y_title)
    assert fig.layout.title.text


@pytest.mark.parametrize("empty", [None, "frame"])
@pytest.mark.parametrize("builder, tables, kwargs", [c[:3] for c in CASES],
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_builder_without_data_says_so(builder, tables, kwargs, empty):
    table = None if empty is None else pd.DataFrame({"unrelated": []})
    fig = builder(*[table for _ in tables], **kwargs)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 0
    assert no_data_reason(fig)


def test_one_step_vs_mem_needs_both_methods(store):
    capacity = store.analysis("capacity")
    fig = cap.one_step_vs_mem(capacity[capacity["method"] == "one-step"])
    assert "both" in no_data_reason(fig)


def test_bad_option_names_the_allowed_values(store):
    with pytest.raises(ValueError, match="tfidf"):
        uniq.distance_vs_text_distance(store.analysis("uniqueness"), "words")
    with pytest.raises(ValueError, match="barrier"):
        conn.pair_summary(store.analysis("connectivity_pairs"), "height")


def test_compare_figures_are_matrices_over_the_text_solutions(store):
    ids = _ids(store)
    heat = fc.distance_heatmap(store.analysis("uniqueness"), ids)
    assert heat.data[0].type == "heatmap" and heat.data[0].z.shape == (len(ids), len(ids))
    matrix = fc.connectivity_matrix(store.analysis("connectivity_pairs"), ids)
    assert [t.type for t in matrix.data] == ["heatmap", "heatmap"]
    positions = fc.position_correctness(store.analysis("positions"), ids)
    assert positions.data[0].z.shape == (len(ids), 8)
    tokens = fc.path_tokens(store.analysis("connectivity_tokens"), 0, "linear")
    assert tokens.data[0].z.shape == (11, 8)
    assert "&lt;i&gt;x&lt;/i&gt;" in set(tokens.data[0].text.ravel())  # tokens escaped
    assert no_data_reason(fc.position_correctness(None, ids))


def test_weakest_linear_pair_is_chosen_by_default(store):
    pairs = pairs_of(store.analysis("connectivity_pairs"), _ids(store))
    linear = pairs[pairs["path"] == "linear"]
    assert choose_pair(pairs) == linear.loc[linear["min_accuracy"].idxmin(), "pair_id"]
    with pytest.raises(ProtoscopeError, match="not a pair of this text"):
        choose_pair(pairs, pair_id=999)


def test_page_escapes_hostile_text_everywhere():
    texts = pd.DataFrame({"text_id": [HOSTILE_ID], "text": [SCRIPT_TEXT + " " * 90 + IMG_TEXT]})
    fig = go.Figure(go.Scatter(x=[1], y=[1], name=SCRIPT_TEXT, text=[IMG_TEXT]))
    fig.update_layout(title=IMG_TEXT)  # a caller's own figure, not escaped by a builder
    page = render_page(SCRIPT_TEXT, [Section("s", IMG_TEXT, [
        SCRIPT_TEXT, html_table(texts, text_columns=("text",), text_limit=40), fig])])
    for raw in RAW_HOSTILE:
        assert raw not in page
    assert html.escape(SCRIPT_TEXT) in page
    assert f'title="{html.escape(texts["text"][0])}"' in page  # full text on hover
    # Every </script> closes a <script> this module wrote: the figure JSON cannot end one.
    assert page.count("</script>") == len(re.findall(r"<script[ >]", page))


def test_report_embeds_plotlyjs_once_and_no_cdn(run):
    page = build_report(run).read_text(encoding="utf-8")
    assert len(re.findall(r"\* plotly\.js v\d", page)) == 1
    assert not re.search(r"<script[^>]+src=", page)
    # The bundle names a CDN as topojson default (unused: no maps); nothing else may.
    assert page.count("cdn.plot.ly") == get_plotlyjs().count("cdn.plot.ly")
    for raw in RAW_HOSTILE:
        assert raw not in page
    assert page.count(FIGURE_DIV) == 30
    for anchor in ("overview", "capacity", "uniqueness", "connectivity", "neighbourhoods",
                   "information", "shape"):
        assert f'<section id="{anchor}">' in page


def test_sections_without_analyses_say_so(tmp_path):
    run = make_synthetic_run(tmp_path / "RUN", analyses=())
    page = build_report(run).read_text(encoding="utf-8")
    assert page.count(FIGURE_DIV) == 2  # the overview's accuracy and steps histograms
    assert "No uniqueness analysis in this run." in page
    assert "No connectivity analysis in this run." in page
    compare = build_compare(run, "t0").read_text(encoding="utf-8")
    assert FIGURE_DIV not in compare
    assert "positions.parquet" in compare


def test_compare_page_for_a_hostile_text_id(run):
    path = build_compare(run, HOSTILE_ID)
    assert path.parent == run and path.name.startswith("compare-t_b_3")
    page = path.read_text(encoding="utf-8")
    for raw in RAW_HOSTILE + (HOSTILE_ID,):
        assert raw not in page
    assert page.count(FIGURE_DIV) == 6  # with the text's optimisation paths


def test_unknown_text_id_names_known_ones(run):
    with pytest.raises(ProtoscopeError, match=r"unknown text id 'nope'.*t0, t1"):
        build_compare(run, "nope")


def test_not_a_run_store(tmp_path):
    with pytest.raises(StoreError, match="manifest.json"):
        build_report(tmp_path)
    with pytest.raises(StoreError):
        build_compare(tmp_path, "t0")


def test_static_format_and_missing_browser(run, monkeypatch):
    with pytest.raises(ProtoscopeError, match="png, svg, pdf"):
        build_report(run, static="gif")
    monkeypatch.setenv("BROWSER_PATH", str(run / "no-such-browser"))
    with pytest.raises(ProtoscopeError, match="install it"):
        build_report(run, static="png")


def test_hlm_vs_capacity_falls_back_to_the_capacity_search(store):
    capacity = store.analysis("capacity")
    fig = cap.hlm_vs_capacity(None, capacity)
    points = {t: (x, y) for trace in fig.data for t, x, y in zip(trace.customdata, trace.x, trace.y)}
    held = capacity[capacity["reconstructed"] & (capacity["method"] == "one-step")]
    expected = held.sort_values("length").groupby("text_id").last()
    assert len(points) == len(expected) > 0
    for text_id, row in expected.iterrows():
        assert points[html.escape(text_id)] == (row["length"], pytest.approx(row["h_lm_bits"]))
    assert no_data_reason(cap.hlm_vs_capacity(None, None)) is not None


def test_a_map_of_many_solutions_is_one_webgl_trace_of_a_sample_that_says_so():
    """10,000 solutions of 10,000 texts: one Scattergl trace (not a trace per text) of at most
    MAP_POINTS points, the title naming the sample; radii likewise."""
    n = 10_000
    rng = np.random.default_rng(0)
    maps = pd.DataFrame({"solution_id": np.arange(n), "text_id": [f"t{i}" for i in range(n)],
                         "source": "file", "vector": "e", "method": "pca",
                         "x": rng.normal(size=n), "y": rng.normal(size=n)})
    fig = hood.solution_map(maps, method="pca")
    (trace,) = fig.data
    assert trace.type == "scattergl" and len(trace.x) == hood.MAP_POINTS
    assert f"a sample of {hood.MAP_POINTS:,} of {n:,} solutions" in fig.layout.title.text
    radii = pd.DataFrame({"solution_id": np.arange(n), "text_id": maps["text_id"],
                          "radius_99": rng.random(n), "nearest_same_text": np.nan,
                          "nearest_other_text": rng.random(n)})
    fig = hood.radius_vs_nearest(radii)
    assert {t.type for t in fig.data[1:]} == {"scattergl"} and len(fig.data[1].x) == hood.MAP_POINTS
    small = hood.solution_map(maps.head(30), method="pca")
    assert {t.type for t in small.data} == {"scatter"} and "sample" not in small.layout.title.text
