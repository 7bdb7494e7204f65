"""How a figure says "nothing to show" and how user text goes into a figure safely.

Every figure builder in `figures_*.py` takes a tidy DataFrame (the tables of docs/tables.md)
and returns a `plotly.graph_objects.Figure`, so a notebook can call it directly. The helpers
here are the conventions they share:

- a builder given no usable rows returns `no_data(title, sentence)`: a Figure without traces
  whose sentence `no_data_reason` reads back, so a page shows the sentence instead of an empty
  frame (and a notebook still gets a Figure it can display);
- plotly renders a subset of HTML in hover text, legends, titles and tick labels, so every
  user-supplied string passes through `esc` before it reaches a figure.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

TEMPLATE = "plotly_white"
# Qualitative colours for categorical groups (pair kinds, paths, sources); Plotly's D3 palette
# keeps neighbouring categories distinguishable on white.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
_NO_DATA_KEY = "protoscope_no_data"


def esc(value: object) -> str:
    """Escape a value for any place plotly or a page renders as HTML."""
    return html.escape(str(value), quote=True)


def snippet(text: object, limit: int = 80) -> str:
    """A one-line preview of a text (not escaped: escape where it is used)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def base_figure(title: str, x_title: str, y_title: str, **layout) -> go.Figure:
    """An empty figure with the report's look; titles are escaped here once."""
    defaults = dict(height=420, margin=dict(l=60, r=20, t=60, b=55))
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=dict(text=esc(title)), xaxis_title=esc(x_title),
                      yaxis_title=esc(y_title), **{**defaults, **layout})
    return fig


def no_data(title: str, sentence: str) -> go.Figure:
    """A Figure that carries only a sentence saying why there is nothing to plot."""
    fig = go.Figure()
    fig.update_layout(
        template=TEMPLATE,
        title=dict(text=esc(title)),
        height=200,
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        meta={_NO_DATA_KEY: sentence},
        annotations=[dict(text=esc(sentence), showarrow=False, x=0.5, y=0.5,
                          xref="paper", yref="paper")],
    )
    return fig


def no_data_reason(fig: go.Figure) -> str | None:
    """The sentence of a `no_data` figure, or None when the figure has something to show."""
    meta = fig.layout.meta
    if isinstance(meta, dict) and _NO_DATA_KEY in meta:
        return str(meta[_NO_DATA_KEY])
    return None


def missing_columns(frame: pd.DataFrame | None, columns: list[str]) -> list[str]:
    """Columns a builder needs that the table lacks (all of them when there is no table)."""
    if frame is None:
        return list(columns)
    return [c for c in columns if c not in frame.columns]


def usable(frame: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame | None:
    """The rows with every needed column present and finite-or-set, or None if none are left.

    Builders call this first so that an absent table, an older table without a column and a
    table whose rows are all NaN are the same "no data" case.
    """
    if missing_columns(frame, columns):
        return None
    rows = frame.dropna(subset=columns)
    return rows if len(rows) else None


def quantile_band(frame: pd.DataFrame, x: str, y: str, low: float = 0.25,
                  high: float = 0.75) -> pd.DataFrame:
    """Median and an inter-quantile band of y at each x (for "every line plus a band")."""
    grouped = frame.groupby(x, sort=True)[y]
    return pd.DataFrame({
        "median": grouped.median(),
        "low": grouped.quantile(low),
        "high": grouped.quantile(high),
    }).reset_index()


def add_band(fig: go.Figure, band: pd.DataFrame, x: str, name: str, rgb: str,
             **subplot) -> None:
    """Draw a median line over a shaded quantile band (two traces, one legend entry)."""
    xs = np.concatenate([band[x].to_numpy(), band[x].to_numpy()[::-1]])
    ys = np.concatenate([band["high"].to_numpy(), band["low"].to_numpy()[::-1]])
    fig.add_trace(go.Scatter(x=xs, y=ys, fill="toself", fillcolor=f"rgba({rgb},0.18)",
                             line=dict(width=0), hoverinfo="skip", showlegend=False,
                             legendgroup=name), **subplot)
    fig.add_trace(go.Scatter(x=band[x], y=band["median"], mode="lines",
                             line=dict(color=f"rgb({rgb})", width=3),
                             name=esc(name), legendgroup=name), **subplot)


def rgb_of(hex_color: str) -> str:
    """'#1f77b4' -> '31,119,180' (for rgba() fills)."""
    h = hex_color.lstrip("#")
    return ",".join(str(int(h[i:i + 2], 16)) for i in (0, 2, 4))


def lines_with_gaps(frame: pd.DataFrame, key: str, x: str, y: str) -> tuple[list, list, list]:
    """Many lines as one trace: x/y with None between groups (thousands of pairs stay fast)."""
    xs: list = []
    ys: list = []
    labels: list = []
    for value, group in frame.sort_values([key, x]).groupby(key, sort=False):
        xs.extend(group[x].tolist() + [None])
        ys.extend(group[y].tolist() + [None])
        labels.extend([esc(value)] * len(group) + [None])
    return xs, ys, labels
