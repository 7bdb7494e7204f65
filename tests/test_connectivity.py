"""The connectivity analysis on a tiny fitted run: table shapes, endpoints that reproduce the
solutions, summaries consistent with the grids, cross-text pairs scored against both texts."""

import numpy as np
import pandas as pd
import pytest

from protoscope.analysis import connectivity
from protoscope.geometry.errors import ProtoscopeError
from protoscope.geometry.store.runstore import RunStore

from tiny_run import LENGTH, tiny_run

GRID = 11
COLUMNS = {  # docs/tables.md
    "connectivity": ["pair_id", "solution_a", "solution_b", "same_text", "path", "t", "accuracy",
                     "loss"],
    "connectivity_pairs": ["pair_id", "solution_a", "solution_b", "text_a", "text_b", "same_text",
                           "path", "moved", "min_accuracy", "barrier", "length_ratio", "worst_t",
                           "worst_text", "train_steps"],
    "connectivity_tokens": ["pair_id", "path", "t", "position", "token", "correct"],
    "positions": ["solution_id", "position", "target_token", "predicted_token", "correct"],
}




@pytest.fixture(scope="module")
def run():
    path, loaded = tiny_run()
    store = RunStore.open(path)
    tables = connectivity.analyze(store, loaded, grid=GRID, bezier_steps=25, samples_per_step=4,
                                  lr=0.05, cross_text_pairs=2, min_accuracy=0.0)
    return store, tables


def test_tables_follow_the_contract(run):
    _, tables = run
    for name, columns in COLUMNS.items():
        assert set(columns) <= set(tables[name].columns), name
    pairs = tables["connectivity_pairs"]
    same = pairs[pairs["same_text"]]
    assert len(same) == 3 * 3 * 2  # 3 texts x C(3, 2) pairs x (linear, bezier)
    assert set(pairs["moved"]) == {"e+m"}  # nothing is shared in the tiny run
    assert (pairs[["bezier_steps", "samples_per_step", "grid_points"]].iloc[0]
            == [25, 4, GRID]).all()
    curve = tables["connectivity"]
    counts = curve.groupby(["pair_id", "path", "target"]).size()
    assert (counts == GRID).all()
    assert set(curve["t"].round(6)) == set(np.linspace(0, 1, GRID).round(6))


def test_path_ends_reproduce_the_solutions(run):
    store, tables = run
    accuracy = store.solutions().set_index("solution_id")["accuracy"]
    curve = tables["connectivity"]
    own = curve[curve["target"] == "a"]
    for _, row in own[own["t"] == 0.0].iterrows():
        assert row["accuracy"] == pytest.approx(accuracy[row["solution_a"]])
    same = own[own["same_text"] & (own["t"] == 1.0)]
    for _, row in same.iterrows():
        assert row["accuracy"] == pytest.approx(accuracy[row["solution_b"]])


def test_summaries_match_the_grids(run):
    _, tables = run
    curve, pairs = tables["connectivity"], tables["connectivity_pairs"]
    for _, p in pairs.iterrows():
        grid = curve[(curve["pair_id"] == p["pair_id"]) & (curve["path"] == p["path"])
                     & (curve["target"] == p["target"])].sort_values("t")
        assert p["min_accuracy"] == pytest.approx(grid["accuracy"].min())
        ends = (grid["loss"].iloc[0] + grid["loss"].iloc[-1]) / 2
        assert p["barrier"] == pytest.approx(grid["loss"].max() - ends, rel=1e-5)
        assert p["worst_t"] in set(grid.loc[grid["accuracy"] == p["min_accuracy"], "t"])
        if p["same_text"]:  # both ends reconstruct the text: the worst point lies between
            assert 0.0 < p["worst_t"] < 1.0
    linear, bezier = pairs[pairs["path"] == "linear"], pairs[pairs["path"] == "bezier"]
    assert np.allclose(linear["length_ratio"], 1.0, atol=1e-4)
    assert (bezier["length_ratio"] >= 1.0 - 1e-4).all()
    assert (linear["train_steps"] == 0).all()
    assert len(bezier) and bezier["train_steps"].between(1, 25).all()  # within the budget


def test_trained_curves_lower_the_barrier(run):
    """Findings 3 and 4 on the tiny model: every straight segment between two solutions of a
    text climbs a real loss barrier (25 to 46 nats here), and every trained curve cuts it by
    far more than float noise (to 0.22-0.58 of it here) and loses less along its whole grid."""
    _, tables = run
    pairs = tables["connectivity_pairs"]
    same = pairs[pairs["same_text"]].pivot(index="pair_id", columns="path", values="barrier")
    assert len(same) == 9 and (same["linear"] > 10.0).all()
    assert (same["bezier"] < 0.75 * same["linear"]).all()
    curve = tables["connectivity"]
    mean_loss = curve[curve["same_text"]].groupby(["pair_id", "path"])["loss"].mean().unstack()
    assert (mean_loss["bezier"] < 0.8 * mean_loss["linear"]).all()


def test_cross_text_pairs_score_both_texts(run):
    store, tables = run
    pairs = tables["connectivity_pairs"]
    cross = pairs[~pairs["same_text"]]
    assert len(cross) == 2 * 2  # two pairs, each against text a and text b, linear only
    assert set(cross["path"]) == {"linear"} and set(cross["target"]) == {"a", "b"}
    assert (cross["text_a"] != cross["text_b"]).all()
    accuracy = store.solutions().set_index("solution_id")["accuracy"]
    curve = tables["connectivity"]
    end_b = curve[~curve["same_text"] & (curve["target"] == "b") & (curve["t"] == 1.0)]
    for _, row in end_b.iterrows():
        assert row["accuracy"] == pytest.approx(accuracy[row["solution_b"]])


def test_token_table_agrees_with_accuracy(run):
    _, tables = run
    tokens, curve = tables["connectivity_tokens"], tables["connectivity"]
    assert len(tokens) == len(curve) * LENGTH
    share = tokens.groupby(["pair_id", "path", "target", "t"])["correct"].mean()
    merged = curve.set_index(["pair_id", "path", "target", "t"])["accuracy"]
    assert np.allclose(share.loc[merged.index].to_numpy(), merged.to_numpy())


def test_positions_table(run):
    store, tables = run
    positions, rows = tables["positions"], store.solutions()
    assert len(positions) == len(rows) * LENGTH
    c_tokens = positions.groupby("solution_id")["correct"].sum()
    assert (c_tokens.loc[rows["solution_id"]].to_numpy() == rows["c_tokens"].to_numpy()).all()
    right = positions[positions["correct"]]
    assert (right["target_token"] == right["predicted_token"]).all()


def test_sampling_and_shared_m():
    rows = pd.DataFrame({"solution_id": range(5), "text_id": "t", "length": 6,
                         "arrangement": "bos e m*", "e_index": range(5), "m_index": 0})
    every = connectivity.same_text_pairs(rows, None, seed=0)
    assert len(every) == 10 and {p.moved for p in every} == {"e"}  # a shared m stays put
    few = connectivity.same_text_pairs(rows, 3, seed=0)
    assert len(few) == 3
    assert [(p.a["solution_id"], p.b["solution_id"]) for p in few] == \
        [(p.a["solution_id"], p.b["solution_id"]) for p in connectivity.same_text_pairs(rows, 3, 0)]


def test_bad_options_raise():
    path, loaded = tiny_run()
    with pytest.raises(ProtoscopeError, match="--pairs must be an integer >= 1 or all, got 0"):
        connectivity.analyze(RunStore.open(path), loaded, max_pairs=0)
