"""How do the solutions of ONE text differ: distances, connectivity, per-position behaviour?

Figures for the per-text comparison page. Each takes the run's table (uniqueness,
connectivity_pairs, positions, connectivity_tokens) and the solution ids of the text, and
shows them side by side as matrices.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..geometry.tables import CONCATENATED, read
from .figures import TEMPLATE, base_figure, esc, no_data, usable

_ACCURACY_SCALE = "RdYlGn"
# Two colours, no gradient: a position is right or wrong.
_CORRECT_SCALE = [[0, "#d62728"], [0.5, "#d62728"], [0.5, "#2ca02c"], [1, "#2ca02c"]]
_MAX_CELL_TEXT = 1500  # tokens written into cells beyond this many cells become hover-only


def _labels(solution_ids) -> list[str]:
    return [f"#{esc(s)}" for s in solution_ids]


def _pair_matrix(rows: pd.DataFrame, solution_ids: list, value: str) -> np.ndarray:
    """Symmetric matrix of a per-pair value, NaN where a pair was not measured."""
    index = {s: i for i, s in enumerate(solution_ids)}
    matrix = np.full((len(solution_ids), len(solution_ids)), np.nan)
    for a, b, v in zip(rows["solution_a"], rows["solution_b"], rows[value]):
        if a in index and b in index:
            matrix[index[a], index[b]] = matrix[index[b], index[a]] = v
    return matrix


def _of_solutions(frame: pd.DataFrame | None, solution_ids: list,
                  columns: list[str]) -> pd.DataFrame | None:
    rows = usable(frame, columns)
    if rows is None:
        return None
    keep = rows["solution_a"].isin(solution_ids) & rows["solution_b"].isin(solution_ids)
    return rows[keep] if keep.any() else None


def distance_heatmap(uniqueness: pd.DataFrame | None, solution_ids: list,
                     vector: str | None = None) -> go.Figure:
    """Pairwise cosine distance between the given solutions (one vector: e, m or e+m)."""
    title = "Pairwise cosine distance"
    rows = _of_solutions(uniqueness, solution_ids, read("uniqueness", "solution_a", "solution_b",
                                                        "vector", "cosine_distance"))
    if rows is not None:
        vectors = list(dict.fromkeys(rows["vector"].astype(str)))
        vector = vector or (CONCATENATED if CONCATENATED in vectors else vectors[0])
        rows = rows[rows["vector"].astype(str) == vector]
    if rows is None or rows.empty:
        return no_data(title, "No uniqueness pairs between solutions of this text.")
    matrix = _pair_matrix(rows, solution_ids, "cosine_distance")
    np.fill_diagonal(matrix, 0.0)
    labels = _labels(solution_ids)
    fig = base_figure(f"{title} ({vector})", "solution", "solution", height=520)
    fig.add_trace(go.Heatmap(z=matrix, x=labels, y=labels, colorscale="Viridis",
                             colorbar=dict(title="cosine distance"),
                             hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>"))
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def connectivity_matrix(pairs: pd.DataFrame | None, solution_ids: list) -> go.Figure:
    """Lowest accuracy along the linear and along the Bezier path, for every pair."""
    title = "Lowest accuracy along the path between two solutions"
    rows = _of_solutions(pairs, solution_ids, read("connectivity_pairs", "solution_a",
                                                   "solution_b", "path", "min_accuracy"))
    if rows is None:
        return no_data(title, "No connectivity pairs between solutions of this text.")
    paths = [p for p in ("linear", "bezier") if p in set(rows["path"].astype(str))]
    labels = _labels(solution_ids)
    fig = make_subplots(rows=1, cols=len(paths), subplot_titles=[f"{p} path" for p in paths],
                        horizontal_spacing=0.12)
    for col, path in enumerate(paths, start=1):
        matrix = _pair_matrix(rows[rows["path"].astype(str) == path], solution_ids,
                              "min_accuracy")
        np.fill_diagonal(matrix, 1.0)
        fig.add_trace(go.Heatmap(z=matrix, x=labels, y=labels, zmin=0, zmax=1,
                                 colorscale=_ACCURACY_SCALE, showscale=col == 1,
                                 colorbar=dict(title="min accuracy"),
                                 hovertemplate=f"{path}: %{{y}} to %{{x}}: %{{z:.3f}}"
                                               "<extra></extra>"), row=1, col=col)
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    fig.update_layout(template=TEMPLATE, title=dict(text=title), height=480,
                      margin=dict(l=60, r=20, t=80, b=55))
    return fig


def _escaped(rows: pd.DataFrame, column: str) -> pd.Series:
    """A text column escaped for hover and cell text; empty strings when the table lacks it."""
    if column not in rows.columns:
        return pd.Series("", index=rows.index)
    return rows[column].fillna("").astype(str).map(esc)


def _grid(rows: pd.DataFrame, row_key: str, columns: list[str]) -> dict[str, pd.DataFrame]:
    """Pivot long rows into one (row_key x position) frame per column."""
    return {c: rows.pivot_table(index=row_key, columns="position", values=c, aggfunc="first")
            for c in columns}


def position_correctness(positions: pd.DataFrame | None, solution_ids: list) -> go.Figure:
    """Which positions each solution gets right (green) or wrong (red)."""
    title = "Per-position correctness of every solution"
    rows = usable(positions, read("positions", "solution_id", "position", "correct"))
    if rows is not None:
        rows = rows[rows["solution_id"].isin(solution_ids)]
    if rows is None or rows.empty:
        return no_data(title, "No per-position table (positions.parquet) for this text; "
                              "the analyses write it.")
    rows = rows.assign(correct=rows["correct"].astype(float),
                       target_token=_escaped(rows, "target_token"),
                       predicted_token=_escaped(rows, "predicted_token"))
    grids = _grid(rows, "solution_id", ["correct", "target_token", "predicted_token"])
    z = grids["correct"]
    custom = np.dstack([grids["target_token"].reindex_like(z).fillna("").to_numpy(),
                        grids["predicted_token"].reindex_like(z).fillna("").to_numpy()])
    fig = base_figure(title, "position", "solution", height=max(260, 28 * len(z) + 140))
    fig.add_trace(go.Heatmap(
        z=z.to_numpy(), x=list(z.columns), y=_labels(z.index), customdata=custom,
        zmin=0, zmax=1, colorscale=_CORRECT_SCALE, showscale=False, xgap=1, ygap=1,
        hovertemplate="%{y}, position %{x}<br>target %{customdata[0]}<br>"
                      "predicted %{customdata[1]}<extra></extra>"))
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def path_tokens(tokens: pd.DataFrame | None, pair_id, path: str = "linear") -> go.Figure:
    """Decoded tokens along one pair's path: a t x position grid coloured by correctness."""
    title = f"Decoded tokens along the {path} path of pair {pair_id}"
    rows = usable(tokens, read("connectivity_tokens", "pair_id", "path", "t", "position",
                               "correct"))
    if rows is not None:
        rows = rows[(rows["pair_id"] == pair_id) & (rows["path"].astype(str) == path)]
    if rows is None or rows.empty:
        return no_data(title, f"No decoded tokens for the {path} path of this pair.")
    rows = rows.assign(correct=rows["correct"].astype(float), token=_escaped(rows, "token"))
    grids = _grid(rows, "t", ["correct", "token"])
    z, text = grids["correct"], grids["token"].reindex_like(grids["correct"]).fillna("")
    y = [f"{t:.3f}" for t in z.index]
    fig = base_figure(title, "position", "t", height=max(300, 22 * len(z) + 140))
    fig.add_trace(go.Heatmap(
        z=z.to_numpy(), x=list(z.columns), y=y, text=text.to_numpy(),
        texttemplate="%{text}" if z.size <= _MAX_CELL_TEXT else None,
        textfont=dict(size=9), zmin=0, zmax=1, colorscale=_CORRECT_SCALE, showscale=False,
        xgap=1, ygap=1, hovertemplate="t %{y}, position %{x}<br>token %{text}<extra></extra>"))
    fig.update_yaxes(type="category")
    return fig
