"""What does this run answer, and does it agree with the paper? The findings table.

One row per question the run's tables can answer (a question whose table is absent, or holds
no observation for it, is left out): its estimate, a 95% interval, n, the paper's value where
the paper gives one, the paper's claim in words, a verdict, and what kind of evidence it is.

Intervals: percentile bootstrap (analysis/bootstrap.py: `scipy.stats.bootstrap`, 2000
resamples, seeded) over the finding's unit. Pairs of solutions share texts, so pair statistics
resample TEXTS (a cluster bootstrap: a pair weighs count(text_a) x count(text_b) in a resample,
a per-text observation count(text)); per-solution statistics resample solutions. Fewer than
5 units (a percentile interval from 3 or 4 texts is far too narrow), or resamples in which the
statistic is undefined (e.g. no different-text pair left), give no interval: inconclusive at
this n. The AUC rows are analysis/uniqueness.py's `auc_interval`, the uniqueness study's too.

The compare page's findings of ONE text (`text_findings`) resample that text's pairs (or its
solutions) instead: the pairs of one text are the only units it has.

Evidence (the `evidence` column): what a row can show depends on how it was measured.
- "observed": a measurement of fixed objects, which can agree or disagree: the AUCs, the
  straight path (the segment between two solutions is one fixed object, so its breaking is
  observed), the neighbourhood radii, the length ratio of the curves that were found, probes.
- "bounded search": a claim that something EXISTS, resting on a search with a budget: "curve
  keeps the text" (a curve that keeps the text exists) and capacity (the longest prefix a
  fit reconstructs: a lower bound, for the paper as for this run). A search can confirm
  such a claim, but a search that stops at its budget without finding it is no evidence that
  nothing exists, so a bounded-search row NEVER disagrees.

Verdict rule: agrees or disagrees with the PAPER, so only where the paper says something.
Each finding the paper takes a side on has a boundary b and the side of it the paper's finding
lies on:
- "agrees" when the whole interval lies on the paper's side of b,
- "disagrees" when the whole interval lies on the other side (observed rows only),
- "inconclusive" otherwise: the interval straddles b, or there is no interval at this n, or
  (bounded search) the search did not show what the paper found.
The boundaries: AUCs against 0.5 (chance); shares of paths that keep the text against 0.5 (a
typical path holds or breaks); the curve length ratio against 1.2 (the paper's longest curve);
the neighbourhood radius over the distance to the nearest other text's solution against 1
(the ball that keeps a text is smaller than the gap to other texts).
Bounded searches: the curve row agrees when its interval lies wholly above 0.5 (curves held on
most pairs) and is otherwise inconclusive; when some curves did not hold, its detail opens
with the budget, "not found within B steps on k of n pairs" (B the table's `bezier_steps`, k
the pairs whose curve did not hold, n the pairs), which the terminal and the report show beside
the verdict. Capacity, whose paper value is a number, agrees when the interval contains it or
lies above it; below it, inconclusive, the detail opening "a lower bound: the search reached X
within its budget" (`lower_bound_verdict`).
A finding the paper gives no value for and takes no side on is "inconclusive" whatever the run
found: there is nothing to agree or disagree with. Its claim opens with NO_PAPER_VALUE
(`paper_silent` picks these rows out) and its detail says what the run found. These are
capacity on a model the paper did not run, and every probe: the paper reports no probe, so a
probe row's detail opens with the probe's own answer against its own baseline (chance or
shuffled labels): the probes table's verdict (analysis/probes.py), "evidence", "no evidence", or "no evidence, below its
baseline" when the whole interval lies under it (a probe that reads nothing can score below
chance out of fold; that is not a disagreement with the paper).

Learned starts: a run in which any solution started from a learned encoder's prediction
(geometry/starts/names.py: `start` `encoder:NAME`) puts a text's solutions from different seeds
close together, so its uniqueness, connectivity (straight path, curve, curve length) and probe
rows measure the encoder, not the solution space: they are "inconclusive", their detail
opening with LEARNED_START and the verdict they would otherwise have, unless the user allows
it (`allow_learned_starts=True`, `--allow-learned-starts` of analyze and report, recorded as
manifest["allow_learned_starts"]).

Table: findings (finding, estimate, low, high, n, paper, verdict, unit, claim, detail,
evidence).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

from ..geometry.starts.names import learned, solution_starts
from ..geometry.tables import CONCATENATED, RECONSTRUCTED, capacity_per_text, columns
from .bootstrap import cluster_interval, pair_units
from .uniqueness import auc_interval

COLUMNS = columns("findings")
VERDICTS = ("agrees", "disagrees", "inconclusive")
NO_PAPER_VALUE = "the paper gives no value"  # the claim of a finding the paper is silent on
OBSERVED, BOUNDED = "observed", "bounded search"  # the `evidence` column's values
EVIDENCE = (OBSERVED, BOUNDED)
# How the detail of an inconclusive row opens when the reason is not the interval alone:
NOT_FOUND = "not found within"  # a curve search that ended at its budget on some pairs
LOWER_BOUND = "a lower bound: the search reached"  # a capacity below the paper's
LEARNED_START = "solutions started from a learned encoder"

# The paper's capacities, m not shared (PAPER.md), by a lowercase part of the model's name.
PAPER_CAPACITY = {"pythia-160m": 128, "pythia-410m": 167, "pythia-1.4b": 128,
                  "llama-3.2-1b": 362, "llama-3.2-3b": 512, "llama-3.1-8b": 724}


def text_findings(analysis: Callable[[str], pd.DataFrame | None], solutions: pd.DataFrame,
                  manifest: dict, text_id: str, seed: int = 0,
                  allow_learned_starts: bool | None = None) -> pd.DataFrame:
    """The findings about one text's solutions, resampling pairs (or its solutions)."""
    text_id = str(text_id)

    def own(name: str) -> pd.DataFrame | None:
        frame = analysis(name)
        if frame is None or name == "probes":
            return None
        if {"text_a", "text_b"} <= set(frame.columns):
            a, b = frame["text_a"].astype(str), frame["text_b"].astype(str)
            return frame[(a == text_id) | (b == text_id)]
        if "text_id" in frame.columns:
            return frame[frame["text_id"].astype(str) == text_id]
        return None

    return findings(own, solutions, manifest, seed, by="pairs",
                    allow_learned_starts=allow_learned_starts)


def write(store, allow_learned_starts: bool | None = None) -> pd.DataFrame:
    """Build the findings of the run in `store` and write RUN/analysis/findings.parquet
    (`allow_learned_starts` None: as manifest["allow_learned_starts"] says)."""
    table = findings(store.analysis, store.solutions(), store.manifest or {},
                     allow_learned_starts=allow_learned_starts)
    store.write_analysis("findings", table)
    return table


def allows_learned_starts(manifest: dict, allow: bool | None = None) -> bool:
    """Whether learned-start runs get ordinary verdicts: `allow` when given, else the manifest's
    record of the user's choice (`--allow-learned-starts`)."""
    return bool((manifest or {}).get("allow_learned_starts", False) if allow is None else allow)


def learned_starts(solutions: pd.DataFrame, manifest: dict) -> str:
    """Words for the learned starts of a run ("encoder:NAME on k of n solutions"), "" if none."""
    starts = solution_starts(solutions, manifest)
    which = learned(starts)
    if not which.any():
        return ""
    names = ", ".join(sorted(set(starts[which].astype(str))))
    return f"{names} on {int(which.sum())} of {len(starts)} solutions"


def findings(analysis: Callable[[str], pd.DataFrame | None], solutions: pd.DataFrame,
             manifest: dict, seed: int = 0, by: str = "texts",
             allow_learned_starts: bool | None = None) -> pd.DataFrame:
    """The findings table from the run's tables (`analysis(name)` returns one or None).

    `by="pairs"` resamples pairs instead of texts (the findings of one text, `text_findings`).
    `allow_learned_starts`: give a run whose solutions started from a learned encoder the
    ordinary verdicts on uniqueness, connectivity and probes (None: the manifest's choice).
    """
    starts = "" if allows_learned_starts(manifest, allow_learned_starts) else \
        learned_starts(solutions, manifest)

    def geometry(row: dict | None) -> dict | None:  # a row the seeds' spread decides
        return _learned(row, starts) if starts else row

    rows = []
    uniq = analysis("uniqueness")
    if uniq is not None and len(uniq):
        vector = _uniqueness_vector(uniq, solutions)
        pairs = uniq[uniq["vector"] == vector]
        rows.append(geometry(_auc_row(
            pairs, ("same_text",), ("same_context", "different_context"),
            "same-text solutions closer than different-text", vector, seed,
            "same-text pairs are almost always closer", by)))
        rows.append(geometry(_auc_row(
            pairs, ("same_context",), ("different_context",),
            "same-context solutions closer than different-context", vector, seed,
            "closer, a small effect with heavy overlap", by)))
    conn = analysis("connectivity_pairs")
    if conn is not None and len(conn) and "held" in conn.columns:
        own = conn[conn["same_text"].astype(bool) & (conn["target"] == "a")]
        rows.append(geometry(_held_row(
            own[own["path"] == "linear"], "straight path keeps the text", 0.0, "below",
            "accuracy collapses in the middle of the segment", seed, by=by)))
        curves = own[own["path"] == "bezier"]
        budget = _budget_words(curves)
        rows.append(geometry(_curve_row(curves, seed, budget, by)))
        held = curves[curves["held"].astype(bool)]
        rows.append(geometry(_side_row(
            "curve length ratio (held curves)", held["length_ratio"].to_numpy(float),
            *pair_units(held, by), 1.2, 1.2, "below",
            "nearly straight: the longest curve was 1.2x the segment", by, seed,
            f"mean curve length / segment length over the curves that held; {budget}")))
    radii = analysis("neighbourhood_radii")
    if radii is not None and len(radii):
        rows.append(_radius_row(radii, analysis("neighbourhoods"), seed))
    cap = analysis("capacity")
    if cap is not None and len(cap):
        rows.append(_capacity_row(cap, manifest, seed))
    probes = analysis("probes")
    if probes is not None and len(probes):
        rows.extend(geometry(row) for row in _probe_rows(probes))
    spectrum = analysis("spectrum")
    if spectrum is not None and len(spectrum):
        rows.append(_spectrum_row(spectrum, seed))
    paths = analysis("trajectories")
    if paths is not None and len(paths):
        rows.append(_path_row(paths, seed))
    intrinsic = analysis("intrinsic_dimension")
    if intrinsic is not None and len(intrinsic):
        rows.extend(_dimension_rows(intrinsic, seed))
    rows = [r for r in rows if r is not None]
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.astype({"estimate": float, "low": float, "high": float, "n": int,
                         "paper": float}) if len(table) else _empty()


# -- the verdict ----------------------------------------------------------------------------
def verdict(low: float, high: float, boundary: float, side: str) -> str:
    """agrees / disagrees / inconclusive for an interval against the paper's side of b."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "inconclusive"
    if side == "above":
        return "agrees" if low > boundary else "disagrees" if high < boundary else "inconclusive"
    return "agrees" if high < boundary else "disagrees" if low > boundary else "inconclusive"


def paper_silent(table: pd.DataFrame) -> pd.Series:
    """Which findings the paper gives no value for (inconclusive whatever this run found)."""
    claim = table["claim"] if "claim" in table.columns else pd.Series("", index=table.index)
    return claim.fillna("").astype(str).str.startswith(NO_PAPER_VALUE)


def inconclusive_reason(table: pd.DataFrame) -> pd.Series:
    """Why an inconclusive row is one, where the interval alone is not the reason: the learned
    starts (LEARNED_START) or the search's budget ("not found within 200 steps on 5 of 5
    pairs", "a lower bound: the search reached 64 within its budget"); "" elsewhere."""
    detail = table["detail"] if "detail" in table.columns else pd.Series("", index=table.index)
    detail = detail.fillna("").astype(str)
    first = detail.str.split("; ").str[0]
    reason = pd.Series("", index=table.index, dtype=object)
    reason[detail.str.startswith(NOT_FOUND) | detail.str.startswith(LOWER_BOUND)] = first
    reason[detail.str.startswith(LEARNED_START)] = LEARNED_START
    return reason.where(table["verdict"].astype(str) == "inconclusive", "")


def as_text(table: pd.DataFrame) -> str:
    """The findings table as a terminal shows it (demo, studies, `analyze`): one line per
    finding; the verdict carries what otherwise only the report's detail column shows: a
    bounded search's budget where it found nothing (e.g. "inconclusive (not found within 200
    steps on 5 of 5 pairs)"), learned starts, and, where the paper is silent, this run's own
    answer (e.g. "inconclusive (no evidence)")."""
    shown = table[["finding", "estimate", "low", "high", "n", "paper", "verdict"]].copy()
    silent = paper_silent(table)
    reason = inconclusive_reason(table)
    if "detail" in table.columns:
        own = table["detail"].fillna("").astype(str).str.split(":").str[0]
        mark = silent & own.ne("") & reason.eq("")
        shown.loc[mark, "verdict"] = (shown["verdict"] + " (" + own + ")")[mark]
    has = reason.ne("")
    shown.loc[has, "verdict"] = (shown["verdict"] + " (" + reason + ")")[has]
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        return shown.to_string(index=False, float_format=lambda v: f"{v:.3g}")


def value_verdict(low: float, high: float, paper: float) -> str:
    """An observed number against the paper's: agrees when the interval contains it."""
    if not (np.isfinite(low) and np.isfinite(high) and np.isfinite(paper)):
        return "inconclusive"
    return "agrees" if low <= paper <= high else "disagrees"


def lower_bound_verdict(low: float, high: float, paper: float) -> str:
    """A lower bound (capacity) against the paper's lower bound: agrees when the interval
    contains the paper's value or lies above it; below it, inconclusive, never disagrees (a
    longer search may reach further)."""
    if not (np.isfinite(low) and np.isfinite(high) and np.isfinite(paper)):
        return "inconclusive"
    return "agrees" if high >= paper else "inconclusive"


def bounded_verdict(low: float, high: float, boundary: float, side: str) -> str:
    """An existence claim from a bounded search: `verdict`, with "disagrees" read as
    inconclusive (a search that found nothing within its budget shows nothing is missing)."""
    found = verdict(low, high, boundary, side)
    return "inconclusive" if found == "disagrees" else found


# -- statistics of weights (analysis/bootstrap.py resamples them) --------------------------
def _weighted_mean(values: np.ndarray) -> Callable[[np.ndarray], float]:
    def mean(weights: np.ndarray) -> float:
        return float(np.average(values, weights=weights)) if weights.sum() > 0 else np.nan
    return mean


def _weighted_median(values: np.ndarray) -> Callable[[np.ndarray], float]:
    order = np.argsort(values)
    values = values[order]

    def median(weights: np.ndarray) -> float:
        w = weights[order]
        if w.sum() <= 0:
            return np.nan
        return float(values[np.searchsorted(np.cumsum(w), w.sum() / 2)])
    return median


# -- the rows -------------------------------------------------------------------------------
def _row(finding, estimate, low, high, n, paper, verdict_, unit, claim, detail,
         evidence=OBSERVED) -> dict:
    return dict(zip(COLUMNS, (finding, float(estimate), float(low), float(high), int(n),
                              float(paper), verdict_, unit, claim, detail, evidence)))


def _learned(row: dict | None, starts: str) -> dict | None:
    """A row on a run with learned starts: inconclusive, saying why and what it would be."""
    if row is None:
        return None
    return {**row, "verdict": "inconclusive",
            "detail": f"{LEARNED_START} ({starts}): a text's seeds start near one point, so "
                      f"this measures the encoder, not the solution space; with "
                      f"--allow-learned-starts: {row['verdict']}; {row['detail']}"}


def _side_row(finding, values, units_a, units_b, paper, boundary, side, claim, unit, seed,
              detail, statistic=_weighted_mean) -> dict | None:
    if not len(values):
        return None
    stat = statistic(np.asarray(values, dtype=float))
    estimate = stat(np.ones(len(values)))
    low, high, n = cluster_interval(stat, np.asarray(units_a), units_b, seed)
    return _row(finding, estimate, low, high, n, paper, verdict(low, high, boundary, side),
                unit, claim, detail)


def _uniqueness_vector(uniq: pd.DataFrame, solutions: pd.DataFrame) -> str:
    """e when m is shared (the paper's protocol), else both vectors of a solution ([e; m])."""
    shared_m = "share" in solutions.columns and (solutions["share"] == "m").any()
    present = set(uniq["vector"])
    for vector in (("e", CONCATENATED) if shared_m else (CONCATENATED, "e")):
        if vector in present:
            return vector
    return sorted(present)[0]


def _auc_row(pairs: pd.DataFrame, near: tuple, far: tuple, finding: str, vector: str,
             seed: int, claim: str, by: str = "texts") -> dict | None:
    kinds = pairs["pair_kind"]
    if not (kinds.isin(near).any() and kinds.isin(far).any()):
        return None
    estimate, low, high, n = auc_interval(pairs, near, far, seed, by)
    n_near, n_far = int(kinds.isin(near).sum()), int(kinds.isin(far).sum())
    detail = (f"AUC of cosine distance ({vector}): P(a {near[0].replace('_', '-')} pair is "
              f"closer than a {' or '.join(f.replace('_', '-') for f in far)} pair); "
              f"{n_near} vs {n_far} pairs")
    return _row(finding, estimate, low, high, n, np.nan, verdict(low, high, 0.5, "above"),
                by, claim, detail)


def _curve_row(curves: pd.DataFrame, seed: int, budget: str, by: str) -> dict | None:
    """Curves that keep the text: an existence claim, confirmed when most pairs' curves held,
    otherwise not shown within the budget (never refuted: bounded_verdict)."""
    row = _held_row(curves, "curve keeps the text (share held)", 1.0, "above",
                    "a trained quadratic Bezier curve keeps accuracy ~1 all along",
                    seed, budget, by)
    if row is None:
        return None
    row["evidence"] = BOUNDED
    row["verdict"] = bounded_verdict(row["low"], row["high"], 0.5, "above")
    missed = int((~curves["held"].astype(bool)).sum())
    if row["verdict"] == "inconclusive" and missed:
        steps = (f"{int(curves['bezier_steps'].max())} steps"
                 if "bezier_steps" in curves.columns and curves["bezier_steps"].notna().any()
                 else "its budget")
        row["detail"] = (f"{NOT_FOUND} {steps} on {missed} of {len(curves)} pairs; a search "
                         f"that ends at its budget does not show that no curve exists; "
                         f"{row['detail']}")
    return row


def _held_row(paths: pd.DataFrame, finding: str, paper: float, side: str, claim: str,
              seed: int, budget: str = "", by: str = "texts") -> dict | None:
    if not len(paths):
        return None
    held = paths["held"].astype(bool).to_numpy(float)
    detail = (f"share of same-text pairs whose worst grid point keeps accuracy >= "
              f"{RECONSTRUCTED}; {int(held.sum())} of {len(held)} pairs")
    units = paths["text_a"].astype(str).to_numpy() if by == "texts" else np.arange(len(paths))
    return _side_row(finding, held, units, None, paper, 0.5,
                     side, claim, by, seed, detail + (f"; {budget}" if budget else ""))


def _budget_words(curves: pd.DataFrame) -> str:
    if not len(curves) or "bezier_steps" not in curves.columns:
        return ""
    first = curves.iloc[0]
    words = f"budget {int(first['bezier_steps'])} steps x {int(first['samples_per_step'])} t"
    if "steps_used" in curves.columns:
        words += f", median {int(curves['steps_used'].median())} used"
    return words


def _radius_row(radii: pd.DataFrame, sweep: pd.DataFrame | None, seed: int) -> dict | None:
    rows = radii[radii["nearest_other_text"].notna() & (radii["nearest_other_text"] > 0)]
    if not len(rows):
        return None
    # NaN radius_99: accuracy never fell within the radii tried, so the largest one bounds it.
    largest = float(sweep["radius"].max()) if sweep is not None and len(sweep) else np.nan
    radius = rows["radius_99"].fillna(largest).to_numpy(float)
    ratio = radius / rows["nearest_other_text"].to_numpy(float)
    keep = np.isfinite(ratio)
    detail = (f"median over solutions of radius_99 (random directions, relative to the norm; "
              f"median {np.nanmedian(radius):.3g}) / distance to the nearest other text's "
              f"solution")
    return _side_row("neighbourhood radius / nearest other text", ratio[keep],
                     np.arange(int(keep.sum())), None, np.nan, 1.0, "below",
                     "locality: the ball that keeps a text is small next to other texts",
                     "solutions", seed, detail, statistic=_weighted_median)


def _capacity_row(cap: pd.DataFrame, manifest: dict, seed: int) -> dict | None:
    per_text = capacity_per_text(cap)
    per_text = per_text[per_text["method"] == "one-step"]
    if not len(per_text):
        return None
    model = str((manifest.get("model") or {}).get("name", "") if isinstance(
        manifest.get("model"), dict) else manifest.get("model", "")).lower()
    paper = next((v for k, v in PAPER_CAPACITY.items() if k in model), np.nan)
    values = per_text["capacity"].to_numpy(float)
    stat = _weighted_median(values)
    low, high, n = cluster_interval(stat, per_text["text_id"].astype(str).to_numpy(), None, seed)
    claim = (f"{paper:.0f} tokens on this model (m not shared, a lower bound)"
             if np.isfinite(paper) else f"{NO_PAPER_VALUE} for this model")
    estimate = stat(np.ones(len(values)))
    lengths = sorted(set(cap["length"].astype(int)))
    detail = f"longest prefix reconstructed per text over lengths {lengths}"
    at_top = int((values >= max(lengths)).sum())
    if at_top:  # the grid, not the model, stopped these texts
        detail = (f"{at_top} of {len(values)} texts reconstructed the grid's longest length "
                  f"{max(lengths)}: their capacity is at least that, a longer grid may find more; "
                  f"{detail}")
    verdict_ = lower_bound_verdict(low, high, paper)
    if verdict_ == "inconclusive" and np.isfinite(high) and high < paper:
        recipe = (manifest.get("config") or {}).get("recipe") if isinstance(
            manifest.get("config"), dict) else None
        steps = recipe.get("max_steps") if isinstance(recipe, dict) else None
        budget = f"at most {int(steps)} steps a length, " if steps else ""
        detail = (f"{LOWER_BOUND} {estimate:.3g} within its budget; {budget}lengths up to "
                  f"{max(lengths)}; a longer search may reach the paper's {paper:.0f}; "
                  f"{detail}")
    return _row("capacity (tokens, median over texts)", estimate, low, high, n, paper,
                verdict_, "texts", claim, detail, BOUNDED)


def _spectrum_row(spectrum: pd.DataFrame, seed: int) -> dict | None:
    """The stiff count of [e; m] (e where m is not the solutions' own), median over solutions:
    the paper gives no value; where every eigenvalue found was stiff the count is a lower
    bound (Lanczos found that many within its top k)."""
    block = CONCATENATED if (spectrum["block"] == CONCATENATED).any() else "e"
    rows = spectrum[spectrum["block"] == block]
    values = rows["stiff"].to_numpy(float)
    stat = _weighted_median(values)
    low, high, n = cluster_interval(stat, rows["text_id"].astype(str).to_numpy(), None, seed)
    censored, k = int(rows["stiff_censored"].astype(bool).sum()), int(rows["k"].max())
    detail = (f"{stat(np.ones(len(values))):g} stiff directions of the top {k}: median over "
              f"{len(rows)} solutions of the Hessian eigenvalues of {block} above "
              f"{_share(rows)} of the top one, among the top {k} (Lanczos); median top "
              f"eigenvalue {float(np.median(rows['top'])):.3g}")
    if censored:
        detail = (f"{LOWER_BOUND} its top {k} eigenvalues, all stiff, on {censored} of "
                  f"{len(rows)} solutions (there the count is at least {k}); {detail}")
    return _row(f"stiff Hessian directions (top-k, {block})", stat(np.ones(len(values))), low,
                high, n, np.nan, "inconclusive", "texts",
                f"{NO_PAPER_VALUE}: the paper measures no Hessian", detail,
                BOUNDED if censored else OBSERVED)


def _path_row(paths: pd.DataFrame, seed: int) -> dict:
    """The share of a path's variance in its first two principal components, median over
    solutions; the paper gives no value (progressive cramming reports 65.7% for
    autoregressive memory vectors)."""
    values = paths["pc12"].to_numpy(float)
    stat = _weighted_median(values)
    low, high, n = cluster_interval(stat, paths["text_id"].astype(str).to_numpy(), None, seed)
    exact = paths["first_exact_share"].dropna()
    estimate = stat(np.ones(len(values)))
    detail = (f"{estimate:.0%} of a path's variance in PC1 + PC2: median over {len(paths)} "
              f"solution paths (their last restart, {int(paths['points'].median())} kept points "
              f"each at the median)")
    detail += (f"; the text first appeared at {float(exact.median()):.0%} of the steps (median "
               f"of {len(exact)})" if len(exact) else
               f"; no kept point reached accuracy {RECONSTRUCTED}")
    return _row("path variance in its first two components", estimate, low,
                high, n, np.nan, "inconclusive", "texts",
                f"{NO_PAPER_VALUE} (progressive cramming: 65.7% for [mem] vectors)", detail)


def _dimension_rows(intrinsic: pd.DataFrame, seed: int) -> list[dict]:
    """Per subspace kind, over all texts and (when there are several) per source: the median
    over texts of the smallest K that reconstructed. An upper bound (a smaller K that failed
    within its budget is not shown impossible); texts no K reconstructed are counted in the
    detail, not given a value."""
    out = []
    for kind, of_kind in intrinsic.groupby("kind"):
        sources = sorted(of_kind["source"].astype(str).unique())
        groups = [("", of_kind)] + ([(s, of_kind[of_kind["source"] == s]) for s in sources]
                                    if len(sources) > 1 else [])
        for source, rows in groups:
            row = _dimension_row(rows, f"{kind} subspace" + (f", {source}" if source else ""),
                                 seed)
            if row is not None:
                out.append(row)
    return out


def _dimension_row(rows: pd.DataFrame, what: str, seed: int) -> dict | None:
    found = rows[rows["found"].astype(bool)]
    if not len(found):
        return None
    missing = len(rows) - len(found)
    tried = sorted({int(k) for ks in rows["dims_tried"] for k in str(ks).split(",")})
    values = found["d_int"].to_numpy(float)
    stat = _weighted_median(values)
    low, high, n = cluster_interval(stat, found["text_id"].astype(str).to_numpy(), None, seed)
    detail = (f"an upper bound: the smallest K of {tried} at which a seed reconstructed the "
              f"text within the fit's budget; a smaller K may reconstruct with a longer search")
    if missing:
        detail += (f"; {missing} of {len(rows)} texts were not reconstructed at any K up to "
                   f"{max(tried)} within the budget (left out, not evidence that none exists)")
    return _row(f"intrinsic dimension (smallest K reconstructing, {what})",
                stat(np.ones(len(values))), low, high, n, np.nan, "inconclusive", "texts",
                f"{NO_PAPER_VALUE} (progressive cramming: 64 tokens in a rank-32 subspace, "
                "[mem] vectors)", detail, BOUNDED)


def _share(rows: pd.DataFrame) -> str:
    share = (rows["threshold"] / rows["top"]).dropna()
    return f"{float(share.median()):.2g}" if len(share) else "a share"


def _probe_rows(probes: pd.DataFrame) -> list[dict]:
    """One row per probe: inconclusive (the paper reports no probe), the probe's own answer
    against its own baseline in the detail: the probes table's verdict, or (older tables
    without one) analysis/probes.py's rule applied to the table's interval."""
    from .probes import NO_EVIDENCE, probe_verdict  # sklearn: only where a run has probes

    if {"score", "baseline", "low", "high"} <= set(probes.columns):
        frame = probes.rename(columns={"score": "estimate"})
    elif {"accuracy", "chance", "n"} <= set(probes.columns):  # older tables: binomial interval
        frame = probes.rename(columns={"accuracy": "estimate", "chance": "baseline"}).copy()
        ci = [stats.binomtest(int(round(a * n)), int(n)).proportion_ci() if n > 0 else (np.nan,) * 2
              for a, n in zip(frame["estimate"], frame["n"])]
        frame["low"], frame["high"] = [c[0] for c in ci], [c[1] for c in ci]
    else:
        return []
    out = []
    for _, p in frame.iterrows():
        vector = p["vector"] if "vector" in p.index else p.get("features")
        features = f" from {vector}" if vector is not None else ""
        low, high, baseline = float(p["low"]), float(p["high"]), float(p["baseline"])
        given = p.get("verdict")
        answer = given if isinstance(given, str) and given else probe_verdict(low, baseline)
        if answer == NO_EVIDENCE and high < baseline:
            answer += ", below its baseline"
        out.append(_row(f"probe: {p['target']}{features}", p["estimate"], low, high,
                        p.get("n", 0), np.nan, "inconclusive", "solutions",
                        f"{NO_PAPER_VALUE}: it reports no probes",
                        f"{answer}: out-of-fold {p.get('metric', 'accuracy')} vs baseline "
                        f"{baseline:.3g} (evidence only when the whole interval lies above it)"))
    return out


def _empty() -> pd.DataFrame:
    types = {"estimate": float, "low": float, "high": float, "n": int, "paper": float}
    return pd.DataFrame({c: pd.Series(dtype=types.get(c, object)) for c in COLUMNS})
