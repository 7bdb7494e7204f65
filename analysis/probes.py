"""Can a linear classifier read a label off proto-token vectors, better than chance?

`probe(x, y, groups)` cross-validates a standardised logistic regression and reports it beside
two baselines: the majority-class share and the same probe trained on shuffled labels (which
a probe that overfits, or folds that leak, would also "beat"). Folds are grouped by `groups`
(the text id) whenever every class spans at least two groups, so the probe is scored on texts
it has not seen; otherwise folds are merely stratified, and `cv` says which was used.
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def make_probe(seed: int = 0) -> Pipeline:
    """The linear probe: standardised features, multinomial logistic regression."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))


def probe(x: np.ndarray, y, groups=None, max_folds: int = 5, seed: int = 0) -> dict | None:
    """Cross-validated probe accuracy and its baselines; None when y cannot be probed.

    Classes seen only once are dropped (no fold can both train and test them); with fewer
    than two classes left there is nothing to predict.
    """
    if max_folds < 2:
        raise ValueError(f"max_folds must be at least 2, got {max_folds}")
    y = np.asarray([str(v) for v in y])
    groups = np.asarray(groups if groups is not None else np.arange(len(y))).astype(str)
    counts = Counter(y)
    keep = np.array([counts[v] >= 2 for v in y], dtype=bool)
    x, y, groups = np.asarray(x, dtype=np.float64)[keep], y[keep], groups[keep]
    if len(set(y)) < 2:
        return None
    splitter, cv = _folds(y, groups, max_folds, seed)
    shuffled = _shuffled(y, groups, cv, seed)
    return {"accuracy": _score(x, y, groups, splitter, seed),
            "chance": max(Counter(y).values()) / len(y), "n": int(len(y)),
            "folds": int(splitter.n_splits),
            "shuffled_accuracy": _score(x, shuffled, groups, splitter, seed),
            "classes": int(len(set(y))), "cv": cv}


def _folds(y: np.ndarray, groups: np.ndarray, max_folds: int, seed: int):
    """Grouped stratified folds when every class spans >= 2 groups, else stratified ones."""
    groups_per_class = min(len(set(groups[y == c])) for c in set(y))
    if groups_per_class >= 2 and len(set(groups)) < len(y):
        folds = min(max_folds, groups_per_class)
        return StratifiedGroupKFold(folds, shuffle=True, random_state=seed), "stratified-group"
    folds = min(max_folds, min(Counter(y).values()))
    return StratifiedKFold(folds, shuffle=True, random_state=seed), "stratified"


def _shuffled(y: np.ndarray, groups: np.ndarray, cv: str, seed: int) -> np.ndarray:
    """Labels permuted at the level the folds split: whole groups when each has one label."""
    rng = np.random.default_rng(seed)
    names = sorted(set(groups))
    if cv != "stratified-group" or any(len(set(y[groups == g])) > 1 for g in names):
        return rng.permutation(y)
    label = {g: y[groups == g][0] for g in names}
    moved = dict(zip(names, rng.permutation([label[g] for g in names])))
    return np.array([moved[g] for g in groups])


def _score(x: np.ndarray, y: np.ndarray, groups: np.ndarray, splitter, seed: int) -> float:
    with warnings.catch_warnings():
        # Tiny folds of wide vectors rarely converge fully; the accuracy is still what it is.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # a class missing from one fold
        scores = cross_val_score(make_probe(seed), x, y, groups=groups, cv=splitter)
    return float(np.mean(scores))
