"""Across a sweep's models, is capacity bounded by information content? Capacity vs H_LM.

The figure reads the per-text table `reports.sweep_report.capacity_vs_hlm_table` builds from
DIR/results.parquet: one point per (model, share mode, text), its capacity in tokens against the
H_LM (nats, under that model) of the prefix it reconstructed. One trace per model; the marker's
shape says the text's source, a hollow marker that m was shared. If capacity is bounded by
information, a model's points spread along the capacity axis (texts of high NLL per token
reconstruct fewer tokens) more than along the H_LM axis.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .figures import base_figure, color, esc, no_data, usable

SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "pentagon")


def source_symbols(sources) -> dict[str, str]:
    """A marker shape per text source, the same for every model of the figure."""
    return {s: SYMBOLS[i % len(SYMBOLS)] for i, s in enumerate(sorted({str(v) for v in sources}))}


def capacity_vs_hlm(per_text: pd.DataFrame | None) -> go.Figure:
    """Capacity (tokens) of each text against the H_LM of its reconstructed prefix (nats)."""
    title = "Capacity vs H_LM per model"
    rows = usable(per_text, ["model", "text_id", "source", "share", "capacity", "h_lm_nats"])
    if rows is None:
        return no_data(title, "No capacity-grid job of this sweep has solutions with H_LM yet.")
    symbols = source_symbols(rows["source"])
    fig = base_figure(title, "H_LM of the longest reconstructed prefix (nats, under the model)",
                      "capacity (tokens reconstructed exactly)")
    for i, (model, group) in enumerate(rows.groupby(rows["model"].astype(str), sort=False)):
        # Shared after per-text and larger: a text whose capacity is the same either way
        # shows as a ring around a dot rather than one marker hiding the other.
        group = group.assign(_shared=group["share"].astype(str) != "none").sort_values(
            "_shared", kind="stable")
        shared = group["_shared"]
        marker = [symbols[str(s)] + ("-open" if sh else "")
                  for s, sh in zip(group["source"], shared)]
        per_token = (group["h_lm_nats"] / group["capacity"].where(group["capacity"] > 0)).round(2)
        fig.add_trace(go.Scatter(
            x=group["h_lm_nats"], y=group["capacity"], mode="markers", name=esc(model),
            marker=dict(color=color(i), size=[15 if sh else 9 for sh in shared], symbol=marker,
                        line=dict(width=2)),
            customdata=pd.DataFrame({"text": group["text_id"].astype(str).map(esc),
                                     "source": group["source"].astype(str).map(esc),
                                     "share": group["share"].astype(str).map(esc),
                                     "per_token": per_token.astype(str)}).to_numpy(),
            hovertemplate=(f"{esc(model)}<br>text %{{customdata[0]}} (%{{customdata[1]}}, share "
                           "%{customdata[2]})<br>capacity %{y} tokens<br>H_LM %{x:.1f} nats "
                           "(%{customdata[3]} nats/token)<extra></extra>")))
    return fig


def symbol_key(per_text: pd.DataFrame | None) -> str:
    """The sentence under the figure that says which marker is which source."""
    if per_text is None or per_text.empty:
        return ""
    shapes = ", ".join(f"{shape.replace('-', ' ')}: {source}"
                       for source, shape in source_symbols(per_text["source"]).items())
    return (f"One colour per model; marker shape by text source ({shapes}); filled: m per text "
            f"(share none), hollow: a shared vector (share m or e).")
