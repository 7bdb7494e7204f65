"""How far can a solution move before the text is lost, and how are solutions laid out?

Figures over `analysis/neighbourhoods.parquet` (accuracy at each perturbation radius),
`analysis/neighbourhood_radii.parquet` (radius where accuracy drops, distance to the nearest
other solution) and `analysis/maps.parquet` (2-D PCA / UMAP coordinates of every solution).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..geometry.tables import CONCATENATED, read
from .figures import (add_band, base_figure, color, esc, lines_with_gaps, no_data,
                      quantile_band, rgb_of, snippet, usable)

# Past this many texts a legend stops helping: the map keeps one colour per text but hides it.
_MAX_LEGEND_TEXTS = 25


def accuracy_vs_radius(neighbourhoods: pd.DataFrame | None) -> go.Figure:
    """Mean accuracy (over trials) against relative radius, per solution and direction."""
    title = "Accuracy vs perturbation radius"
    rows = usable(neighbourhoods, read("neighbourhoods", "solution_id", "radius", "accuracy"))
    if rows is None:
        return no_data(title, "No neighbourhood analysis in this run.")
    if "direction" not in rows.columns:
        rows = rows.assign(direction="random")
    mean = rows.groupby(["direction", "solution_id", "radius"], as_index=False)["accuracy"].mean()
    fig = base_figure(title, "radius (relative to the vector norm)", "accuracy (mean of trials)",
                      yaxis_range=[-0.02, 1.02])
    for i, (direction, group) in enumerate(mean.groupby(mean["direction"].astype(str))):
        rgb = rgb_of(color(i))
        xs, ys, labels = lines_with_gaps(group, "solution_id", "radius", "accuracy")
        fig.add_trace(go.Scatter(
            x=xs, y=ys, customdata=labels, mode="lines", legendgroup=direction,
            line=dict(color=f"rgba({rgb},0.25)", width=1),
            name=esc(f"{direction}: each solution"),
            hovertemplate="solution %{customdata}<br>radius %{x:.3f}<br>accuracy %{y:.3f}"
                          "<extra></extra>"))
        add_band(fig, quantile_band(group, "radius", "accuracy"), "radius",
                 f"{direction}: median, quartiles", rgb)
    return fig


def radius_vs_nearest(radii: pd.DataFrame | None, radius: str = "radius_99") -> go.Figure:
    """A solution's safe radius against the distance to its nearest neighbour solutions.

    Points above the diagonal have a neighbourhood that reaches another solution.
    """
    title = "Safe radius vs nearest other solution"
    rows = usable(radii, read("neighbourhood_radii", "solution_id", radius))
    nearest = [c for c in ("nearest_same_text", "nearest_other_text")
               if rows is not None and c in rows.columns and rows[c].notna().any()]
    if rows is None or not nearest:
        return no_data(title, "No neighbourhood radii in this run.")
    fig = base_figure(title, "relative distance to the nearest other solution",
                      f"{radius} (relative radius)")
    top = float(np.nanmax(rows[nearest + [radius]].to_numpy(dtype=float))) * 1.05 or 1.0
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="radius = distance",
                             line=dict(color="grey", dash="dot"), hoverinfo="skip"))
    text_ids = rows["text_id"] if "text_id" in rows.columns else rows["solution_id"]
    custom = np.column_stack([rows["solution_id"].astype(str).map(esc),
                              text_ids.astype(str).map(esc)])
    for i, column in enumerate(nearest):
        fig.add_trace(go.Scatter(
            x=rows[column], y=rows[radius], mode="markers", customdata=custom,
            name=esc(column.replace("_", " ")), marker=dict(color=color(i), size=7),
            hovertemplate="solution %{customdata[0]} (text %{customdata[1]})<br>"
                          "distance %{x:.3f}<br>radius %{y:.3f}<extra></extra>"))
    return fig


def solution_map(maps: pd.DataFrame | None, texts: pd.DataFrame | None = None,
                 vector: str | None = None, method: str = "pca") -> go.Figure:
    """2-D map of the solutions (PCA or UMAP of one vector), one colour per text.

    Hover shows the solution id, the text id and a snippet of the text (from `texts`, the
    run's texts frame, when given).
    """
    title = f"{method.upper()} map of the solutions"
    rows = usable(maps, read("maps", "solution_id", "text_id", "vector", "method", "x", "y"))
    if rows is not None:
        rows = rows[rows["method"].astype(str) == method]
        vector = vector or (CONCATENATED if CONCATENATED in set(rows["vector"].astype(str))
                            else next(iter(rows["vector"].astype(str)), None))
        rows = rows[rows["vector"].astype(str) == vector]
    if rows is None or rows.empty:
        return no_data(title, f"No {method.upper()} map in this run.")
    snippets = _snippets(texts)
    n_texts = rows["text_id"].nunique()
    fig = base_figure(f"{title} (vector {vector})", f"{method.upper()} 1", f"{method.upper()} 2",
                      showlegend=n_texts <= _MAX_LEGEND_TEXTS)
    for i, (text_id, group) in enumerate(rows.groupby(rows["text_id"].astype(str), sort=True)):
        custom = np.column_stack([
            group["solution_id"].astype(str).map(esc),
            np.full(len(group), esc(text_id), dtype=object),
            np.full(len(group), esc(snippets.get(text_id, "")), dtype=object),
        ])
        fig.add_trace(go.Scatter(
            x=group["x"], y=group["y"], mode="markers", name=esc(text_id),
            marker=dict(color=color(i), size=8), customdata=custom,
            hovertemplate="solution %{customdata[0]}<br>text %{customdata[1]}<br>"
                          "%{customdata[2]}<extra></extra>"))
    return fig


def _snippets(texts: pd.DataFrame | None) -> dict[str, str]:
    if texts is None or not {"text_id", "text"} <= set(texts.columns):
        return {}
    return {str(t): snippet(x, 60) for t, x in zip(texts["text_id"], texts["text"])}
