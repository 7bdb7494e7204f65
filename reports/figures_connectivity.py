"""Do two solutions of a text stay connected along a straight line, or only along a curve?

Figures over `analysis/connectivity.parquet` (accuracy at each t of each pair's path) and
`analysis/connectivity_pairs.parquet` (one summary row per pair and path): the paper's
figure 7 (every pair as a line over t, with the median and quartile band) and the barrier and
length-ratio summaries.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ..geometry.tables import read
from .figures import (add_band, base_figure, color, esc, lines_with_gaps, no_data,
                      quantile_band, rgb_of, usable)

_SUMMARY = {
    "barrier": "barrier (max loss minus mean endpoint loss, nats)",
    "length_ratio": "curve length / straight length",
    "min_accuracy": "lowest accuracy along the path",
}


def _pair_groups(frame: pd.DataFrame):
    """(label, rows) for same-text and different-text pairs (one group when unknown)."""
    if "same_text" not in frame.columns:
        yield "pairs", frame
        return
    same = frame["same_text"].astype(bool)
    for label, mask in (("same text", same), ("different texts", ~same)):
        part = frame[mask]
        if part.empty:
            continue
        # A different-text pair is scored against each of its texts: one line per target, or
        # the two curves of a pair would join into one zigzag.
        if "target" in part.columns and part["target"].nunique() > 1:
            for target, sub in part.groupby(part["target"].astype(str)):
                yield f"{label}, scored on text {target}", sub
        else:
            yield label, part


def path_accuracy(connectivity: pd.DataFrame | None, path: str = "linear") -> go.Figure:
    """Accuracy along one path kind ("linear" or "bezier") for every pair, with a median band."""
    title = f"Accuracy along {path} paths"
    rows = usable(connectivity, read("connectivity", "pair_id", "path", "t", "accuracy"))
    if rows is not None:
        rows = rows[rows["path"].astype(str) == path]
    if rows is None or rows.empty:
        return no_data(title, f"No {path} paths were evaluated in this run.")
    fig = base_figure(title, "t (0 = solution a, 1 = solution b)", "accuracy",
                      yaxis_range=[-0.02, 1.02])
    for i, (label, group) in enumerate(_pair_groups(rows)):
        rgb = rgb_of(color(i))
        xs, ys, labels = lines_with_gaps(group, "pair_id", "t", "accuracy")
        fig.add_trace(go.Scatter(
            x=xs, y=ys, customdata=labels, mode="lines",
            line=dict(color=f"rgba({rgb},0.25)", width=1),
            name=esc(f"{label}: each pair ({group['pair_id'].nunique()})"),
            legendgroup=label,
            hovertemplate="pair %{customdata}<br>t %{x:.2f}<br>accuracy %{y:.3f}"
                          "<extra></extra>"))
        add_band(fig, quantile_band(group, "t", "accuracy"), "t",
                 f"{label}: median, quartiles", rgb)
    return fig


def pair_summary(pairs: pd.DataFrame | None, value: str = "barrier") -> go.Figure:
    """One box per path kind of a per-pair summary (barrier, length_ratio or min_accuracy)."""
    if value not in _SUMMARY:
        raise ValueError(f"value must be one of {sorted(_SUMMARY)}, not {value!r}")
    title = {"barrier": "Loss barrier per pair", "length_ratio": "Path length ratio per pair",
             "min_accuracy": "Lowest accuracy per pair"}[value]
    rows = usable(pairs, read("connectivity_pairs", "pair_id", "path", value))
    if rows is None:
        return no_data(title, "No connectivity pairs in this run.")
    fig = base_figure(title, "path", _SUMMARY[value], boxmode="group")
    for i, (label, group) in enumerate(_pair_groups(rows)):
        custom = pd.DataFrame({c: group[c].astype(str).map(esc) if c in group.columns else ""
                               for c in ("pair_id", "text_a", "text_b")})
        fig.add_trace(go.Box(
            x=group["path"].astype(str).map(esc), y=group[value], name=esc(label),
            marker_color=color(i), boxpoints="all", jitter=0.3, pointpos=0,
            customdata=custom.to_numpy(),
            hovertemplate="pair %{customdata[0]} (texts %{customdata[1]} / "
                          "%{customdata[2]})<br>%{y:.3f}<extra></extra>"))
    return fig
