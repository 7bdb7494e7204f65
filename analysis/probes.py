"""What can a linear read-out recover from the proto-tokens, beyond chance, at this n?

Each probe maps one vector of a solution (e; m or [e; m] where those are the solution's own,
see geometry/tables.own_vectors) to a property of its text, and is scored out of fold: folds hold out
whole texts (GroupKFold), so a probe must generalise to texts it has not seen instead of
recognising the other seeds of one text. Targets:
- `source` (built-in prose, generated, random words) and `context` (the context a generated
  text continues; generated texts only): classification accuracy;
- `token@I`: the token at position I (1-based) of the fitted prefix, classes with fewer than
  `min_class` texts dropped: accuracy;
- `bag_of_words`: which tokens of the vocabulary occur in the prefix (multi-label, tokens in
  at least `bag_min` texts and not in all): macro ROC AUC of a ridge read-out;
- `sentence_embedding`: the prefix's all-MiniLM-L6-v2 embedding (384 wide): R^2;
- `h_lm`: the prefix's H_LM in nats (texts not scored yet are scored first, geometry/store/scoring.py,
  when a model is given): R^2.

Every probe is reported beside its baseline, the larger of chance (the majority class share;
AUC 0.5; R^2 0) and the mean score of the same probe trained on labels permuted between texts,
with a 95% interval of its score: the cluster bootstrap over texts (analysis/bootstrap.py) of
the fixed out-of-fold predictions, scored by the estimate's own statistic at each resample's
weights. R^2 stays measured against the mean of all the probed texts, as the estimate is: a
resample's own mean fits the reference to the resample, which pulled every resample's R^2 down
by about (1 - R^2) / (texts - 1) and put a wide target's interval below its own estimate. A
probe whose interval reaches down to the baseline gets the verdict "no evidence": at this n the
number says nothing. A regression target that does not vary among the probed texts is not
probed (R^2 is undefined). Only the largest cohort (one arrangement and length) is probed, and
only its solutions that reconstruct their text (accuracy >= RECONSTRUCTED, 0.99).
Progress (analysis/progress.py): stage "probes" counts the probes (target x vector) scored,
the one in flight beside it.

Table (docs/tables.md): probes.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from protoscope.geometry.errors import ProtoscopeError
from protoscope.geometry.store.scoring import ensure_scored
from protoscope.geometry.tables import VECTORS, columns, reconstructed
from protoscope.analysis.vectors import own_vectors

from .bootstrap import cluster_interval
from .progress import reporter
from .vectors import cohorts, load_solutions, stack

log = logging.getLogger(__name__)
from protoscope.options import takes

from .registry import options_of
from .uniqueness import _sentence_model

VERSION = 1  # of this analysis's numbers: bump it when a change alters them (analysis/run.py)

COLUMNS = columns("probes")
KINDS = {"classify": "accuracy", "multilabel": "macro_auc", "regress": "r2"}
CHANCE = {"macro_auc": 0.5, "r2": 0.0}
EVIDENCE, NO_EVIDENCE = "evidence", "no evidence"
ALPHAS = np.logspace(-2, 5, 15)


# -- one probe --------------------------------------------------------------------------------
def score_probe(x, y, groups, kind: str, *, folds: int = 5, permutations: int = 10,
                resamples: int = 1000, seed: int = 0) -> dict:
    """Out-of-fold score of a linear probe from x [n, d] to y, with baseline, 95% interval
    and verdict.

    kind: `classify` (y [n] labels; accuracy), `multilabel` (y [n, k] 0/1; macro ROC AUC of a
    ridge read-out) or `regress` (y [n] or [n, k]; R^2, variance-weighted over outputs). The
    interval resamples texts (fewer than 5 texts: none, and so no evidence).
    `groups` (the text id) keeps a text's solutions on one side of every split; permutations
    move labels between groups, so the shuffled baseline keeps the same structure.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown probe kind {kind!r}: allowed are {', '.join(KINDS)}")
    if folds < 2 or permutations < 1 or resamples < 1:
        raise ValueError("need folds >= 2, permutations >= 1 and resamples >= 1")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    groups = np.asarray(groups).astype(str)
    n_groups = len(set(groups))
    if len(x) != len(y) or len(x) != len(groups):
        raise ValueError(f"x, y and groups differ in length: {len(x)}, {len(y)}, {len(groups)}")
    if n_groups < 2:
        raise ValueError("a probe needs at least two texts")
    k = min(folds, n_groups)
    if kind == "classify":
        k = min(k, min(Counter(y.tolist()).values())) if len(set(y.tolist())) > 1 else k
        k = max(2, k)
    metric = KINDS[kind]
    rng = np.random.default_rng(seed)
    predicted = _out_of_fold(x, y, groups, kind, k, seed)
    score = _metric(metric, y, predicted)
    shuffled = [_metric(metric, yp, _out_of_fold(x, yp, groups, kind, k, seed))
                for yp in (_permute(y, groups, rng) for _ in range(permutations))]
    shuffled_mean = float(np.nanmean(shuffled)) if np.isfinite(shuffled).any() else np.nan
    chance = (max(Counter(y.tolist()).values()) / len(y)) if kind == "classify" else CHANCE[metric]
    low, high, _ = cluster_interval(lambda weights: _metric(metric, y, predicted, weights),
                                    groups, None, seed, resamples)
    baseline = max(chance, shuffled_mean)
    return {"score": score, "metric": metric, "baseline": baseline, "low": low, "high": high,
            "n": int(len(y)), "verdict": probe_verdict(low, baseline),
            "chance": chance, "shuffled": shuffled_mean,
            "classes": int(len(set(y.tolist()))) if kind == "classify" else int(_width(y)),
            "folds": int(k)}


def probe_verdict(low: float, baseline: float) -> str:
    """The probe's answer: evidence only when its whole interval lies above its baseline (no
    interval, NaN: no evidence). The findings table reads it from the probes table."""
    return EVIDENCE if low > baseline else NO_EVIDENCE


def _width(y: np.ndarray) -> int:
    return 1 if y.ndim == 1 else y.shape[1]


def _estimator(kind: str, seed: int):
    if kind == "classify":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    return make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS))


def _out_of_fold(x, y, groups, kind: str, k: int, seed: int) -> np.ndarray:
    if kind == "classify":
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
        method = "predict"
    else:
        splitter, method = GroupKFold(k, shuffle=True, random_state=seed), "predict"
    target = y.astype(np.float64) if kind != "classify" else y
    with warnings.catch_warnings():
        # Small folds of wide vectors: an unconverged or class-poor fold still predicts.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        predicted = cross_val_predict(_estimator(kind, seed), x, target, groups=groups,
                                      cv=splitter, method=method)
    # one output column comes back flat
    return predicted if kind == "classify" else predicted.reshape(y.shape)


def _metric(metric: str, y: np.ndarray, predicted: np.ndarray,
            weights: np.ndarray | None = None) -> float:
    """The probe's score of its rows, each weighing `weights` (a bootstrap resample's count of
    the row; one each by default).

    R^2 is 1 - SSE / SST summed over outputs (sklearn's variance_weighted R^2 at weights of
    one), SST around the unweighted mean of all the rows: the reference it compares with stays
    fixed under resampling, as the out-of-fold predictions do.
    """
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        return np.nan
    if metric == "accuracy":
        return float(np.average(predicted == y, weights=w))
    if metric == "r2":
        target = y.astype(np.float64).reshape(len(y), -1)
        sse = ((target - predicted.reshape(len(y), -1)) ** 2).sum(1)
        sst = ((target - target.mean(0)) ** 2).sum(1)
        total = float(w @ sst)
        return float(1 - (w @ sse) / total) if total > 0 else np.nan
    rows = np.repeat(np.arange(len(y)), w.astype(int))  # counts: a resample's rows, repeated
    return macro_auc(y[rows], predicted[rows])


def macro_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Mean over labels (columns with both classes present) of the ROC AUC of `scores`."""
    y = np.asarray(y, dtype=bool)
    pos = y.sum(0)
    neg = len(y) - pos
    ok = (pos > 0) & (neg > 0)
    if not ok.any():
        return np.nan
    ranks = rankdata(scores[:, ok], axis=0)  # average ranks: ties count half
    u = (ranks * y[:, ok]).sum(0) - pos[ok] * (pos[ok] + 1) / 2
    return float(np.mean(u / (pos[ok] * neg[ok])))


def _permute(y: np.ndarray, groups: np.ndarray, rng) -> np.ndarray:
    """Labels moved between whole groups (each group takes another group's first label)."""
    names, first = np.unique(groups, return_index=True)
    order = rng.permutation(len(names))
    where = {g: i for i, g in enumerate(names)}
    source = first[order]
    return y[[source[where[g]] for g in groups]]


# -- the run's probes -------------------------------------------------------------------------
@takes(options_of("probes"), "probes")
def analyze(store, loaded=None, progress=None, *, positions: tuple[int, ...], folds: int,
            permutations: int, resamples: int, min_class: int, bag_min: int, semantic: bool,
            seed: int) -> dict[str, pd.DataFrame]:
    """The probes table of a run: every target x every vector the solutions own.

    `progress` hears how far it is (analysis/progress.py); it is not an option."""
    if not positions:
        raise ProtoscopeError("--probe-positions must name at least one (1-based) position")
    rows, e, m = load_solutions(store)
    texts = {t.text_id: t for t in (ensure_scored(store, loaded) if loaded is not None
                                    else store.texts())}
    keep = _largest_cohort(rows)
    if not len(keep):
        reporter(progress)("probes", 0, 0)
        return {"probes": pd.DataFrame(columns=COLUMNS)}
    rows, e, m = rows.iloc[keep].reset_index(drop=True), e[keep], m[keep]
    length = int(rows["length"].iloc[0])
    targets = _targets(rows, texts, length, positions, min_class, bag_min, semantic, loaded)
    masks, out, todo = own_vectors(rows), [], []
    groups = rows["text_id"].astype(str).to_numpy()
    for name, (kind, labels, usable) in targets.items():
        for vector in VECTORS:
            use = masks[vector] & usable
            if len(set(groups[use])) < 4 or (kind == "classify" and len(set(labels[use])) < 2):
                continue
            if kind == "regress" and not np.ptp(labels[use], axis=0).any():
                continue  # a constant target: R^2 undefined, nothing to read
            todo.append((name, vector, kind, labels, use))
    report = reporter(progress)
    for done, (name, vector, kind, labels, use) in enumerate(todo):
        report("probes", done, len(todo), probing=f"{name} on {vector}")
        x = stack(vector, e, m)[use]
        result = score_probe(x, labels[use], groups[use], kind, folds=folds,
                             permutations=permutations, resamples=resamples, seed=seed)
        out.append({"target": name, "vector": vector, **result})
    report("probes", len(todo), len(todo))
    return {"probes": pd.DataFrame(out, columns=COLUMNS)}


def _largest_cohort(rows: pd.DataFrame) -> np.ndarray:
    ok = np.asarray(reconstructed(rows["accuracy"]), dtype=bool)
    best = np.array([], dtype=int)
    for index in cohorts(rows, method="one-step"):
        index = index[ok[index]]
        if len(index) > len(best):
            best = index
    return best


def _targets(rows, texts, length, positions, min_class, bag_min, semantic, loaded) -> dict:
    """target -> (kind, labels [n] or [n, k], which rows have the label)."""
    text = [texts[t] for t in rows["text_id"]]
    n, every = len(rows), np.ones(len(rows), dtype=bool)
    prefix = [t.token_ids[:length] for t in text]
    out: dict[str, tuple] = {"source": ("classify", np.array([t.source for t in text]), every)}
    context = np.array([t.context_id if t.source == "generated" else None for t in text], object)
    out["context"] = ("classify", context.astype(str), context != None)  # noqa: E711
    for i in positions:
        if i <= length:
            labels = np.array([str(p[i - 1]) for p in prefix])
            out[f"token@{i}"] = ("classify", labels, _common(labels, rows, min_class))
    bag = _bag(prefix, rows, bag_min)
    if bag is not None:
        out["bag_of_words"] = ("multilabel", bag, every)
    if semantic:
        embedding = _sentence_embeddings(text, length, loaded)
        if embedding is not None:
            out["sentence_embedding"] = ("regress", embedding, every)
    h = np.array([_h_lm(t, length) for t in text])
    out["h_lm"] = ("regress", h, np.isfinite(h))
    return {k: v for k, v in out.items() if len(v[1]) == n}


def _common(labels: np.ndarray, rows: pd.DataFrame, min_class: int) -> np.ndarray:
    """Rows whose label is shared by at least `min_class` different texts."""
    texts_per = rows.assign(label=labels).groupby("label")["text_id"].nunique()
    return np.array([texts_per[v] >= min_class for v in labels], dtype=bool)


def _bag(prefix, rows, bag_min: int) -> np.ndarray | None:
    """[n, k] 0/1: which of the tokens found in >= bag_min texts (and not in all) occur."""
    per_text = {t: set(p) for t, p in zip(rows["text_id"], prefix)}
    counts = Counter(tok for toks in per_text.values() for tok in toks)
    vocab = sorted(t for t, c in counts.items() if bag_min <= c < len(per_text))
    if not vocab:
        return None
    return np.array([[tok in set(p) for tok in vocab] for p in prefix], dtype=np.float64)


def _decoded(text, length: int, loaded) -> str:
    if loaded is None or length >= len(text.token_ids):
        return text.text
    return loaded.tokenizer.decode(list(text.token_ids[:length]), skip_special_tokens=True)


def _sentence_embeddings(text, length: int, loaded) -> np.ndarray | None:
    try:
        model = _sentence_model(None)
        strings = [_decoded(t, length, loaded) for t in text]
        return np.asarray(model.encode(strings, normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False), dtype=np.float64)
    # Optional model: any failure to load it leaves the other probes standing.
    except Exception as err:  # noqa: BLE001
        log.warning("sentence-embedding probe skipped (%s: %s)", type(err).__name__, str(err)[:200])
        return None


def _h_lm(text, length: int) -> float:
    """The prefix's H_LM; NaN for a text not scored (no model was given to score it)."""
    if text.token_nll is not None and len(text.token_nll) >= length:
        return text.h_lm(length)
    return np.nan

