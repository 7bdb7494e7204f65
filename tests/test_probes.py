"""Probes: evidence where a signal is planted, "no evidence" where labels are shuffled or only
same-text seeds could give the answer away; the run's probes table on planted vectors."""

import numpy as np
import pandas as pd
import pytest
import torch

from protoscope.analysis import probes
from protoscope.analysis.probes import COLUMNS, macro_auc, score_probe
from protoscope.geometry.errors import ProtoscopeError
from protoscope.geometry.store.runstore import RunStore
from protoscope.geometry.store.texts import Text

FAST = dict(permutations=3, resamples=300)


def _clusters(seed=0, classes=3, per_class=20, d=16, spread=3.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (classes, d))
    y = np.repeat(np.arange(classes), per_class)
    return centres[y] + rng.normal(0, 1, (len(y), d)), y


def test_planted_classes_are_evidence():
    x, y = _clusters()
    r = score_probe(x, y, np.arange(len(y)), "classify", **FAST)
    assert r["verdict"] == "evidence" and r["score"] >= 0.9
    assert r["low"] <= r["score"] <= r["high"] and r["low"] > r["baseline"]
    assert r["chance"] == pytest.approx(1 / 3) and r["n"] == 60 and r["metric"] == "accuracy"


def test_shuffled_labels_are_no_evidence():
    x, y = _clusters(seed=1)
    y = np.random.default_rng(1).permutation(y)
    r = score_probe(x, y, np.arange(len(y)), "classify", **FAST)
    assert r["verdict"] == "no evidence" and r["low"] <= r["baseline"]


def test_planted_regression_and_bag_are_evidence_and_noise_is_not():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 12))
    groups = np.arange(80)
    signal = x[:, :3].sum(1) + 0.3 * rng.normal(size=80)
    r = score_probe(x, signal, groups, "regress", **FAST)
    assert r["verdict"] == "evidence" and r["score"] > 0.7 and r["metric"] == "r2"
    noise = score_probe(x, rng.normal(size=80), groups, "regress", **FAST)
    assert noise["verdict"] == "no evidence" and noise["baseline"] == pytest.approx(0.0)
    bag = (x[:, :4] > 0).astype(float)
    r = score_probe(x, bag, groups, "multilabel", **FAST)
    assert r["verdict"] == "evidence" and r["score"] > 0.8 and r["classes"] == 4
    noise = score_probe(rng.normal(size=(80, 12)), bag, groups, "multilabel", **FAST)
    assert noise["verdict"] == "no evidence"


def test_folds_hold_out_whole_texts():
    # Labels drawn at random per text; each text's seeds sit close together. Only a probe that
    # sees a text's other seeds in training could name the label: held-out texts must not.
    rng = np.random.default_rng(3)
    texts = 30
    label = rng.integers(0, 2, texts)
    centre = rng.normal(0, 3, (texts, 8))
    groups = np.repeat(np.arange(texts), 4)
    x = centre[groups] + 0.1 * rng.normal(size=(len(groups), 8))
    r = score_probe(x, label[groups], groups, "classify", **FAST)
    assert r["verdict"] == "no evidence"


def test_macro_auc_matches_definition():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=float)
    perfect = np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.7], [0.2, 0.3]])
    assert macro_auc(y, perfect) == pytest.approx(1.0)
    assert macro_auc(y, -perfect) == pytest.approx(0.0)
    assert macro_auc(y, np.zeros_like(perfect)) == pytest.approx(0.5)  # ties count half


def test_bad_probe_arguments():
    x, y = _clusters(per_class=5)
    with pytest.raises(ValueError, match="kind"):
        score_probe(x, y, np.arange(len(y)), "cluster")
    with pytest.raises(ValueError, match="folds"):
        score_probe(x, y, np.arange(len(y)), "classify", folds=1)


# -- the run's table ------------------------------------------------------------------------------
SOURCES = ("generated", "random", "builtin")
MANIFEST = {"model": {"name": "none", "d_model": 16}, "config": {}}


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    """36 texts x 1 solution whose e holds the text's source and whose m is noise."""
    rng = np.random.default_rng(0)
    d, n = 16, 36
    texts, rows = [], []
    for i in range(n):
        source = SOURCES[i % 3]
        ids = [int(t) for t in rng.integers(5, 40, 8)]
        nll = [float(v) for v in rng.exponential(1.0, 8)]  # H_LM varies between texts
        texts.append(Text(f"t{i:02d}", source, f"c{i % 2}" if source == "generated" else None,
                          f"text {i}", ids, nll))
        rows.append({"text_id": f"t{i:02d}", "seed": 0, "length": 8, "arrangement": "bos e m*",
                     "share": "none", "share_group": -1, "e_row": i, "m_row": i, "accuracy": 1.0,
                     "c_tokens": 8, "loss": 0.0, "steps": 10, "restarts": 0, "seconds": 0.1,
                     "converged": True, "status": "converged", "failure": None, "init_from": -1,
                     "recipe": "default", "method": "one-step"})
    centres = rng.normal(0, 3, (3, d))
    e = torch.tensor(centres[np.arange(n) % 3] + rng.normal(size=(n, d)), dtype=torch.float32)
    m = torch.tensor(rng.normal(size=(n, d)), dtype=torch.float32)
    store = RunStore.create(tmp_path_factory.mktemp("planted") / "run",
                            MANIFEST, texts)
    store.append(rows, e, m)
    return store


def test_run_table_finds_the_planted_source_in_e_only(planted_store):
    table = probes.analyze(planted_store, semantic=False, **FAST)["probes"]
    assert list(table.columns) == COLUMNS
    assert set(table["vector"]) == {"e", "m", "e+m"}
    assert set(table["verdict"]) <= {"evidence", "no evidence"}
    verdict = table.set_index(["target", "vector"])["verdict"]
    assert verdict["source", "e"] == "evidence"
    assert verdict["source", "m"] == "no evidence"
    assert {"h_lm", "bag_of_words", "token@1"} <= set(table["target"])
    # context exists for generated texts only: 12 of them
    assert (table.loc[table["target"] == "context", "n"] == 12).all()


def test_shared_m_is_not_probed(planted_store, tmp_path):
    rows = planted_store.solutions().assign(share="m")
    shared = RunStore.create(tmp_path / "shared", MANIFEST,
                             planted_store.texts())
    _, e, m = planted_store.solution_vectors()
    records = [{**r, "e_row": i, "m_row": 0} for i, r in
               enumerate(rows.drop(columns=["solution_id", "e_index", "m_index"]).to_dict("records"))]
    shared.append(records, e, m[:1])
    table = probes.analyze(shared, semantic=False, **FAST)["probes"]
    assert set(table["vector"]) == {"e"}


def test_bad_analysis_options(planted_store):
    with pytest.raises(ProtoscopeError, match="--probe-positions must be comma-separated integers >= 1"):
        probes.analyze(planted_store, positions=(0,))
    with pytest.raises(ProtoscopeError, match="folds"):
        probes.analyze(planted_store, folds=1)


def test_empty_run_gives_an_empty_table_with_columns(planted_store, tmp_path):
    store = RunStore.create(tmp_path / "bad", MANIFEST,
                            planted_store.texts())
    rows = planted_store.solutions().head(3).assign(accuracy=0.5)
    _, e, m = planted_store.solution_vectors()
    records = [{**r, "e_row": i, "m_row": i} for i, r in
               enumerate(rows.drop(columns=["solution_id", "e_index", "m_index"]).to_dict("records"))]
    store.append(records, e[:3], m[:3])
    table = probes.analyze(store, semantic=False, **FAST)["probes"]
    assert table.empty and list(table.columns) == COLUMNS
    assert isinstance(table, pd.DataFrame)


def test_a_score_above_chance_whose_interval_reaches_the_baseline_is_no_evidence():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 12)
    x = rng.normal(size=(24, 6))
    x[:, 0] += 0.6 * y  # a weak signal at small n
    r = score_probe(x, y, np.arange(24), "classify", **FAST)
    assert r["score"] > r["chance"] and r["low"] <= r["baseline"]
    assert r["verdict"] == "no evidence"


def test_regression_folds_hold_out_whole_texts():
    rng = np.random.default_rng(4)
    texts = 30
    value = rng.normal(size=texts)
    centre = rng.normal(0, 3, (texts, 40))  # wide enough to memorise every training text
    groups = np.repeat(np.arange(texts), 4)
    x = centre[groups] + 0.1 * rng.normal(size=(len(groups), 40))
    r = score_probe(x, value[groups], groups, "regress", **FAST)
    assert r["verdict"] == "no evidence"


def test_a_single_output_target_keeps_its_shape():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 6))
    bag = (x[:, :1] > 0).astype(float)  # one label column
    r = score_probe(x, bag, np.arange(40), "multilabel", **FAST)
    assert r["classes"] == 1 and r["verdict"] == "evidence"


def test_every_probe_and_findings_interval_holds_its_estimate(planted_store, monkeypatch):
    """A wide target the vectors say nothing about (the MiniLM embedding at n = 200 scored
    R^2 -0.013 with an interval of [-0.020, -0.016]): every interval must be one of the
    estimate's own statistic, so it holds the estimate, in the probes table and the findings."""
    from protoscope.analysis.findings import findings

    def unrelated(text, length, loaded):  # unit vectors, one per text, unrelated to e and m
        rng = np.random.default_rng([int(t.text_id[1:]) for t in text])
        y = rng.normal(size=(len(text), 32))
        return y / np.linalg.norm(y, axis=1, keepdims=True)

    monkeypatch.setattr(probes, "_sentence_embeddings", unrelated)
    table = probes.analyze(planted_store, **FAST)["probes"]
    assert "sentence_embedding" in set(table["target"])
    assert table[["score", "low", "high"]].notna().all().all()
    assert ((table["low"] <= table["score"]) & (table["score"] <= table["high"])).all(), \
        table[["target", "vector", "score", "low", "high"]].to_string()
    rows = findings({"probes": table}.get, pd.DataFrame({"share": ["none"]}), {})
    assert len(rows) == len(table)
    assert ((rows["low"] <= rows["estimate"]) & (rows["estimate"] <= rows["high"])).all()


def test_a_score_at_weights_of_one_is_sklearns_and_weights_repeat_rows():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(6)
    y = rng.normal(size=(30, 5)) * [1, 2, 3, 4, 5]
    predicted = y + rng.normal(size=y.shape)
    assert probes._metric("r2", y, predicted) == pytest.approx(
        r2_score(y, predicted, multioutput="variance_weighted"))
    assert probes._metric("r2", y[:, 0], predicted[:, 0]) == pytest.approx(
        r2_score(y[:, 0], predicted[:, 0]))
    # A resample's weights count rows: accuracy and AUC are those of the rows repeated.
    counts = rng.integers(0, 3, 30)
    rows = np.repeat(np.arange(30), counts)
    labels, guesses = rng.integers(0, 3, 30), rng.integers(0, 3, 30)
    assert probes._metric("accuracy", labels, guesses, counts) == pytest.approx(
        np.mean(labels[rows] == guesses[rows]))
    bag = (y > 0).astype(float)
    assert probes._metric("macro_auc", bag, predicted, counts) == pytest.approx(
        macro_auc(bag[rows], predicted[rows]))
