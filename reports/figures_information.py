"""What do the two vectors hold, how is it read, and how fast is one-step decoding?

Figures over `analysis/probes.parquet`, `information.parquet`, `attention.parquet`,
`prompting.parquet` and `throughput.parquet` (columns in docs/tables.md).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ..geometry.tables import read
from .figures import base_figure, color, esc, no_data, usable

_SLOT_ORDER = ("bos", "e", "m")


def probe_scores(probes: pd.DataFrame | None) -> go.Figure:
    """Each probe's cross-validated score with its 95% interval, beside its baseline; probes
    with no evidence at this n are drawn hollow."""
    title = "Linear probes: score vs baseline (95% interval)"
    rows = usable(probes, read("probes", "target", "vector", "score", "baseline", "low", "high"))
    if rows is None:
        return no_data(title, "No probes were trained in this run.")
    fig = base_figure(title, "what the probe predicts", "score (accuracy, macro AUC or R^2)",
                      barmode="group")
    for i, (vector, group) in enumerate(rows.groupby(rows["vector"].astype(str))):
        evidence = group["verdict"].astype(str).eq("evidence") if "verdict" in group else True
        fig.add_trace(go.Scatter(
            x=group["target"].astype(str).map(esc), y=group["score"], mode="markers",
            name=esc(f"probe of {vector}"), marker=dict(color=color(i), size=10, symbol=[
                "circle" if ok else "circle-open" for ok in pd.Series(evidence, index=group.index)]),
            error_y=dict(type="data", symmetric=False, array=group["high"] - group["score"],
                         arrayminus=group["score"] - group["low"]),
            customdata=group[["metric", "n"]].astype(str).map(esc).to_numpy()
            if {"metric", "n"} <= set(group.columns) else None,
            hovertemplate="%{x}: %{y:.3f} (%{customdata[0]}, n %{customdata[1]})<extra></extra>"))
    base = rows.groupby(rows["target"].astype(str))["baseline"].max().reset_index()
    fig.add_trace(go.Scatter(x=base["target"].map(esc), y=base["baseline"], mode="markers",
                             name="baseline (chance or shuffled labels)",
                             marker=dict(color="#888888", symbol="line-ew-open", size=22),
                             hovertemplate="baseline %{y:.3f}<extra></extra>"))
    return fig


def bits_per_dimension(information: pd.DataFrame | None) -> go.Figure:
    """H_LM of the reconstructed prefix divided by the trained dimensions, per source."""
    title = "Bits per trained dimension"
    rows = usable(information, read("information", "text_id", "bits_per_dimension"))
    if rows is None:
        return no_data(title, "No information analysis in this run.")
    sources = rows["source"].astype(str) if "source" in rows.columns else "all"
    fig = base_figure(title, "source", "bits per dimension")
    fig.add_trace(go.Box(
        x=pd.Series(sources, index=rows.index).map(esc), y=rows["bits_per_dimension"],
        name="texts", marker_color=color(0), boxpoints="all", jitter=0.3, pointpos=0,
        customdata=rows["text_id"].astype(str).map(esc),
        hovertemplate="text %{customdata}<br>%{y:.4f} bits/dim<extra></extra>"))
    return fig


def attention_by_layer(attention: pd.DataFrame | None) -> go.Figure:
    """Share of attention that query positions give to each slot (bos, e, m), per layer."""
    title = "Attention to e vs m by layer"
    rows = usable(attention, read("attention", "layer", "slot", "attention_mass"))
    if rows is None:
        return no_data(title, "No attention analysis in this run.")
    fig = base_figure(title, "layer", "mean attention share", yaxis_range=[0, 1.02],
                      xaxis_dtick=1)
    present = list(dict.fromkeys(rows["slot"].astype(str)))
    slots = [s for s in _SLOT_ORDER if s in present] + [s for s in present
                                                        if s not in _SLOT_ORDER]
    for i, slot in enumerate(slots):
        group = rows[rows["slot"].astype(str) == slot]
        group = group.groupby("layer", as_index=False)["attention_mass"].mean()
        fig.add_trace(go.Scatter(x=group["layer"], y=group["attention_mass"],
                                 mode="lines+markers", name=esc(slot), marker_color=color(i)))
    return fig


def prompting_overlap(prompting: pd.DataFrame | None) -> go.Figure:
    """Token overlap between the text and what the model writes when the vectors are a prompt."""
    title = "Proto-tokens used as a prompt: overlap with the text"
    rows = usable(prompting, read("prompting", "solution_id", "token_overlap"))
    if rows is None:
        return no_data(title, "No prompting analysis in this run.")
    fig = base_figure(title, "token overlap with the target text", "solutions")
    fig.add_trace(go.Histogram(x=rows["token_overlap"], marker_color=color(0), name="solutions",
                               xbins=dict(start=0, end=1.0001, size=0.025)))
    return fig


def throughput(throughput: pd.DataFrame | None) -> go.Figure:
    """Tokens reconstructed per second of decoding: one-step vs autoregressive [mem]."""
    title = "Decoding throughput"
    rows = usable(throughput, read("throughput", "method", "length", "tokens_per_second"))
    if rows is None:
        return no_data(title, "No throughput measurement in this run.")
    fig = base_figure(title, "text length (tokens)", "tokens per second", yaxis_type="log")
    for i, (method, group) in enumerate(rows.groupby(rows["method"].astype(str))):
        group = group.groupby("length", as_index=False)["tokens_per_second"].median()
        fig.add_trace(go.Scatter(x=group["length"], y=group["tokens_per_second"],
                                 mode="lines+markers", name=esc(method), marker_color=color(i)))
    return fig
