"""How far could a statistic of this run's texts move on other texts? The cluster bootstrap.

One mechanism for every interval the analyses report (the findings table, the probes, the
uniqueness AUCs): a 95% percentile interval from `scipy.stats.bootstrap` (seeded) that
resamples UNITS (texts, or the pairs of one text: `pair_units`) and hands the statistic each
observation's weight in the resample: count(unit) for an observation of one unit,
count(unit_a) x count(unit_b) for a pair. The statistic must be the estimate's own,
evaluated at those weights: at weights of one it IS the estimate, so a resample only changes
which units are drawn and how often. Anything else the statistic depends on stays fixed (a
probe's out-of-fold predictions, the reference an R^2 is measured against): recomputing part of
it on each resample measures a different statistic, whose interval can miss the estimate.

Percentile rather than BCa: when the acceleration is small both contain the estimate under the
same condition (it lies within the middle 95% of the resamples), and BCa gives no interval at
all where every resample agrees (a probe that is right on every text).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

MIN_UNITS = 5  # below this many texts (or solutions) a percentile interval is not trusted
RESAMPLES = 2000


def cluster_interval(statistic: Callable[[np.ndarray], float], units_a: np.ndarray,
                     units_b: np.ndarray | None, seed: int,
                     resamples: int = RESAMPLES) -> tuple[float, float, int]:
    """95% percentile interval of `statistic(weights)` resampling the units (texts).

    An observation weighs count(unit_a) (x count(unit_b) for pairs) in a resample. Returns
    (low, high, number of units); NaN bounds below MIN_UNITS units or when a resample leaves
    the statistic undefined.
    """
    names = np.unique(np.concatenate([units_a, units_b]) if units_b is not None else units_a)
    index = {u: i for i, u in enumerate(names)}
    ia = np.array([index[u] for u in units_a], dtype=int)
    ib = None if units_b is None else np.array([index[u] for u in units_b], dtype=int)
    if len(names) < MIN_UNITS:
        return np.nan, np.nan, len(names)

    def resampled(chosen: np.ndarray) -> float:
        counts = np.bincount(chosen.astype(int), minlength=len(names)).astype(float)
        weights = counts[ia] if ib is None else counts[ia] * counts[ib]
        return statistic(weights)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples: reported as no interval
        result = stats.bootstrap((np.arange(len(names)),), resampled, vectorized=False,
                                 n_resamples=resamples, method="percentile",
                                 random_state=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return float(low), float(high), len(names)


def pair_units(pairs: pd.DataFrame, by: str = "texts") -> tuple[np.ndarray, np.ndarray | None]:
    """What a pair's resample unit is: its two texts (text_a, text_b), or (by="pairs", the
    findings of one text, whose pairs are the only units it has) the pair itself."""
    if by == "pairs":
        return np.arange(len(pairs)), None
    return pairs["text_a"].astype(str).to_numpy(), (
        pairs["text_b"].astype(str).to_numpy() if "text_b" in pairs.columns else None)
