"""Information content: probes that beat chance only when there is something to find, and the
information, prompting, attention and throughput tables of a tiny fitted run."""

import math

import numpy as np
import pytest
import torch

from protoscope.analysis import information
from protoscope.analysis.probes import probe
from protoscope.geometry.store import RunStore
from protoscope.geometry.tables import reconstructed

from tiny_run import LENGTH, SEEDS, TEXTS, tiny_run




def _clusters(seed=0, classes=3, per_class=20, d=16, spread=4.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (classes, d))
    y = np.repeat(np.arange(classes), per_class)
    return centres[y] + rng.normal(0, 1, (len(y), d)), y


def test_probe_finds_separable_labels():
    x, y = _clusters()
    result = probe(x, y, seed=0)
    assert result["accuracy"] >= 0.95
    assert result["chance"] == pytest.approx(1 / 3)
    assert result["shuffled_accuracy"] < result["chance"] + 0.2
    assert result["folds"] == 5 and result["cv"] == "stratified" and result["n"] == 60


def test_probe_does_not_beat_chance_on_shuffled_labels():
    x, y = _clusters(seed=1)
    y = np.random.default_rng(1).permutation(y)  # labels unrelated to the features
    result = probe(x, y, seed=0)
    assert result["accuracy"] < result["chance"] + 0.2


def test_probe_groups_folds_by_text_when_it_can():
    x, y = _clusters(seed=2, classes=2, per_class=12)
    groups = np.array([f"text{i // 3}" for i in range(len(y))])  # 3 solutions per text
    result = probe(x, y, groups, max_folds=3)
    assert result["cv"] == "stratified-group" and result["folds"] == 3
    assert result["accuracy"] >= 0.9


def test_probe_skips_what_cannot_be_probed():
    x, _ = _clusters(per_class=4)
    assert probe(x, ["a"] * len(x)) is None  # one class
    assert probe(x, ["a"] * (len(x) - 1) + ["b"]) is None  # a singleton class is dropped
    with pytest.raises(ValueError, match="max_folds"):
        probe(x, ["a", "b"] * (len(x) // 2), max_folds=1)


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


def test_probe_table(run):
    _, _, tables = run
    probes = tables["probes"]
    # tiny run: source has 2 classes (generated, builtin); context_id one (c0) and is skipped
    assert set(probes["target"]) == {"source", "first_token"}
    assert set(probes["features"]) == {"e", "m", "e+m"}
    assert probes["accuracy"].between(0, 1).all() and probes["chance"].between(0, 1).all()
    assert (probes["n"] == len(TEXTS) * SEEDS).all()


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
