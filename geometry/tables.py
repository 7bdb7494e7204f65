"""What do the tables between analyses and reports hold? The one contract both sides follow.

Analyses write tidy tables into RUN/analysis/ and reports read them (docs/tables.md describes
every column). This module is the single statement of that contract, with no model and no
plotting, so geometry/, analysis/, reports/ and bench/ all import it (it imports nothing of the
package but errors):

- `RECONSTRUCTED`: a solution reconstructs its text at accuracy >= 0.99 (the paper's threshold),
  tested with `reconstructed(accuracy)`;
- the capacity rule, `capacity_of`: a text's capacity is the longest prefix length reconstructed
  (0 when none was);
- the concatenated vector [e; m] is named `e+m` (`CONCATENATED`) wherever a table names vectors;
- the capacity per text, `capacity_per_text`: the best of a text's seeds per method;
- `COLUMNS`: the columns of every analysis table, in order. `conform` puts a frame in that order
  and raises on a missing or unknown column (RunStore.write_analysis calls it); `read` names
  columns a report needs and raises when one is not in the contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # frames come in; the module itself needs no pandas (the CLI reads it first)
    import pandas as pd

RECONSTRUCTED = 0.99
CONCATENATED = "e+m"
VECTORS = ("e", "m", CONCATENATED)

COLUMNS: dict[str, tuple[str, ...]] = {
    "capacity": ("text_id", "source", "seed", "method", "arrangement", "length", "accuracy",
                 "c_tokens", "reconstructed", "h_lm_nats", "h_lm_bits"),
    "uniqueness": ("solution_a", "solution_b", "text_a", "text_b", "pair_kind", "vector",
                   "cosine_distance", "l2_distance", "tfidf_distance", "semantic_distance",
                   "weight"),
    "uniqueness_summary": ("vector", "comparison", "auc", "p_value", "n_a", "n_b", "pairs_a",
                           "pairs_b"),
    "uniqueness_bins": ("text_distance", "vector", "bin_low", "bin_high", "pair_kind", "n",
                        "median_cosine_distance"),
    "connectivity": ("pair_id", "solution_a", "solution_b", "same_text", "path", "target", "t",
                     "accuracy", "loss"),
    "connectivity_pairs": ("pair_id", "solution_a", "solution_b", "text_a", "text_b",
                           "same_text", "path", "target", "moved", "min_accuracy", "barrier",
                           "length_ratio", "worst_t", "worst_text", "held", "status",
                           "train_steps", "steps_used", "midpoint_used", "bezier_steps",
                           "samples_per_step", "lr", "grid_points", "seed", "check_every",
                           "max_pairs", "cross_text_pairs", "midpoint_steps", "t_sampling",
                           "check_grid"),
    "connectivity_tokens": ("pair_id", "path", "target", "t", "position", "token", "correct"),
    "positions": ("solution_id", "position", "target_token", "predicted_token", "correct"),
    "neighbourhoods": ("solution_id", "text_id", "radius", "direction", "trial", "accuracy",
                       "loss"),
    "neighbourhood_radii": ("solution_id", "text_id", "radius_99", "radius_50",
                            "adversarial_radius_99", "nearest_same_text", "nearest_other_text"),
    "neighbourhood_purity": ("vector", "k", "purity", "silhouette"),
    "maps": ("solution_id", "text_id", "source", "vector", "method", "x", "y"),
    "information": ("text_id", "source", "length", "h_lm_nats", "h_lm_bits", "capacity",
                    "c_tokens", "bits_per_dimension", "per_text_dimensions"),
    "probes": ("target", "vector", "score", "metric", "baseline", "low", "high", "n", "verdict",
               "chance", "shuffled", "classes", "folds"),
    "prompting": ("solution_id", "text_id", "continuation", "token_overlap",
                  "first_token_match", "overlap_beyond_first", "aligned_from", "prompt"),
    "attention": ("layer", "slot", "attention_mass"),
    "findings": ("finding", "estimate", "low", "high", "n", "paper", "verdict", "unit", "claim",
                 "detail", "evidence"),
    "throughput": ("method", "length", "batch", "tokens", "seconds", "tokens_per_second",
                   "accuracy", "stand_in"),
    "spectrum": ("solution_id", "text_id", "seed", "length", "block", "dimension", "k", "top",
                 "smallest_found", "threshold", "stiff", "stiff_censored", "converged",
                 "products", "seconds"),
    "spectrum_eigenvalues": ("solution_id", "block", "rank", "eigenvalue"),
    "trajectories": ("solution_id", "text_id", "seed", "length", "points", "steps", "pc1", "pc2",
                     "pc12", "path_length", "displacement", "first_exact_step",
                     "first_exact_share"),
    "trajectory_points": ("solution_id", "text_id", "step", "accuracy", "loss", "x", "y"),
    "dimension": ("text_id", "source", "length", "kind", "dim", "seeds", "accuracy",
                  "reconstructed"),
    "intrinsic_dimension": ("text_id", "source", "length", "kind", "d_int", "found",
                            "dims_tried", "largest_tried", "h_lm_bits"),
}


def reconstructed(accuracy):
    """Whether an accuracy (a number, an array or a Series) counts as reconstructing the text."""
    return accuracy >= RECONSTRUCTED


def capacity_of(table: pd.DataFrame, by: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """capacity = the longest prefix length reconstructed, per group of `by` (0 where none was).

    A row is reconstructed by its `reconstructed` column (the capacity table), else by its
    `accuracy` (solutions.parquet). Groups keep the order they first appear in.
    """
    ok = table["reconstructed"].astype(bool) if "reconstructed" in table.columns \
        else reconstructed(table["accuracy"])
    held = table["length"].where(ok, 0).astype(int)
    out = table.assign(capacity=held).groupby(list(by), dropna=False, sort=False)["capacity"].max()
    return out.astype(int).reset_index()


def columns(table: str) -> list[str]:
    """The contract's columns of one analysis table, in order (ValueError for an unknown one)."""
    if table not in COLUMNS:
        raise ValueError(f"unknown analysis table {table!r}: the contract has "
                         f"{', '.join(sorted(COLUMNS))}")
    return list(COLUMNS[table])


def read(table: str, *names: str) -> list[str]:
    """Columns a reader needs from `table`; ValueError when one is not in the contract."""
    allowed = columns(table)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"{table} has no column {unknown[0]!r} in the table contract")
    return list(names)


def conform(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with exactly the contract's columns of `table`, in its order.

    ValueError naming the first missing or unknown column: an analysis that writes another
    shape than the reports read fails where it writes, not as an empty figure.
    """
    wanted = columns(table)
    missing = [c for c in wanted if c not in frame.columns]
    unknown = [c for c in frame.columns if c not in wanted]
    if missing or unknown:
        what = f"lacks column {missing[0]!r}" if missing else f"has unknown column {unknown[0]!r}"
        raise ValueError(f"the {table} table {what} (table contract: {', '.join(wanted)})")
    return frame[wanted]


def capacity_per_text(table: pd.DataFrame) -> pd.DataFrame:
    """Longest reconstructed prefix per (text, method): the best of the seeds (0 if none)."""
    out = capacity_of(table, ["text_id", "source", "method"])
    ok = table[table["reconstructed"].astype(bool)]
    h = ok.sort_values("length").groupby(["text_id", "method"]).last()["h_lm_nats"]
    out["h_lm_nats"] = [h.get((t, m), 0.0) for t, m in zip(out["text_id"], out["method"])]
    return out
