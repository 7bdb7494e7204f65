"""Uniqueness: pair distances, pair kinds, AUC summary, text-distance bins, seed protocol."""

import itertools
import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch

from protoscope.analysis import uniqueness as uq
from protoscope.geometry.store.runstore import RunStore
from protoscope.geometry.store.texts import Text
from tiny_run import LENGTH, SEEDS, single_thread, tiny_run


def _text(text_id, context=None, words="alpha beta gamma"):
    return Text(text_id, "generated" if context else "builtin", context, words, (1, 2, 3))


def _rows(text_ids, share="none", arrangement="bos e m*", length=3, method="one-step"):
    n = len(text_ids)
    return pd.DataFrame({"solution_id": np.arange(n) + 10, "text_id": text_ids,
                         "length": length, "arrangement": arrangement, "share": share,
                         "method": method, "accuracy": 1.0})


def test_distances_match_hand_computation():
    texts = {"a": _text("a"), "b": _text("b", words="delta epsilon")}
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    m = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, -1.0]])
    pairs = uq.pair_table(_rows(["a", "b", "a"]), e, m, texts, semantic=False)
    got = pairs.set_index(["vector", "solution_a", "solution_b"])
    # e: (10, 11) orthogonal; (10, 12) parallel, 1 apart
    assert got.loc[("e", 10, 11), "cosine_distance"] == pytest.approx(1.0)
    assert got.loc[("e", 10, 11), "l2_distance"] == pytest.approx(math.sqrt(2))
    assert got.loc[("e", 10, 12), "cosine_distance"] == pytest.approx(0.0, abs=1e-12)
    assert got.loc[("e", 10, 12), "l2_distance"] == pytest.approx(1.0)
    # m: (10, 12) opposite
    assert got.loc[("m", 10, 12), "cosine_distance"] == pytest.approx(2.0)
    # e+m [1, 0, 0, 1] vs [0, 1, 0, 1]: cos = 1/2; vs [2, 0, 0, -1]: cos = 1/sqrt(10)
    assert got.loc[("e+m", 10, 11), "cosine_distance"] == pytest.approx(0.5)
    assert got.loc[("e+m", 10, 12), "cosine_distance"] == pytest.approx(1 - 1 / math.sqrt(10))
    assert got.loc[("e+m", 10, 12), "l2_distance"] == pytest.approx(math.sqrt(1 + 4))
    assert len(pairs) == 3 * 3  # 3 pairs x 3 vectors
    # same text: text distances exactly 0; disjoint words: TF-IDF distance 1
    assert got.loc[("e", 10, 12), "tfidf_distance"] == 0.0
    assert got.loc[("e", 10, 11), "tfidf_distance"] == pytest.approx(1.0)
    assert pairs["semantic_distance"].isna().sum() == 6  # semantic off: NaN, except same text


def test_pair_kinds_on_a_constructed_table():
    texts = {"a": _text("a", "c0"), "b": _text("b", "c0"), "c": _text("c", "c1"),
             "d": _text("d"), "f": _text("f")}
    e = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    pairs = uq.pair_table(_rows(["a", "a", "b", "c", "d", "f"]), e, e.clone(), texts,
                          semantic=False)
    kinds = {(r.text_a, r.text_b): r.pair_kind for r in pairs.itertuples()}
    assert kinds[("a", "a")] == "same_text"
    assert kinds[("a", "b")] == "same_context"
    assert kinds[("a", "c")] == "different_context"
    assert kinds[("d", "f")] == "different_context"  # two null contexts are not one context
    counts = pairs[pairs["vector"] == "e"]["pair_kind"].value_counts()
    assert counts.to_dict() == {"different_context": 12, "same_context": 2, "same_text": 1}


def test_shared_m_and_other_cohorts_are_left_out():
    texts = {"a": _text("a"), "b": _text("b")}
    e = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    rows = _rows(["a", "b", "a", "b"], share="m")
    rows.loc[3, "length"] = 5  # a different cohort: never paired
    rows.loc[2, "method"] = "mem"
    pairs = uq.pair_table(rows, e, e.clone(), texts, semantic=False)
    # a shared m is no solution's own, so neither is [e; m]: only e is compared
    assert set(pairs["vector"]) == {"e"}
    assert set(zip(pairs["solution_a"], pairs["solution_b"])) == {(10, 11)}


def test_auc_is_one_when_separable_and_near_half_when_shuffled():
    rng = np.random.default_rng(0)
    near, far = rng.uniform(0.1, 0.4, 300), rng.uniform(0.5, 0.9, 300)
    auc, p = uq.auc_test(near, far)
    assert auc == 1.0 and p < 1e-50
    assert uq.auc_test(far, near)[0] == 0.0
    mixed = rng.permutation(np.concatenate([near, far]))
    auc, p = uq.auc_test(mixed[:300], mixed[300:])
    assert abs(auc - 0.5) < 0.08 and p > 0.01
    assert all(math.isnan(x) for x in uq.auc_test([], far))


def test_summary_reads_pair_kinds():
    rng = np.random.default_rng(1)
    kinds = ["same_text"] * 20 + ["same_context"] * 30 + ["different_context"] * 50
    base = {"same_text": 0.2, "same_context": 0.6, "different_context": 0.8}
    pairs = pd.DataFrame({"vector": "e", "pair_kind": kinds,
                          "cosine_distance": [base[k] + rng.uniform(0, 0.1) for k in kinds]})
    summary = uq.summarize(pairs).set_index("comparison")
    assert summary.loc["same_text<different_text", "auc"] == 1.0
    assert summary.loc["same_context<different_context", "auc"] == 1.0
    assert summary.loc["same_text<different_text", ["n_a", "n_b"]].tolist() == [20, 80]


def test_bins_compare_kinds_within_text_distance_quantiles():
    rng = np.random.default_rng(2)
    n = 400
    kind = np.where(rng.random(n) < 0.5, "same_context", "different_context")
    tfidf = rng.uniform(0, 1, n)
    cos = tfidf * 0.5 + np.where(kind == "same_context", 0.1, 0.3)
    pairs = pd.DataFrame({"vector": "e+m", "pair_kind": kind, "tfidf_distance": tfidf,
                          "semantic_distance": np.nan, "cosine_distance": cos})
    bins = uq.bin_medians(pairs, n_bins=4)
    assert set(bins["text_distance"]) == {"tfidf"}  # all-NaN semantic: no bins
    assert bins.groupby("pair_kind")["n"].sum().sum() == n
    assert sorted(set(bins["bin_low"])) == pytest.approx(np.quantile(tfidf, [0, .25, .5, .75]))
    wide = bins.pivot(index="bin_low", columns="pair_kind", values="median_cosine_distance")
    assert (wide["same_context"] < wide["different_context"]).all()


def test_semantic_failure_gives_nan_and_a_warning(monkeypatch, caplog):
    def broken(path):
        raise OSError("no model here")

    monkeypatch.setattr(uq, "_sentence_model", broken)
    with caplog.at_level(logging.WARNING):
        assert uq.semantic_distances(["a b", "c d"]) is None
    assert "semantic text distance unavailable" in caplog.text


def test_semantic_distance_with_minilm():
    d = uq.semantic_distances(["The cat sat on the mat.", "A cat was sitting on the mat.",
                               "Quarterly revenue fell by four percent."])
    assert d is not None and d.shape == (3, 3)
    assert d[0, 1] < d[0, 2] and abs(d[0, 0]) < 1e-5


def test_analyze_on_the_tiny_run():
    path, loaded = tiny_run()
    with single_thread():
        tables = uq.analyze(RunStore.open(path), loaded, semantic=False, n_bins=2)
    pairs = tables["uniqueness"]
    n = 3 * SEEDS
    assert len(pairs) == 3 * n * (n - 1) // 2
    per_kind = pairs[pairs["vector"] == "e"]["pair_kind"].value_counts().to_dict()
    assert per_kind == {"same_text": 3 * SEEDS * (SEEDS - 1) // 2, "same_context": SEEDS ** 2,
                        "different_context": 2 * SEEDS ** 2}
    assert (pairs["tfidf_distance"].between(0, 1)).all()
    assert list(tables["uniqueness_summary"].columns) == uq.SUMMARY_COLUMNS
    assert len(tables["uniqueness_summary"]) == 6
    assert set(tables["uniqueness_bins"]["text_distance"]) == {"tfidf"}
    # distances are on the fitted prefix: two 6-token prefixes share "the old ... to the"
    t0_t1 = pairs[(pairs["text_a"] != pairs["text_b"]) & pairs["pair_kind"].eq("same_context")]
    assert t0_t1["tfidf_distance"].iloc[0] < 1.0
    assert LENGTH == 6


def _clustered_pairs(n_texts: int, per_text: int, gap: float, spread: float,
                     seed: int) -> pd.DataFrame:
    """Every pair of n_texts x per_text solutions: same-text pairs `gap` closer, and each text
    moving all its pairs by its own offset (N(0, spread)), so pairs sharing a text agree."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(0, spread, n_texts)
    solutions = [t for t in range(n_texts) for _ in range(per_text)]
    rows = [{"text_a": f"t{a}", "text_b": f"t{b}",
             "pair_kind": "same_text" if a == b else "different_context",
             "cosine_distance": 0.5 - gap * (a == b) + offset[a] + offset[b] + rng.normal(0, 0.02)}
            for a, b in itertools.combinations(solutions, 2)]
    return pd.DataFrame(rows)


def _pair_bootstrap(closer, farther, resamples=1000, seed=0):
    """The interval auc_interval gave before: each group of pairs resampled on its own."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        a, b = rng.choice(closer, len(closer)), rng.choice(farther, len(farther))
        values.append((a[:, None] < b[None, :]).mean() + 0.5 * (a[:, None] == b[None, :]).mean())
    return np.quantile(values, 0.025), np.quantile(values, 0.975)


NEAR, FAR = ("same_text",), ("different_context",)


def test_auc_interval_brackets_the_auc_and_follows_the_separation():
    pairs = _clustered_pairs(8, 3, gap=0.3, spread=0.02, seed=0)
    closer = pairs.loc[pairs["pair_kind"] == "same_text", "cosine_distance"]
    farther = pairs.loc[pairs["pair_kind"] != "same_text", "cosine_distance"]
    auc, low, high, n = uq.auc_interval(pairs, NEAR, FAR, resamples=300)
    assert auc == pytest.approx(uq.auc_test(closer, farther)[0]) and n == 8
    assert low <= auc <= high and low > 0.8
    _, low, high, _ = uq.auc_interval(pairs, FAR, NEAR, resamples=300)  # the other way round
    assert high < 0.2
    _, low, high, _ = uq.auc_interval(_clustered_pairs(8, 3, 0.0, 0.02, 1), NEAR, FAR,
                                      resamples=300)
    assert low < 0.5 < high
    few = pairs[pairs["text_a"].isin(["t0", "t1", "t2"]) & pairs["text_b"].isin(["t0", "t1", "t2"])]
    assert np.isnan(uq.auc_interval(few, NEAR, FAR)[1])  # 3 texts: no interval


def test_auc_interval_resamples_texts_so_shared_texts_widen_it():
    # Most of the spread is the texts' own, and every text is in many pairs: resampling pairs
    # as if independent hides that, resampling texts shows it.
    pairs = _clustered_pairs(8, 3, gap=0.1, spread=0.1, seed=1)
    closer = pairs.loc[pairs["pair_kind"] == "same_text", "cosine_distance"].to_numpy()
    farther = pairs.loc[pairs["pair_kind"] != "same_text", "cosine_distance"].to_numpy()
    old_low, old_high = _pair_bootstrap(closer, farther)
    auc, low, high, n = uq.auc_interval(pairs, NEAR, FAR, seed=0)
    assert n == 8 and low <= auc <= high
    assert high - low >= 1.5 * (old_high - old_low)  # at least as wide, here by far


def test_weighted_auc_is_sklearns():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    score = np.round(rng.normal(size=40), 1)  # with ties
    positive = rng.random(40) < 0.4
    weights = rng.integers(0, 4, 40).astype(float)
    expected = roc_auc_score(positive, score, sample_weight=weights)
    assert uq.weighted_auc(score, positive)(weights) == pytest.approx(expected)


# ------------------------------------------------------------------------------ sampled pairs


def _contexts_run(n_contexts=6, texts_per_context=4, seeds=3, seed=0):
    """Solutions of generated texts (contexts of several texts, several seeds each) whose e
    sits near its context's centre and nearer still to its text's: same-text pairs closest,
    same-context pairs next, different contexts farthest."""
    g = torch.Generator().manual_seed(seed)
    texts, ids, vectors = {}, [], []
    for c in range(n_contexts):
        centre = torch.randn(8, generator=g) * 3
        for t in range(texts_per_context):
            text_id = f"c{c}t{t}"
            texts[text_id] = _text(text_id, f"c{c}", words=f"w{c} x{t} shared")
            own = centre + torch.randn(8, generator=g)
            for _ in range(seeds):
                ids.append(text_id)
                vectors.append(own + 0.7 * torch.randn(8, generator=g))
    e = torch.stack(vectors)
    return _rows(ids), e, e.clone(), texts


def test_sample_pairs_is_stratified_uniform_and_weighted():
    rows, _, _, texts = _contexts_run()
    text_ids = rows["text_id"].to_numpy()
    contexts = [texts[t].context_id for t in text_ids]
    counts = uq.pair_counts(text_ids, contexts)
    assert counts == {"same_text": 72, "same_context": 324, "different_context": 2160}
    ia, ib, weight = uq.sample_pairs(text_ids, contexts, 600, np.random.default_rng(0))
    assert (ia < ib).all() and len(set(zip(ia, ib))) == len(ia) == 600
    kinds = pd.Series([uq.pair_kind(text_ids[a], text_ids[b], contexts[a], contexts[b])
                       for a, b in zip(ia, ib)])
    # 600 split evenly: same_text has only 72, so its rest goes to the other two
    assert kinds.value_counts().to_dict() == {"same_context": 264, "different_context": 264,
                                              "same_text": 72}
    for kind, n in counts.items():
        assert weight[(kinds == kind).to_numpy()] == pytest.approx(n / (kinds == kind).sum())


def test_sampled_pairs_estimate_the_full_tables_aucs():
    """A sample of 15% of the pairs: the weighted AUCs match all pairs' (the pooled comparison
    same_text<different_text included, whose two kinds are sampled at different rates), the
    summary says how many pairs the sample stands for, and the interval still comes."""
    rows, e, m, texts = _contexts_run(n_contexts=10, texts_per_context=5)
    full = uq.pair_table(rows, e, m, texts, semantic=False)
    sampled = uq.pair_table(rows, e, m, texts, semantic=False, max_pairs=1500)
    assert len(sampled) < 0.2 * len(full) and (full["weight"] == 1).all()
    a = uq.summarize(full).set_index(["vector", "comparison"])
    b = uq.summarize(sampled).set_index(["vector", "comparison"])
    assert (b["n_a"] < a["n_a"]).any() and (b["pairs_a"] == a["n_a"]).all() and (b["pairs_b"] == a["n_b"]).all()
    assert np.allclose(b["auc"], a["auc"], atol=0.03), (a["auc"], b["auc"])
    near, far = uq.COMPARISONS["same_context<different_context"]
    auc, low, high, n = uq.auc_interval(sampled[sampled["vector"] == "e"], near, far, resamples=200)
    assert low <= auc <= high and n == 50
    assert auc == pytest.approx(a.loc[("e", "same_context<different_context"), "auc"], abs=0.03)
