"""Information content: the information, prompting, attention and throughput tables of a tiny
fitted run (probes: test_probes.py)."""

import math

import numpy as np
import pytest

from protoscope.analysis import information
from protoscope.geometry.store.runstore import RunStore
from protoscope.geometry.tables import reconstructed

from tiny_run import LENGTH, SEEDS, TEXTS, tiny_run




@pytest.fixture(scope="module")
def run():
    path, loaded = tiny_run()
    store = RunStore.open(path)
    return store, loaded, information.analyze(store, loaded, repeats=1)


def test_information_table(run):
    store, loaded, tables = run
    info = tables["information"]
    assert sorted(info["text_id"]) == sorted(t for t, *_ in TEXTS)
    assert np.allclose(info["h_lm_bits"], info["h_lm_nats"] / math.log(2))
    assert (info["h_lm_nats"] > 0).all() and (info["length"] == LENGTH).all()
    # nothing shared: both vectors are per text, 2 d dimensions
    assert np.allclose(info["bits_per_dimension"], info["h_lm_bits"] / (2 * loaded.info.d_model))
    rows = store.solutions()
    best = rows.groupby("text_id")["c_tokens"].max()
    assert (info.set_index("text_id")["c_tokens"] == best.loc[info["text_id"]].to_numpy()).all()
    exact = set(rows.loc[reconstructed(rows["accuracy"]), "text_id"])
    assert all((c == LENGTH) == (t in exact) for t, c in zip(info["text_id"], info["capacity"]))


def test_prompting_table(run):
    store, _, tables = run
    prompting, rows = tables["prompting"], store.solutions()
    assert len(prompting) == len(rows)
    assert prompting["token_overlap"].between(0, 1).all()
    assert (prompting["aligned_from"] == 1).all()  # `bos e m*`: m's output is t_2
    # By causality the prompt's last output IS the one-step output there: exact solutions
    # must continue with their own t_2.
    exact = rows.loc[rows["accuracy"] == 1.0, "solution_id"]
    assert len(exact)
    assert prompting.set_index("solution_id").loc[exact, "first_token_match"].all()


def test_attention_table(run):
    _, loaded, tables = run
    att = tables["attention"]
    assert len(att) == loaded.info.n_layers * 3
    assert set(att["slot"]) == {"bos", "e", "m"}
    per_layer = att.groupby("layer")["attention_mass"].sum()
    assert (per_layer <= 1 + 1e-5).all()
    assert np.allclose(per_layer, 1.0, atol=1e-4)  # under `bos e m*` every key is one of them
    assert loaded.model.config._attn_implementation != "eager"  # restored afterwards


def test_throughput_table(run):
    _, _, tables = run
    tp = tables["throughput"]
    assert set(tp["method"]) == {"one-step", "autoregressive"}  # no [mem] rows: the stand-in
    assert (tp.loc[tp["method"] == "autoregressive", "stand_in"] == "first token of the text").all()
    # batch sizes (1, 64): one solution, then all of the run's (64 is more than it has)
    assert sorted(tp["batch"]) == [1, 1, len(TEXTS) * SEEDS, len(TEXTS) * SEEDS]
    assert (tp["tokens"] == tp["batch"] * LENGTH).all()
    assert (tp["tokens_per_second"] > 0).all()
    assert (tp.loc[tp["method"] == "one-step", "accuracy"] > 0.5).all()
