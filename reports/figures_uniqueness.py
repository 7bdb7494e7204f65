"""Are solutions of one text closer to each other than to solutions of other texts?

Figures over `analysis/uniqueness.parquet` (one row per solution pair and vector) and
`analysis/uniqueness_bins.parquet`: the distance distributions by pair kind, and the paper's
figures 5 and 6 (proto-token cosine distance against TF-IDF and semantic text distance,
coloured by pair kind).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ..geometry.tables import CONCATENATED, read
from .figures import base_figure, color, esc, no_data, usable

PAIR_KINDS = ("same_text", "same_context", "different_context")
_TEXT_DISTANCE = {"tfidf": ("tfidf_distance", "TF-IDF cosine distance of the texts"),
                  "semantic": ("semantic_distance", "semantic distance of the texts "
                                                    "(MiniLM cosine)")}


def _kinds(frame: pd.DataFrame) -> list[str]:
    """Pair kinds in the paper's order, then any others the table holds."""
    present = list(dict.fromkeys(frame["pair_kind"].astype(str)))
    return [k for k in PAIR_KINDS if k in present] + [k for k in present if k not in PAIR_KINDS]


def kind_color(kind: str, kinds: list[str]) -> str:
    return color(PAIR_KINDS.index(kind) if kind in PAIR_KINDS else len(PAIR_KINDS)
                 + kinds.index(kind))


def default_vector(frame: pd.DataFrame) -> str:
    """'e+m' (e and m concatenated) when the table has it, else its first vector."""
    vectors = list(dict.fromkeys(frame["vector"].astype(str)))
    return CONCATENATED if CONCATENATED in vectors else vectors[0]


def distance_by_pair_kind(uniqueness: pd.DataFrame | None) -> go.Figure:
    """Cosine distance between solutions, per vector (e, m, e+m), one box per pair kind."""
    title = "Cosine distance between solutions by pair kind"
    rows = usable(uniqueness, read("uniqueness", "pair_kind", "vector", "cosine_distance"))
    if rows is None:
        return no_data(title, "No uniqueness analysis in this run.")
    fig = base_figure(title, "vector", "cosine distance", boxmode="group")
    kinds = _kinds(rows)
    for kind in kinds:
        group = rows[rows["pair_kind"].astype(str) == kind]
        stats = [(vector, box_stats(g["cosine_distance"]))
                 for vector, g in group.groupby(group["vector"].astype(str), sort=True)]
        # Precomputed quartiles: a run with 500 solutions has ~375k rows here, too many to
        # ship into the page as raw points.
        fig.add_trace(go.Box(x=[esc(v) for v, _ in stats], name=esc(kind),
                             marker_color=kind_color(kind, kinds),
                             **{k: [st[k] for _, st in stats] for k in stats[0][1]}))
    return fig


def box_stats(values: pd.Series) -> dict[str, float]:
    """Quartiles and Tukey whiskers (the furthest values within 1.5 IQR of the box)."""
    q1, median, q3 = values.quantile([0.25, 0.5, 0.75]).tolist()
    reach = 1.5 * (q3 - q1)
    inside = values[(values >= q1 - reach) & (values <= q3 + reach)]
    return {"q1": q1, "median": median, "q3": q3, "lowerfence": float(inside.min()),
            "upperfence": float(inside.max())}


def _sample(group: pd.DataFrame, max_points: int) -> pd.DataFrame:
    # SVG scatter slows down past a few thousand points per trace; a fixed seed keeps the
    # page reproducible. The title says how many pairs are shown.
    return group if len(group) <= max_points else group.sample(max_points, random_state=0)


def distance_vs_text_distance(uniqueness: pd.DataFrame | None, text_distance: str = "tfidf",
                              vector: str | None = None, bins: pd.DataFrame | None = None,
                              max_points: int = 3000) -> go.Figure:
    """Proto-token cosine distance against text distance, coloured by pair kind.

    `text_distance` is "tfidf" (paper's figure 5) or "semantic" (figure 6); `vector` picks e,
    m or pair (default pair); `bins` (uniqueness_bins) adds the per-bin medians as lines.
    """
    if text_distance not in _TEXT_DISTANCE:
        raise ValueError(f"text_distance must be one of {sorted(_TEXT_DISTANCE)}, "
                         f"not {text_distance!r}")
    column, x_title = _TEXT_DISTANCE[text_distance]
    title = f"Proto-token distance vs {text_distance} text distance"
    rows = usable(uniqueness, read("uniqueness", "pair_kind", "vector", "cosine_distance",
                                        column))
    if rows is None:
        return no_data(title, f"No pairs with a {text_distance} text distance in this run.")
    vector = vector or default_vector(rows)
    rows = rows[rows["vector"].astype(str) == vector]
    if rows.empty:
        return no_data(title, f"No pairs for vector {vector!r} in this run.")
    kinds = _kinds(rows)
    shown = pd.concat([_sample(rows[rows["pair_kind"].astype(str) == k], max_points)
                       for k in kinds])
    note = "" if len(shown) == len(rows) else f" ({len(shown)} of {len(rows)} pairs shown)"
    fig = base_figure(f"{title}, vector {vector}{note}", x_title,
                      f"cosine distance of {vector}")
    for kind in kinds:
        fig.add_trace(_pair_scatter(shown[shown["pair_kind"].astype(str) == kind], column,
                                    kind, kind_color(kind, kinds)))
    if bins is not None and "vector" in bins.columns:
        bins = bins[bins["vector"].astype(str) == vector]
    if bins is not None:
        _add_bin_medians(fig, bins, text_distance, kinds)
    return fig


def _pair_scatter(group: pd.DataFrame, column: str, kind: str, rgb: str) -> go.Scatter:
    custom = pd.DataFrame({c: group[c].astype(str).map(esc) if c in group.columns else ""
                           for c in ("text_a", "text_b", "solution_a", "solution_b")})
    return go.Scatter(
        x=group[column], y=group["cosine_distance"], mode="markers", name=esc(kind),
        marker=dict(color=rgb, size=5, opacity=0.55), customdata=custom.to_numpy(),
        hovertemplate="texts %{customdata[0]} / %{customdata[1]}<br>"
                      "solutions %{customdata[2]} / %{customdata[3]}<br>"
                      "text distance %{x:.3f}<br>cosine distance %{y:.3f}<extra></extra>")


def _add_bin_medians(fig: go.Figure, bins: pd.DataFrame, text_distance: str,
                     kinds: list[str]) -> None:
    rows = usable(bins, read("uniqueness_bins", "text_distance", "bin_low", "bin_high",
                             "pair_kind", "median_cosine_distance"))
    if rows is None:
        return
    rows = rows[rows["text_distance"].astype(str) == text_distance]
    for kind, group in rows.groupby(rows["pair_kind"].astype(str), sort=True):
        group = group.sort_values("bin_low")
        mid = (group["bin_low"] + group["bin_high"]) / 2
        rgb = kind_color(kind, kinds + [k for k in [kind] if k not in kinds])
        fig.add_trace(go.Scatter(
            x=mid, y=group["median_cosine_distance"], mode="lines+markers",
            name=esc(f"{kind} bin median"), line=dict(color=rgb, width=3),
            marker=dict(symbol="diamond", size=8),
            customdata=group["n"] if "n" in group.columns else None,
            hovertemplate="bin median %{y:.3f}<br>pairs %{customdata}<extra></extra>"))
