"""The findings table: hand-made tables with known answers (a clear effect agrees or disagrees,
a tiny n is inconclusive), the verdict rule, and the table `analyze` writes on the tiny run."""

import itertools
import shutil

import numpy as np
import pandas as pd
import pytest

from protoscope.analysis import findings as fd
from protoscope.analysis.run import run_analyses
from protoscope.geometry.store.runstore import RunStore

from tiny_run import tiny_run

SOLUTIONS = pd.DataFrame({"share": ["none"]})


def _uniqueness(n_texts: int, same: float, other: float, seed: int = 0) -> pd.DataFrame:
    """Two solutions per text; same-text pairs at distance ~`same`, others ~`other`."""
    rng = np.random.default_rng(seed)
    sols = [(f"t{i}", k) for i in range(n_texts) for k in range(2)]
    rows = []
    for (ta, _), (tb, _) in itertools.combinations(sols, 2):
        kind = "same_text" if ta == tb else "different_context"
        centre = same if ta == tb else other
        rows.append({"text_a": ta, "text_b": tb, "pair_kind": kind, "vector": "e+m",
                     "cosine_distance": centre + rng.normal(0, 0.02)})
    return pd.DataFrame(rows)


def _pairs(n_texts: int, linear_held: bool, curve_held, ratio: float) -> pd.DataFrame:
    """One same-text pair per text, straight and curved; `curve_held` a bool or one per text."""
    curve_held = [curve_held] * n_texts if isinstance(curve_held, bool) else list(curve_held)
    rows = []
    for i, path in itertools.product(range(n_texts), ("linear", "bezier")):
        held = linear_held if path == "linear" else curve_held[i]
        rows.append({"pair_id": i, "text_a": f"t{i}", "text_b": f"t{i}", "same_text": True,
                     "target": "a", "path": path, "held": held,
                     "length_ratio": 1.0 if path == "linear" else ratio + 0.001 * i,
                     "min_accuracy": 1.0 if held else 0.2, "bezier_steps": 300,
                     "samples_per_step": 4, "steps_used": 50})
    return pd.DataFrame(rows)


def _table(tables: dict) -> pd.DataFrame:
    return fd.findings(tables.get, SOLUTIONS, {}).set_index("finding")


def test_the_verdict_rule():
    assert fd.verdict(0.6, 0.9, 0.5, "above") == "agrees"
    assert fd.verdict(0.1, 0.4, 0.5, "above") == "disagrees"
    assert fd.verdict(0.4, 0.6, 0.5, "above") == "inconclusive"
    assert fd.verdict(1.05, 1.1, 1.2, "below") == "agrees"
    assert fd.verdict(np.nan, np.nan, 0.5, "above") == "inconclusive"
    assert fd.value_verdict(100, 140, 128) == "agrees"
    assert fd.value_verdict(10, 20, 128) == "disagrees"
    # A bounded search confirms or is inconclusive; it never disagrees.
    assert fd.bounded_verdict(0.6, 0.9, 0.5, "above") == "agrees"
    assert fd.bounded_verdict(0.0, 0.1, 0.5, "above") == "inconclusive"
    assert fd.lower_bound_verdict(100, 140, 128) == "agrees"
    assert fd.lower_bound_verdict(140, 180, 128) == "agrees"  # above the paper's lower bound
    assert fd.lower_bound_verdict(10, 20, 128) == "inconclusive"


def test_a_clear_effect_agrees_with_the_paper():
    table = _table({"uniqueness": _uniqueness(12, same=0.2, other=0.8),
                    "connectivity_pairs": _pairs(12, False, True, 1.1)})
    row = table.loc["same-text solutions closer than different-text"]
    assert row["estimate"] > 0.95 and row["low"] > 0.5 and row["verdict"] == "agrees"
    assert row["n"] == 12 and row["low"] <= row["estimate"] <= row["high"]
    assert table.loc["straight path keeps the text", "verdict"] == "agrees"
    curve = table.loc["curve keeps the text (share held)"]
    assert curve["estimate"] == 1.0 and curve["paper"] == 1.0 and curve["verdict"] == "agrees"
    assert "budget 300 steps" in curve["detail"]
    assert table.loc["curve length ratio (held curves)", "verdict"] == "agrees"
    assert set(table.columns) >= {"estimate", "low", "high", "n", "paper", "verdict"}


def test_the_opposite_effect_disagrees():
    table = _table({"uniqueness": _uniqueness(12, same=0.8, other=0.2),
                    "connectivity_pairs": _pairs(12, True, False, 1.5)})
    assert table.loc["same-text solutions closer than different-text", "verdict"] == "disagrees"
    assert table.loc["straight path keeps the text", "verdict"] == "disagrees"
    # no curve held: a bounded search that found nothing, not a disagreement
    assert table.loc["curve keeps the text (share held)", "verdict"] == "inconclusive"
    assert "curve length ratio (held curves)" not in table.index or \
        table.loc["curve length ratio (held curves)", "n"] == 0


def test_curves_that_all_fail_are_not_found_within_the_budget_never_disagreeing():
    table = fd.findings({"connectivity_pairs": _pairs(5, False, False, 1.1)}.get, SOLUTIONS, {})
    curve = table.set_index("finding").loc["curve keeps the text (share held)"]
    assert curve["high"] < 0.5  # the whole interval lies on the other side of the boundary
    assert curve["verdict"] == "inconclusive" and curve["evidence"] == "bounded search"
    assert curve["detail"].startswith("not found within 300 steps on 5 of 5 pairs")
    printed = [line for line in fd.as_text(table).splitlines() if "curve keeps" in line]
    assert printed[0].rstrip().endswith("inconclusive (not found within 300 steps on 5 of 5 pairs)")
    assert "disagrees" not in fd.as_text(table)


def test_curves_that_mostly_hold_agree():
    held = [True] * 10 + [False] * 2
    table = _table({"connectivity_pairs": _pairs(12, False, held, 1.1)})
    curve = table.loc["curve keeps the text (share held)"]
    assert curve["low"] > 0.5 and curve["verdict"] == "agrees"
    assert not curve["detail"].startswith(fd.NOT_FOUND)  # confirmed: no budget caveat


def test_each_row_says_whether_it_is_observed_or_a_bounded_search():
    table = _table({"uniqueness": _uniqueness(12, same=0.2, other=0.8),
                    "connectivity_pairs": _pairs(12, False, True, 1.1),
                    "capacity": _capacity(6, 128)})
    assert list(table.reset_index().columns)[-1] == "evidence"
    evidence = table["evidence"].to_dict()
    assert evidence.pop("curve keeps the text (share held)") == fd.BOUNDED
    assert evidence.pop("capacity (tokens, median over texts)") == fd.BOUNDED
    assert set(evidence.values()) == {fd.OBSERVED}  # AUCs, straight path, curve length
    assert "straight path keeps the text" in evidence


def test_a_tiny_n_is_inconclusive_even_with_a_clear_effect():
    table = _table({"uniqueness": _uniqueness(3, same=0.2, other=0.8),
                    "connectivity_pairs": _pairs(3, False, True, 1.1)})
    assert (table["verdict"] == "inconclusive").all()
    assert table["low"].isna().all() and (table["n"] == 3).all()


def test_no_effect_is_inconclusive():
    table = _table({"uniqueness": _uniqueness(12, same=0.5, other=0.5, seed=3)})
    row = table.loc["same-text solutions closer than different-text"]
    assert row["low"] < 0.5 < row["high"] and row["verdict"] == "inconclusive"


def test_probe_rows_never_agree_or_disagree_with_a_paper_that_reports_no_probe():
    # The study at n = 200: bag of words scored below its baseline, which must not read as
    # "disagrees with the paper"; the probe's own answer stays in the row's detail.
    probes = pd.DataFrame({"target": ["source", "context", "bag_of_words"],
                           "metric": ["accuracy", "accuracy", "macro_auc"],
                           "score": [0.9, 0.36, 0.38], "baseline": [0.33, 0.33, 0.50],
                           "low": [0.85, 0.30, 0.35], "high": [0.95, 0.42, 0.42],
                           "n": [240, 240, 182],
                           "verdict": ["evidence", "no evidence", "no evidence"]})
    table = _table({"probes": probes})
    assert (table["verdict"] == "inconclusive").all() and table["paper"].isna().all()
    assert fd.paper_silent(table).all()
    assert table.loc["probe: source", "detail"].startswith("evidence:")
    assert table.loc["probe: context", "detail"].startswith("no evidence:")
    bag = table.loc["probe: bag_of_words", "detail"]
    assert bag.startswith("no evidence, below its baseline:") and "macro_auc" in bag
    assert table.loc["probe: bag_of_words", "estimate"] == pytest.approx(0.38)


def test_probe_rows_show_the_probes_tables_own_verdict():
    # The verdict is the probes table's: its numbers alone would say the opposite here.
    probes = pd.DataFrame({"target": ["source", "context"], "metric": ["accuracy"] * 2,
                           "score": [0.9, 0.30], "baseline": [0.33, 0.33],
                           "low": [0.85, 0.25], "high": [0.95, 0.35], "n": [40, 40],
                           "verdict": ["no evidence", "evidence"]})
    table = _table({"probes": probes})
    assert table.loc["probe: source", "detail"].startswith("no evidence:")
    assert table.loc["probe: context", "detail"].startswith("evidence:")
    # A table from before the verdict column: the probes' rule on its interval.
    table = _table({"probes": probes.drop(columns="verdict")})
    assert table.loc["probe: source", "detail"].startswith("evidence:")
    assert table.loc["probe: context", "detail"].startswith("no evidence:")


def test_only_findings_the_paper_gives_nothing_for_are_paper_silent():
    table = _table({"uniqueness": _uniqueness(12, same=0.8, other=0.2)})
    assert not fd.paper_silent(table).any()  # the paper takes a side: closer
    assert (table["verdict"] == "disagrees").any()


def _capacity(n_texts: int, reached: int) -> pd.DataFrame:
    """A capacity table whose every text reconstructs the lengths up to `reached`."""
    return pd.DataFrame([
        {"text_id": f"t{i}", "source": "builtin", "seed": 0, "method": "one-step",
         "arrangement": "e m*", "length": length, "accuracy": 1.0, "c_tokens": length,
         "reconstructed": length <= reached, "h_lm_nats": 1.0 * length, "h_lm_bits": 1.0}
        for i in range(n_texts) for length in (64, 90, 128, 181)])


def test_a_capacity_below_the_papers_is_a_lower_bound_not_a_disagreement():
    pythia = {"model": {"name": "EleutherAI/pythia-160m"},
              "config": {"recipe": {"max_steps": 300}}}
    below = fd.findings({"capacity": _capacity(6, 64)}.get, SOLUTIONS, pythia).iloc[0]
    assert below["high"] < below["paper"] == 128
    assert below["verdict"] == "inconclusive" and below["evidence"] == "bounded search"
    assert below["detail"].startswith("a lower bound: the search reached 64 within its budget; "
                                      "at most 300 steps a length")
    above = fd.findings({"capacity": _capacity(6, 181)}.get, SOLUTIONS, pythia).iloc[0]
    assert above["low"] > 128 and above["verdict"] == "agrees"
    table = fd.findings({"capacity": _capacity(6, 64)}.get, SOLUTIONS, pythia)
    assert "inconclusive (a lower bound: the search reached 64 within its budget)" in fd.as_text(table)


def test_capacity_compares_with_the_paper_only_on_its_models():
    cap = _capacity(6, 128)
    pythia = fd.findings({"capacity": cap}.get, SOLUTIONS, {"model": {"name": "EleutherAI/pythia-160m"}})
    assert pythia.iloc[0]["paper"] == 128 and pythia.iloc[0]["verdict"] == "agrees"
    other = fd.findings({"capacity": cap}.get, SOLUTIONS, {"model": {"name": "smollm2-135m"}})
    assert np.isnan(other.iloc[0]["paper"]) and other.iloc[0]["verdict"] == "inconclusive"
    assert fd.paper_silent(other).all() and not fd.paper_silent(pythia).any()


def test_no_tables_no_findings():
    table = fd.findings({}.get, SOLUTIONS, {})
    assert table.empty and list(table.columns) == fd.COLUMNS


@pytest.fixture(scope="module")
def tiny_copy(tmp_path_factory):
    path, loaded = tiny_run()
    copy = tmp_path_factory.mktemp("findings") / "run"
    shutil.copytree(path, copy)
    return RunStore.open(copy), loaded


OPTIONS = {"connectivity": {"grid": 7, "bezier_steps": 10, "samples_per_step": 2,
                            "check_every": 5, "cross_text_pairs": 1, "max_pairs": 1}}


def test_analyze_writes_findings_and_recomputes_under_other_options(tiny_copy):
    store, loaded = tiny_copy
    first = run_analyses(store, only=["connectivity"], loaded=loaded, quiet=True,
                         options=OPTIONS)
    assert first["connectivity"] is not None
    table = store.analysis("findings")
    assert list(table.columns[:7]) == ["finding", "estimate", "low", "high", "n", "paper",
                                      "verdict"]
    assert "curve keeps the text (share held)" in set(table["finding"])
    assert set(table["verdict"]) <= set(fd.VERDICTS)
    stamp = store.manifest["analyses"]["connectivity"]["options"]
    assert stamp["bezier_steps"] == 10 and stamp["max_pairs"] == 1
    # The same options again: up to date. Other options: the table is recomputed.
    again = run_analyses(store, only=["connectivity"], loaded=loaded, quiet=True,
                         options=OPTIONS)
    assert again["connectivity"] is None
    other = {"connectivity": {**OPTIONS["connectivity"], "bezier_steps": 4}}
    third = run_analyses(store, only=["connectivity"], loaded=loaded, quiet=True, options=other)
    assert third["connectivity"] is not None
    pairs = store.analysis("connectivity_pairs")
    assert (pairs["bezier_steps"] == 4).all()
    assert store.manifest["analyses"]["connectivity"]["options"]["bezier_steps"] == 4


CHEAP = {"uniqueness": {"semantic": False},
         "information": {"throughput_batches": (1,), "repeats": 1}}


def test_a_bumped_analysis_version_recomputes_that_analysis_alone(tiny_copy, monkeypatch):
    from protoscope.analysis import information

    store, loaded = tiny_copy
    names = ["uniqueness", "information"]
    run_analyses(store, only=names, loaded=loaded, quiet=True, options=CHEAP)
    assert store.manifest["analyses"]["information"]["version"] == information.VERSION
    again = run_analyses(store, only=names, loaded=loaded, quiet=True, options=CHEAP)
    assert again == {"uniqueness": None, "information": None}  # nothing changed: up to date
    monkeypatch.setattr(information, "VERSION", information.VERSION + 1)
    bumped = run_analyses(store, only=names, loaded=loaded, quiet=True, options=CHEAP)
    assert bumped["uniqueness"] is None and bumped["information"] is not None
    assert store.manifest["analyses"]["information"]["version"] == information.VERSION
    # A manifest from before versions: its stamp is out of date, not an error.
    old = {**store.manifest["analyses"]}
    old["uniqueness"] = {k: v for k, v in old["uniqueness"].items() if k != "version"}
    store.update_manifest(analyses=old)
    last = run_analyses(store, only=names, loaded=loaded, quiet=True, options=CHEAP)
    assert last["uniqueness"] is not None and last["information"] is None


def test_one_texts_findings_resample_its_pairs():
    pairs = pd.concat([_pairs(1, False, True, 1.1)] * 6, ignore_index=True)  # t0, 6 pairs each
    other = _pairs(4, True, True, 1.1)
    other = other[other["text_a"] != "t0"]
    table = fd.text_findings({"connectivity_pairs": pd.concat([pairs, other])}.get, SOLUTIONS,
                             {}, "t0").set_index("finding")
    row = table.loc["curve keeps the text (share held)"]
    assert row["unit"] == "pairs" and row["n"] == 6 and row["estimate"] == 1.0
    assert table.loc["straight path keeps the text", "estimate"] == 0.0  # t0's own, not t1-t3


def test_the_printed_table_carries_the_runs_own_answer_where_the_paper_is_silent():
    """A terminal shows no detail column: a probe row must still say "no evidence" there,
    and a row the paper gives a value for keeps its bare verdict."""
    table = pd.DataFrame([
        {"finding": "probe: source from e", "estimate": 0.54, "low": 0.47, "high": 0.60,
         "n": 182, "paper": np.nan, "verdict": "inconclusive", "unit": "accuracy",
         "claim": f"{fd.NO_PAPER_VALUE}: it reports no probes",
         "detail": "no evidence: out-of-fold accuracy vs baseline 0.58"},
        {"finding": "straight path keeps the text", "estimate": 0.0, "low": 0.0, "high": 0.0,
         "n": 5, "paper": 0.0, "verdict": "agrees", "unit": "share",
         "claim": "the straight path breaks", "detail": "worst accuracy: 0.00"},
    ])
    lines = fd.as_text(table).splitlines()
    assert "inconclusive (no evidence)" in lines[1]
    assert lines[2].rstrip().endswith("agrees") and "(" not in lines[2].split("agrees")[-1]


def _geometry_tables() -> dict:
    probes = pd.DataFrame({"target": ["source"], "metric": ["accuracy"], "score": [0.9],
                           "baseline": [0.33], "low": [0.85], "high": [0.95], "n": [40],
                           "verdict": ["evidence"]})
    return {"uniqueness": _uniqueness(12, same=0.2, other=0.8),
            "connectivity_pairs": _pairs(12, False, True, 1.1),
            "capacity": _capacity(6, 128), "probes": probes}


GEOMETRY = ("same-text solutions closer than different-text", "straight path keeps the text",
            "curve keeps the text (share held)", "curve length ratio (held curves)",
            "probe: source")
PYTHIA = {"model": {"name": "EleutherAI/pythia-160m"}}


def test_an_encoder_started_runs_geometry_findings_are_inconclusive_unless_allowed():
    solutions = pd.DataFrame({"share": ["none"] * 4, "init_from": [-1] * 4,
                              "start": ["encoder:enc"] * 3 + ["embedding"]})
    table = fd.findings(_geometry_tables().get, solutions, PYTHIA).set_index("finding")
    for finding in GEOMETRY:
        assert table.loc[finding, "verdict"] == "inconclusive", finding
        assert table.loc[finding, "detail"].startswith(
            "solutions started from a learned encoder (encoder:enc on 3 of 4 solutions)"), finding
    assert "with --allow-learned-starts: agrees" in table.loc["straight path keeps the text", "detail"]
    # capacity does not rest on the seeds' spread: its verdict stands
    assert table.loc["capacity (tokens, median over texts)", "verdict"] == "agrees"
    assert "inconclusive (solutions started from a learned encoder)" in fd.as_text(table.reset_index())
    allowed = fd.findings(_geometry_tables().get, solutions, PYTHIA,
                          allow_learned_starts=True).set_index("finding")
    for finding in GEOMETRY[:4]:
        assert allowed.loc[finding, "verdict"] == "agrees", finding
    assert not allowed["detail"].str.startswith(fd.LEARNED_START).any()
    # the choice analyze recorded in the manifest is the default
    recorded = fd.findings(_geometry_tables().get, solutions,
                           {**PYTHIA, "allow_learned_starts": True}).set_index("finding")
    assert recorded["verdict"].equals(allowed["verdict"])


def test_a_run_without_a_start_column_is_read_from_its_manifest():
    manifest = {**PYTHIA, "config": {"start": "encoder:/runs/enc", "recipe": {"init": "embedding"}},
                "start": {"spec": "encoder:/runs/enc", "encoder": "/runs/enc"}}
    solutions = pd.DataFrame({"share": ["none"] * 2, "init_from": [-1, -1]})
    table = fd.findings(_geometry_tables().get, solutions, manifest).set_index("finding")
    assert table.loc["straight path keeps the text", "detail"].startswith(
        "solutions started from a learned encoder (encoder:enc on 2 of 2 solutions)")
    plain = fd.findings(_geometry_tables().get, solutions,
                        {**PYTHIA, "config": {"recipe": {"init": "embedding"}}})
    assert not plain["detail"].str.startswith(fd.LEARNED_START).any()
