"""The table contract: its rules, docs/tables.md, and the analyses -> report path end to end."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pandas as pd
import pytest

from protoscope.geometry import tables
from protoscope.geometry.tables import COLUMNS, CONCATENATED, capacity_of, conform
from protoscope.analysis.vectors import own_vectors

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tables.md"


def _documented_columns() -> dict[str, list[str]]:
    """Per bullet `name.parquet` of the doc's analysis tables: the backticked names outside
    parentheses (inside them are values and notes). Other files (curves.safetensors) skipped."""
    section = DOC.read_text(encoding="utf-8").split("## Analysis tables", 1)[1].split("\n## ", 1)[0]
    out = {}
    for bullet in re.split(r"\n- ", section)[1:]:
        head, _, body = bullet.partition(":")
        name = head.strip().strip("`")
        if not name.endswith(".parquet"):
            continue
        name = name.removesuffix(".parquet")
        depth, names = 0, []
        for part in re.split(r"(`[^`]*`)", body):
            if part.startswith("`") and part.endswith("`") and len(part) > 1:
                if depth == 0:
                    names.append(part[1:-1])
                continue
            depth += part.count("(") - part.count(")")
        out[name] = names
    return out


def test_docs_list_exactly_the_contract_columns():
    documented = _documented_columns()
    assert sorted(documented) == sorted(COLUMNS)
    for name, columns in COLUMNS.items():
        assert sorted(documented[name]) == sorted(columns), name
        assert len(set(documented[name])) == len(documented[name]), name


def test_conform_orders_and_refuses_missing_or_unknown_columns():
    frame = pd.DataFrame({c: [0] for c in reversed(COLUMNS["attention"])})
    assert list(conform("attention", frame).columns) == list(COLUMNS["attention"])
    with pytest.raises(ValueError, match="lacks column 'attention_mass'"):
        conform("attention", frame.drop(columns="attention_mass"))
    with pytest.raises(ValueError, match="unknown column 'mass'"):
        conform("attention", frame.assign(mass=1.0))
    with pytest.raises(ValueError, match="unknown analysis table"):
        conform("attentions", frame)
    with pytest.raises(ValueError, match="no column 'mass'"):
        tables.read("attention", "layer", "mass")


def test_reconstructed_is_the_papers_threshold():
    assert tables.RECONSTRUCTED == 0.99
    assert tables.reconstructed(0.99) and not tables.reconstructed(0.989)
    assert tables.reconstructed(np.array([1.0, 0.5])).tolist() == [True, False]


def test_capacity_is_the_longest_reconstructed_prefix():
    # t0 holds 4 and 8 but not 5 (a gap does not end capacity); t1 holds nothing.
    table = pd.DataFrame({"text_id": ["t0"] * 4 + ["t1"] * 2,
                          "length": [4, 5, 8, 11, 4, 5],
                          "accuracy": [1.0, 0.8, 0.995, 0.5, 0.9, 0.2]})
    got = capacity_of(table, ["text_id"]).set_index("text_id")["capacity"].to_dict()
    assert got == {"t0": 8, "t1": 0}
    # the capacity table's own `reconstructed` column is what counts where it exists
    marked = table.assign(reconstructed=[True, True, False, False, False, False])
    assert capacity_of(marked, ["text_id"])["capacity"].tolist() == [5, 0]


def test_a_shared_vector_is_no_solutions_own():
    rows = pd.DataFrame({"arrangement": ["bos e m*", "bos e m*", "bos e m*", "e*", "bos mem"],
                         "share": ["none", "m", "e", "none", "none"]})
    own = own_vectors(rows)
    assert set(own) == set(tables.VECTORS) and CONCATENATED == "e+m"
    assert own["e"].tolist() == [True, True, False, True, True]  # [mem] trains its vector as e
    assert own["m"].tolist() == [True, False, True, False, False]
    assert own[CONCATENATED].tolist() == [True, False, False, False, False]


# -- the analyses -> report contract, end to end ----------------------------------------------
# Every analysis runs on a copy of the real tiny run (plus a short capacity search with both
# methods), then the report and a compare page are built. The lists below say exactly which
# figures each page draws and which say "no data": a renamed column, a renamed value (a pair
# kind, a method, a vector name) or an emptied table turns this test red. When a report change
# adds or removes a figure on purpose, change its line here.
EXPECTED_REPORT = [
    "overview | Accuracy of the solutions | drawn",
    "overview | Optimiser steps per solution | drawn",
    "capacity | Accuracy vs prefix length | drawn",
    "capacity | Capacity per source | drawn",
    "capacity | Information held (H_LM) vs capacity | drawn",
    "capacity | One-step vs [mem] capacity | drawn",
    "uniqueness | Cosine distance between solutions by pair kind | drawn",
    "uniqueness | Proto-token distance vs tfidf text distance, vector e+m | drawn",
    # semantic distance is off here: only same-text pairs (distance 0 by definition) remain
    "uniqueness | Proto-token distance vs semantic text distance, vector e+m | drawn",
    "connectivity | Accuracy along linear paths | drawn",
    "connectivity | Accuracy along bezier paths | drawn",
    "connectivity | Loss barrier per pair | drawn",
    "connectivity | Path length ratio per pair | drawn",
    "neighbourhoods | Accuracy vs perturbation radius | drawn",
    "neighbourhoods | Safe radius vs nearest other solution | drawn",
    "neighbourhoods | PCA map of the solutions (vector e) | drawn",
    "neighbourhoods | PCA map of the solutions (vector e+m) | drawn",
    "neighbourhoods | PCA map of the solutions (vector m) | drawn",
    # probes need solutions of at least 4 texts; the tiny run has 3
    "information | Linear probes: score vs baseline (95% interval) | no data",
    "information | Bits per trained dimension | drawn",
    "information | Attention to e vs m by layer | drawn",
    "information | Proto-tokens used as a prompt: overlap with the text | drawn",
    "information | Decoding throughput | drawn",
    # the tiny run has no subspace fits and kept no paths (tests/test_dimension.py draws those)
    "shape | Texts reconstructed vs subspace dimension | no data",
    "shape | Intrinsic dimension vs information held (H_LM) | no data",
    "shape | Top Hessian eigenvalues per solution | drawn",
    "shape | Top eigenvalue of e vs the neighbourhood radius | drawn",
    "shape | Variance of each optimisation path in its first components | no data",
    "shape | Accuracy along the optimisation paths | no data",
]
EXPECTED_COMPARE = [  # text t0
    "distances | Pairwise cosine distance (e+m) | drawn",
    "connectivity | Lowest accuracy along the path between two solutions | drawn",
    "positions | Per-position correctness of every solution | drawn",
    "path | Decoded tokens along the linear path of pair 0 | drawn",
    "path | Decoded tokens along the bezier path of pair 0 | drawn",
]
EXPECTED_INFORMATION_ONLY = [  # the tiny run with only the information analysis
    # every solution is exact (no capacity search here): one sentence, not one bar
    "overview | Accuracy of the solutions | no data",
    "overview | Optimiser steps per solution | drawn",
    "capacity | Accuracy vs prefix length | no data",
    "capacity | Capacity per source | no data",
    "capacity | Information held (H_LM) vs capacity | drawn",
    "capacity | One-step vs [mem] capacity | no data",
    "information | Linear probes: score vs baseline (95% interval) | no data",
    "information | Bits per trained dimension | drawn",
    "information | Attention to e vs m by layer | drawn",
    "information | Proto-tokens used as a prompt: overlap with the text | drawn",
    "information | Decoding throughput | drawn",
]


def _figure_states(sections) -> list[str]:
    """'anchor | title | drawn' or '... | no data' per figure, in page order (a section whose
    figures all lack data collapses to one sentence and lists none)."""
    import html

    import plotly.graph_objects as go

    from protoscope.reports.figures import no_data_reason

    out = []
    for section in sections:
        for fig in [b for b in section.blocks if isinstance(b, go.Figure)]:
            state = "drawn" if no_data_reason(fig) is None else "no data"
            out.append(f"{section.anchor} | {html.unescape(fig.layout.title.text)} | {state}")
    return out


OPTIONS = {  # small budgets: the test is about which tables and figures exist, not values
    "uniqueness": {"semantic": False, "n_bins": 2},
    "connectivity": {"grid": 5, "bezier_steps": 10, "samples_per_step": 2, "check_every": 5,
                     "cross_text_pairs": 1, "max_pairs": 1},
    "neighbourhoods": {"radii": (0.0, 0.05, 0.5), "directions": 2, "adversarial_steps": 2,
                       "umap": False},
    "information": {"throughput_batches": (1,), "repeats": 1},
    "probes": {"positions": (1, 2), "folds": 2, "permutations": 1, "resamples": 10,
               "semantic": False},
    "spectrum": {"eigs": 3, "solutions": 2},
}


def _tiny_copy(tmp_path_factory, name: str, analyses, capacity: bool = False):
    """A copy of the tiny run with the given analyses (and a short capacity search)."""
    import shutil

    from protoscope.analysis.run import run_analyses
    from protoscope.geometry.runs.capacity import capacity_search
    from protoscope.geometry.engine.recipes import resolve_recipe
    from protoscope.geometry.runs.fit import RunConfig
    from protoscope.geometry.store.runstore import RunStore
    from tiny_run import ARRANGEMENT, single_thread, tiny_run

    path, loaded = tiny_run()
    copy = tmp_path_factory.mktemp(name) / "run"
    shutil.copytree(path, copy)
    store = RunStore.open(copy)
    config = RunConfig(model=loaded.info.name, seeds=1, lengths=(2, 4), kind="capacity",
                       arrangement=ARRANGEMENT, methods=("one-step", "mem"),
                       recipe=resolve_recipe("default", max_steps=150))
    with single_thread():
        if capacity:
            store.write_analysis("capacity", capacity_search(store, loaded, store.texts(), config))
        run_analyses(store, only=analyses, loaded=loaded, quiet=True, options=OPTIONS)
    return store


@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory):
    """The tiny run with a capacity search (both methods) and every analysis."""
    from protoscope.analysis.run import ANALYSES

    return _tiny_copy(tmp_path_factory, "contract-all", ANALYSES, capacity=True)


def test_every_contract_table_is_written_with_its_columns(analysed_run):
    for name, columns in COLUMNS.items():
        table = analysed_run.analysis(name)
        assert table is not None, name
        assert list(table.columns) == list(columns), name


def test_the_report_draws_exactly_the_expected_figures(analysed_run):
    from protoscope.reports.report import build_report, report_sections

    assert build_report(analysed_run.path).exists()
    assert _figure_states(report_sections(analysed_run)) == EXPECTED_REPORT


def test_the_compare_page_draws_exactly_the_expected_figures(analysed_run):
    from protoscope.reports.compare import build_compare, compare_sections

    assert build_compare(analysed_run.path, "t0").exists()
    assert _figure_states(compare_sections(analysed_run, "t0")) == EXPECTED_COMPARE


def test_a_run_with_one_analysis_says_no_data_where_tables_are_missing(tmp_path_factory):
    from protoscope.reports.report import report_sections

    store = _tiny_copy(tmp_path_factory, "contract-information", ["information"])
    assert _figure_states(report_sections(store)) == EXPECTED_INFORMATION_ONLY
