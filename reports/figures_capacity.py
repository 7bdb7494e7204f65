"""How well were the texts fitted, and how long a prefix can two vectors hold?

Overview figures read `solutions.parquet`; capacity figures read `analysis/capacity.parquet`
and `analysis/information.parquet` (columns in docs/tables.md). Capacity of one (text, seed,
method) is the longest prefix length whose row says `reconstructed`, as in the paper
(geometry/tables.py `capacity_of`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..geometry.tables import RECONSTRUCTED, capacity_of, capacity_per_text, read
from .figures import base_figure, color, esc, lines_with_gaps, no_data, usable

_METHOD_DASH = {"one-step": "solid", "mem": "dash"}


def _groups(frame: pd.DataFrame, column: str):
    """(label, rows) per value of an optional grouping column, in a stable order."""
    if column not in frame.columns:
        yield "", frame
        return
    for value, rows in frame.groupby(frame[column].astype(str), sort=True):
        yield value, rows


def accuracy_distribution(solutions: pd.DataFrame | None) -> go.Figure:
    """Histogram of final accuracy (C_tokens / N) of every solution, one colour per method."""
    title = "Accuracy of the solutions"
    rows = usable(solutions, ["accuracy"])
    if rows is None:
        return no_data(title, "No solutions in this run yet.")
    if rows["accuracy"].nunique() == 1:  # one bar says less than one sentence
        value = float(rows["accuracy"].iloc[0])
        return no_data(title, f"All {len(rows)} solutions reconstruct their text exactly."
                       if value == 1.0 else f"All {len(rows)} solutions have accuracy {value:.3g}.")
    fig = base_figure(title, "accuracy (C_tokens / N)", "solutions", barmode="overlay")
    for i, (method, group) in enumerate(_groups(rows, "method")):
        fig.add_trace(go.Histogram(x=group["accuracy"], name=esc(method or "all"),
                                   marker_color=color(i), opacity=0.75,
                                   xbins=dict(start=0, end=1.0001, size=0.02)))
    return fig


def steps_distribution(solutions: pd.DataFrame | None) -> go.Figure:
    """Histogram of optimiser steps, split by whether the solution converged."""
    title = "Optimiser steps per solution"
    rows = usable(solutions, ["steps"])
    if rows is None:
        return no_data(title, "No solutions in this run yet.")
    if rows["steps"].nunique() == 1:
        return no_data(title, f"All {len(rows)} solutions took {int(rows['steps'].iloc[0])} "
                              f"optimiser steps.")
    fig = base_figure(title, "steps (including restarts)", "solutions", barmode="stack")
    split = rows["converged"].map({True: "converged", False: "not converged"}) \
        if "converged" in rows.columns else pd.Series("all", index=rows.index)
    for i, (label, group) in enumerate(rows.groupby(split, sort=True)):
        fig.add_trace(go.Histogram(x=group["steps"], name=esc(label), marker_color=color(i)))
    return fig


def text_capacity(capacity: pd.DataFrame) -> pd.DataFrame:
    """Longest reconstructed prefix per (text_id, source, method, seed); 0 when none was."""
    keys = [k for k in ("text_id", "source", "method", "seed") if k in capacity.columns]
    return capacity_of(capacity, keys)


def capacity_curves(capacity: pd.DataFrame | None) -> go.Figure:
    """Accuracy against prefix length, one line per text (mean over seeds), per method."""
    title = "Accuracy vs prefix length"
    rows = usable(capacity, read("capacity", "text_id", "length", "accuracy"))
    if rows is None:
        return no_data(title, "No capacity search in this run.")
    # The searched lengths are powers of sqrt(2): tick exactly those on the log axis.
    lengths = sorted(rows["length"].unique().tolist())
    fig = base_figure(title, "prefix length (tokens)", "accuracy (mean over seeds)",
                      xaxis=dict(type="log", tickvals=lengths, ticktext=[str(n) for n in lengths]))
    for i, (method, group) in enumerate(_groups(rows, "method")):
        mean = group.groupby(["text_id", "length"], as_index=False)["accuracy"].mean()
        xs, ys, labels = lines_with_gaps(mean, "text_id", "length", "accuracy")
        fig.add_trace(go.Scatter(
            x=xs, y=ys, customdata=labels, mode="lines+markers", name=esc(method or "texts"),
            line=dict(color=color(i), width=1, dash=_METHOD_DASH.get(method, "solid")),
            marker=dict(size=4), opacity=0.6,
            hovertemplate="text %{customdata}<br>length %{x}<br>accuracy %{y:.3f}"
                          "<extra></extra>"))
    fig.add_hline(y=RECONSTRUCTED, line=dict(color="grey", dash="dot"),
                  annotation_text=f"reconstructed ({RECONSTRUCTED:g})")
    return fig


def capacity_by_source(capacity: pd.DataFrame | None) -> go.Figure:
    """Capacity (longest reconstructed prefix) of each text and seed, grouped by source."""
    title = "Capacity per source"
    rows = usable(capacity, read("capacity", "text_id", "length", "reconstructed"))
    if rows is None:
        return no_data(title, "No capacity search in this run.")
    caps = text_capacity(rows)
    if "source" not in caps.columns:
        caps = caps.assign(source="all")
    fig = base_figure(title, "source", "capacity (tokens)", boxmode="group")
    for i, (method, group) in enumerate(_groups(caps, "method")):
        fig.add_trace(go.Box(
            x=group["source"].astype(str).map(esc), y=group["capacity"],
            name=esc(method or "all"), marker_color=color(i), boxpoints="all", jitter=0.3,
            pointpos=0,
            customdata=group["text_id"].astype(str).map(esc),
            hovertemplate="text %{customdata}<br>capacity %{y}<extra></extra>"))
    return fig


def hlm_vs_capacity(information: pd.DataFrame | None,
                    capacity: pd.DataFrame | None = None) -> go.Figure:
    """H_LM of the longest reconstructed prefix against that capacity, one colour per source:
    from the information table, else from a capacity search's own rows (one-step method)."""
    title = "Information held (H_LM) vs capacity"
    rows = usable(information, read("information", "text_id", "capacity", "h_lm_bits"))
    if rows is None:
        rows = _hlm_at_capacity(capacity)
    if rows is None:
        return no_data(title, "No information analysis or capacity search in this run.")
    fig = base_figure(title, "capacity (tokens)", "H_LM of the reconstructed prefix (bits)")
    for i, (source, group) in enumerate(_groups(rows, "source")):
        fig.add_trace(go.Scatter(
            x=group["capacity"], y=group["h_lm_bits"], mode="markers",
            name=esc(source or "texts"), marker=dict(color=color(i), size=8),
            customdata=group["text_id"].astype(str).map(esc),
            hovertemplate="text %{customdata}<br>capacity %{x}<br>H_LM %{y:.1f} bits"
                          "<extra></extra>"))
    return fig


def _hlm_at_capacity(capacity: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per text, the longest one-step prefix reconstructed in a capacity search and its H_LM
    (geometry.tables.capacity_per_text, the same rule the capacity command prints)."""
    rows = usable(capacity, read("capacity", "text_id", "source", "method", "length",
                                     "reconstructed", "h_lm_nats"))
    if rows is None:
        return None
    per_text = capacity_per_text(rows)
    held = per_text[(per_text["method"].astype(str) == "one-step") & (per_text["capacity"] > 0)]
    return held.assign(h_lm_bits=held["h_lm_nats"] / np.log(2)) if not held.empty else None


def one_step_vs_mem(capacity: pd.DataFrame | None) -> go.Figure:
    """Per text, the one-step capacity against the autoregressive [mem] capacity."""
    title = "One-step vs [mem] capacity"
    rows = usable(capacity, read("capacity", "text_id", "length", "reconstructed", "method"))
    methods = set() if rows is None else set(rows["method"].astype(str))
    if not {"one-step", "mem"} <= methods:
        return no_data(title, "This run has no capacity search with both the one-step and "
                              "the [mem] method.")
    caps = text_capacity(rows).groupby(["text_id", "method"])["capacity"].median()
    wide = caps.unstack("method").dropna(subset=["one-step", "mem"])
    if wide.empty:
        return no_data(title, "No text was searched with both methods.")
    fig = base_figure(title, "[mem] capacity (tokens, median over seeds)",
                      "one-step capacity (tokens, median over seeds)")
    top = float(np.nanmax(wide[["one-step", "mem"]].to_numpy())) * 1.05 or 1.0
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="equal",
                             line=dict(color="grey", dash="dot"), hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=wide["mem"], y=wide["one-step"], mode="markers", name="texts",
        marker=dict(color=color(0), size=8),
        customdata=[esc(t) for t in wide.index],
        hovertemplate="text %{customdata}<br>mem %{x}<br>one-step %{y}<extra></extra>"))
    return fig
