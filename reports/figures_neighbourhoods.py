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

# Past this many texts a legend stops helping: the map keeps one colour per text but hides it,
# drawing every text in one trace (a trace per text made a 10,000-text page slow to build and
# to open).
_MAX_LEGEND_TEXTS = 25
MAP_POINTS = 5000  # points a scatter draws at most: a seeded sample past it, said in its title
WEBGL_POINTS = 1000  # past this many points a scatter is drawn with WebGL (Scattergl)


def sample_for_drawing(rows: pd.DataFrame, limit: int = MAP_POINTS, seed: int = 0
                       ) -> tuple[pd.DataFrame, str]:
    """At most `limit` rows (a seeded sample, in their order) and the words a title adds."""
    if len(rows) <= limit:
        return rows, ""
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=limit, replace=False))
    return rows.iloc[keep], f" (a sample of {limit:,} of {len(rows):,} solutions)"


def _scatter(n_points: int):
    return go.Scattergl if n_points > WEBGL_POINTS else go.Scatter


def accuracy_vs_radius(neighbourhoods: pd.DataFrame | None) -> go.Figure:
    """Mean accuracy (over trials) against relative radius, per solution and direction."""
    title = "Accuracy vs perturbation radius"
    rows = usable(neighbourhoods, read("neighbourhoods", "solution_id", "radius", "accuracy"))
    if rows is None:
        return no_data(title, "No neighbourhood analysis in this run.")
    if "direction" not in rows.columns:
        rows = rows.assign(direction="random")
    mean = rows.groupby(["direction", "solution_id", "radius"], as_index=False)["accuracy"].mean()
    ids = mean["solution_id"].drop_duplicates()
    drawn, note = sample_for_drawing(ids.to_frame(), MAP_POINTS // 5)
    fig = base_figure(title + note.replace("solutions)", "solutions' lines; the band uses all)"),
                      "radius (relative to the vector norm)", "accuracy (mean of trials)",
                      yaxis_range=[-0.02, 1.02])
    for i, (direction, group) in enumerate(mean.groupby(mean["direction"].astype(str))):
        rgb = rgb_of(color(i))
        lines = group[group["solution_id"].isin(drawn["solution_id"])] if note else group
        xs, ys, labels = lines_with_gaps(lines, "solution_id", "radius", "accuracy")
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
    top = float(np.nanmax(rows[nearest + [radius]].to_numpy(dtype=float))) * 1.05 or 1.0
    rows, note = sample_for_drawing(rows)
    fig = base_figure(title + note, "relative distance to the nearest other solution",
                      f"{radius} (relative radius)")
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="radius = distance",
                             line=dict(color="grey", dash="dot"), hoverinfo="skip"))
    text_ids = rows["text_id"] if "text_id" in rows.columns else rows["solution_id"]
    custom = np.column_stack([rows["solution_id"].astype(str).map(esc),
                              text_ids.astype(str).map(esc)])
    for i, column in enumerate(nearest):
        fig.add_trace(_scatter(len(rows))(
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
    order = {t: i for i, t in enumerate(sorted(rows["text_id"].astype(str).unique()))}
    rows, note = sample_for_drawing(rows)
    fig = base_figure(f"{title} (vector {vector}){note}", f"{method.upper()} 1",
                      f"{method.upper()} 2", showlegend=n_texts <= _MAX_LEGEND_TEXTS)
    if n_texts > _MAX_LEGEND_TEXTS:  # one trace, a colour per text (no legend to read them)
        text_ids = rows["text_id"].astype(str)
        custom = np.column_stack([rows["solution_id"].astype(str).map(esc), text_ids.map(esc),
                                  text_ids.map(lambda t: esc(snippets.get(t, "")))])
        fig.add_trace(_scatter(len(rows))(
            x=rows["x"], y=rows["y"], mode="markers", name="solutions",
            marker=dict(color=[color(order[t]) for t in text_ids], size=6), customdata=custom,
            hovertemplate="solution %{customdata[0]}<br>text %{customdata[1]}<br>"
                          "%{customdata[2]}<extra></extra>"))
        return fig
    for text_id, group in rows.groupby(rows["text_id"].astype(str), sort=True):
        i = order[text_id]
        custom = np.column_stack([
            group["solution_id"].astype(str).map(esc),
            np.full(len(group), esc(text_id), dtype=object),
            np.full(len(group), esc(snippets.get(text_id, "")), dtype=object),
        ])
        fig.add_trace(_scatter(len(rows))(
            x=group["x"], y=group["y"], mode="markers", name=esc(text_id),
            marker=dict(color=color(i), size=8), customdata=custom,
            hovertemplate="solution %{customdata[0]}<br>text %{customdata[1]}<br>"
                          "%{customdata[2]}<extra></extra>"))
    return fig


def _snippets(texts: pd.DataFrame | None) -> dict[str, str]:
    if texts is None or not {"text_id", "text"} <= set(texts.columns):
        return {}
    return {str(t): snippet(x, 60) for t, x in zip(texts["text_id"], texts["text"])}
