"""What shape is the solution set around a solution? Figures of the local spectrum.

Figures over `analysis/spectrum_eigenvalues.parquet` (the top Hessian eigenvalues of each
measured solution, per block e, m, [e; m]) and `analysis/spectrum.parquet` (the stiff count
per solution and block) beside `analysis/neighbourhood_radii.parquet` (the random-direction
radius that keeps the text), when the run has it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..geometry.tables import read
from .figures import base_figure, color, esc, no_data, usable

BLOCK_ORDER = ("e", "m", "e+m")
NO_PATHS = "No trajectories in this run (fit --trajectory-every K, then analyze)."
NO_SPECTRUM = "No spectrum analysis in this run (analyze --only spectrum)."


def eigenvalue_spectra(eigenvalues: pd.DataFrame | None) -> go.Figure:
    """Eigenvalue against rank, one line per solution, a colour per block (log y)."""
    title = "Top Hessian eigenvalues per solution"
    rows = usable(eigenvalues, read("spectrum_eigenvalues", "solution_id", "block", "rank",
                                    "eigenvalue"))
    if rows is None:
        return no_data(title, NO_SPECTRUM)
    fig = base_figure(title, "rank", "eigenvalue (log; non-positive ones left out)",
                      yaxis_type="log")
    blocks = [b for b in BLOCK_ORDER if b in set(rows["block"].astype(str))]
    for i, block in enumerate(blocks):
        shown = False
        for sid, one in rows[rows["block"].astype(str) == block].groupby("solution_id"):
            one = one.sort_values("rank")
            positive = one[one["eigenvalue"] > 0]
            fig.add_trace(go.Scatter(
                x=positive["rank"], y=positive["eigenvalue"], mode="lines+markers",
                legendgroup=block, showlegend=not shown, name=esc(f"{block}"),
                line=dict(color=color(i), width=1.5), marker=dict(size=5),
                hovertemplate=f"solution {int(sid)}, {esc(block)}<br>rank %{{x}}: %{{y:.3g}}"
                              "<extra></extra>"))
            shown = True
    return fig


def stiff_vs_radius(spectrum: pd.DataFrame | None, radii: pd.DataFrame | None) -> go.Figure:
    """Per solution: its top eigenvalue of e against the radius (random directions, relative
    to |e|) where accuracy stays at 0.99: a sharper minimum should keep a smaller ball."""
    title = "Top eigenvalue of e vs the neighbourhood radius"
    top = usable(spectrum, read("spectrum", "solution_id", "block", "top", "stiff"))
    near = usable(radii, read("neighbourhood_radii", "solution_id", "radius_99"))
    if top is None:
        return no_data(title, NO_SPECTRUM)
    if near is None:
        return no_data(title, "No neighbourhood analysis in this run to compare the spectrum "
                              "with.")
    joined = top[top["block"].astype(str) == "e"].merge(near, on="solution_id")
    joined = joined[np.isfinite(joined["radius_99"].astype(float)) & (joined["top"] > 0)]
    if joined.empty:
        return no_data(title, "No solution has both a spectrum of e and a finite radius.")
    fig = base_figure(title, "top Hessian eigenvalue of e (log)", "radius_99 (relative, log)",
                      xaxis_type="log", yaxis_type="log")
    fig.add_trace(go.Scatter(
        x=joined["top"], y=joined["radius_99"], mode="markers", name="solutions",
        marker=dict(color=color(0), size=8), customdata=joined[["solution_id", "stiff"]],
        hovertemplate="solution %{customdata[0]}: top %{x:.3g}, radius %{y:.3g}, "
                      "stiff %{customdata[1]}<extra></extra>"))
    return fig


def path_variance(trajectories: pd.DataFrame | None) -> go.Figure:
    """Per solution path: the share of its variance in PC1 and in PC1 + PC2."""
    title = "Variance of each optimisation path in its first components"
    rows = usable(trajectories, read("trajectories", "solution_id", "pc1", "pc12"))
    if rows is None:
        return no_data(title, NO_PATHS)
    fig = base_figure(title, "", "share of the path's variance", yaxis_range=[0, 1.02])
    for i, (column, name) in enumerate((("pc1", "PC1"), ("pc12", "PC1 + PC2"))):
        fig.add_trace(go.Box(y=rows[column], name=name, boxpoints="all", jitter=0.3,
                             marker=dict(color=color(i)), customdata=rows["solution_id"],
                             hovertemplate="solution %{customdata}: %{y:.3f}<extra></extra>"))
    return fig


def path_accuracy(points: pd.DataFrame | None) -> go.Figure:
    """Accuracy at each kept point of a path against the share of the path's steps."""
    title = "Accuracy along the optimisation paths"
    rows = usable(points, read("trajectory_points", "solution_id", "step", "accuracy"))
    if rows is None:
        return no_data(title, NO_PATHS)
    fig = base_figure(title, "share of the path's steps", "accuracy", yaxis_range=[-0.02, 1.02])
    for sid, one in rows.groupby("solution_id"):
        span = max(1, int(one["step"].max() - one["step"].min()))
        fig.add_trace(go.Scatter(
            x=(one["step"] - one["step"].min()) / span, y=one["accuracy"], mode="lines",
            line=dict(color=color(0), width=1), opacity=0.5, showlegend=False,
            hovertemplate=f"solution {int(sid)}: step %{{customdata}}, accuracy %{{y:.2f}}"
                          "<extra></extra>", customdata=one["step"]))
    return fig


def text_paths(points: pd.DataFrame | None, text_id: str) -> go.Figure:
    """One text's solution paths in the PCA plane of all their points, coloured by accuracy."""
    title = "Optimisation paths of this text's solutions (common PCA plane)"
    rows = usable(points, read("trajectory_points", "solution_id", "text_id", "step", "accuracy",
                               "x", "y"))
    rows = None if rows is None else rows[rows["text_id"].astype(str) == str(text_id)]
    if rows is None or rows.empty:
        return no_data(title, NO_PATHS.replace("in this run", "of this text"))
    fig = base_figure(title, "PC1", "PC2")
    for i, (sid, one) in enumerate(rows.groupby("solution_id")):
        fig.add_trace(go.Scatter(
            x=one["x"], y=one["y"], mode="lines+markers", name=esc(f"solution {int(sid)}"),
            line=dict(color=color(i), width=1),
            marker=dict(size=6, color=one["accuracy"], colorscale="Viridis", cmin=0, cmax=1,
                        showscale=i == 0, colorbar=dict(title="accuracy")),
            customdata=np.stack([one["step"], one["accuracy"]], 1),
            hovertemplate="step %{customdata[0]}, accuracy %{customdata[1]:.2f}<extra></extra>"))
    return fig


def reconstruction_vs_dim(dimension: pd.DataFrame | None) -> go.Figure:
    """Share of texts some seed reconstructs at each subspace dimension K, per source."""
    title = "Texts reconstructed vs subspace dimension"
    rows = usable(dimension, read("dimension", "text_id", "source", "kind", "dim",
                                  "reconstructed"))
    if rows is None:
        return no_data(title, "No subspace fits in this run (fit --subspace K, study dimension).")
    share = (rows.assign(ok=rows["reconstructed"].astype(bool))
             .groupby(["kind", "source", "dim"], as_index=False)
             .agg(share=("ok", "mean"), texts=("text_id", "nunique")))
    fig = base_figure(title, "subspace dimension K (log)", "share of texts reconstructed",
                      xaxis_type="log", yaxis_range=[-0.02, 1.02])
    for i, ((kind, source), one) in enumerate(share.groupby(["kind", "source"])):
        fig.add_trace(go.Scatter(
            x=one["dim"], y=one["share"], mode="lines+markers", name=esc(f"{source} ({kind})"),
            line=dict(color=color(i)), customdata=one["texts"],
            hovertemplate="K %{x}: %{y:.2f} of %{customdata} texts<extra></extra>"))
    return fig


def dimension_vs_hlm(intrinsic: pd.DataFrame | None) -> go.Figure:
    """Each text's d_int (an upper bound) against its H_LM in bits, per source."""
    title = "Intrinsic dimension vs information held (H_LM)"
    rows = usable(intrinsic, read("intrinsic_dimension", "text_id", "source", "kind", "d_int",
                                  "h_lm_bits"))
    rows = None if rows is None else rows[np.isfinite(rows["d_int"].astype(float))]
    if rows is None or rows.empty:
        return no_data(title, "No text was reconstructed in a subspace in this run.")
    fig = base_figure(title, "H_LM of the prefix (bits)", "d_int: smallest K reconstructing "
                      "(log; an upper bound)", yaxis_type="log")
    for i, ((kind, source), one) in enumerate(rows.groupby(["kind", "source"])):
        fig.add_trace(go.Scatter(
            x=one["h_lm_bits"], y=one["d_int"], mode="markers", name=esc(f"{source} ({kind})"),
            marker=dict(color=color(i), size=8), customdata=one["text_id"],
            hovertemplate="%{customdata}: H_LM %{x:.1f} bits, d_int %{y}<extra></extra>"))
    return fig
