"""How did an end-to-end encoder learn, and what does its start buy? Its training curve, drawn
from the encoder's own JSON, and the steps-vs-seed-spread curve, drawn from a starts benchmark.

`encoder train --kind end-to-end` records one history row per epoch (epoch 0 is the start:
the `mlp` fitted on solutions, or the `--from` encoder): the training loss, the held-out loss
and the held-out zero-step token accuracy, overall and per length (with `--unroll K`, also the
held-out loss and accuracy after K solver steps). This page draws them beside the encoder
(ENC.html); it reads the JSON only and runs no model. `spread_curve` draws what bench/starts.py
measured of an encoder at several seed spreads (`fit --init-spread`): median steps and how far
apart a text's seeds end, so speed and diversity are chosen knowingly.
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .figures import color, no_data
from .page import Section, meta_list, render_page, write_page


def training_curve(meta: dict) -> go.Figure:
    """Losses (left) and held-out zero-step accuracy per length (right) against the epoch."""
    history = (meta.get("end_to_end") or {}).get("history") or []
    title = "End-to-end encoder: training curve"
    if not history:
        return no_data(title, "This encoder records no training history (not an end-to-end kind).")
    epochs = [h["epoch"] for h in history]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "mean per-token cross-entropy (nats)", "held-out zero-step token accuracy"))
    for i, (key, name) in enumerate((("train_loss", "training loss"), ("held_out_loss", "held-out loss"))):
        fig.add_trace(go.Scatter(x=epochs, y=[h.get(key) for h in history], name=name,
                                 mode="lines+markers", line={"color": color(i)}), row=1, col=1)
    unroll = (meta["end_to_end"].get("options") or {}).get("unroll") or 0
    if unroll:  # what the training judged: the loss after K solver steps from the prediction
        fig.add_trace(go.Scatter(x=epochs, y=[h.get("held_out_unrolled_loss") for h in history],
                                 name=f"held-out loss after {unroll} solver steps",
                                 mode="lines+markers", line={"color": color(1), "dash": "dash"}),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=epochs, y=[h.get("held_out_unrolled_accuracy") for h in history],
                                 name=f"after {unroll} solver steps", mode="lines+markers",
                                 line={"color": "#333", "width": 3, "dash": "dash"}), row=1, col=2)
    fig.add_trace(go.Scatter(x=epochs, y=[h.get("held_out_accuracy") for h in history],
                             name="all lengths", mode="lines+markers",
                             line={"color": "#333", "width": 3}), row=1, col=2)
    lengths = sorted({int(n) for h in history for n in h.get("held_out_accuracy_by_length") or {}})
    for j, n in enumerate(lengths):
        fig.add_trace(go.Scatter(
            x=epochs, y=[(h.get("held_out_accuracy_by_length") or {}).get(str(n)) for h in history],
            name=f"{n} tokens", mode="lines+markers", line={"color": color(j + 2), "dash": "dot"}),
            row=1, col=2)
    kept = meta["end_to_end"].get("kept_epoch")
    if kept is not None:
        for col in (1, 2):
            fig.add_vline(x=kept, line={"dash": "dash", "color": "#888"}, row=1, col=col)
    fig.update_xaxes(title_text="epoch (0: the start)")
    fig.update_layout(title=f"{title} (dashed line: the kept epoch)", template="plotly_white",
                      height=420)
    return fig


def write_training_page(meta: dict, path: Path | str) -> Path:
    """ENC.html: the curve and what the training was (texts, lengths, options, time)."""
    run = meta.get("end_to_end") or {}
    extra = run.get("extra_texts") or {}
    facts = {"kind": meta.get("kind"), "model": (meta.get("model") or {}).get("name"),
             "lengths": ", ".join(map(str, meta.get("lengths") or [])),
             "training texts": run.get("train_texts"), "extra texts": extra.get("spec"),
             "held-out texts": len(run.get("held_out_texts") or []),
             "epochs run / kept": f"{run.get('epochs_run')} / {run.get('kept_epoch')}",
             "seconds (features and all epochs)": run.get("seconds"),
             "CPU-hours": run.get("cpu_hours"), "options": run.get("options")}
    page = render_page("protoscope encoder", [Section("curve", "Training curve", [training_curve(meta)])],
                       meta_list(facts))
    return write_page(path, page)


def spread_curve(configs: dict, length: int | None = None) -> go.Figure:
    """Median steps (left axis, with the worst problem as a thin bar above) and the median
    cosine distance between one text's seeds (right axis) against `--init-spread`, one line
    per encoder, from a starts benchmark's configurations (rows that record a `spread`). The
    default recipe's random starts, when measured on the same problems, are the dotted
    reference. `length` (tokens) names the problems in the title."""
    title = "Seeds vs speed: an encoder start at several seed spreads" + (
        f", {length} tokens" if length else "")
    by_encoder: dict[str, list] = {}
    for label, r in configs.items():
        if r.get("spread") is not None:
            by_encoder.setdefault(label.split("@")[0], []).append(r)
    if not by_encoder:
        return no_data(title, "No configuration of this benchmark was run at a seed spread "
                              "(bench/starts.py --spreads).")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for i, (name, rows) in enumerate(sorted(by_encoder.items())):
        rows = sorted(rows, key=lambda r: r["spread"])
        x = [r["spread"] for r in rows]
        worst = [max(p["steps_counted"] for p in r["rows"]) for r in rows]
        fig.add_trace(go.Scatter(
            x=x, y=[r["median_steps"] for r in rows], name=f"{name}: median steps",
            mode="lines+markers", line={"color": color(i)},
            error_y={"type": "data", "symmetric": False, "array": [w - r["median_steps"] for w, r in zip(worst, rows)],
                     "arrayminus": [0] * len(rows), "thickness": 1},
            customdata=[[w, r["success_rate"]] for w, r in zip(worst, rows)],
            hovertemplate="spread %{x}<br>median %{y} steps<br>worst %{customdata[0]}"
                          "<br>success %{customdata[1]}<extra></extra>"), secondary_y=False)
        fig.add_trace(go.Scatter(
            x=x, y=[(r.get("seed_spread") or {}).get("median_cosine_distance_e") for r in rows],
            name=f"{name}: seeds' cosine distance (e)", mode="lines+markers",
            line={"color": color(i), "dash": "dot"}, marker={"symbol": "diamond"}), secondary_y=True)
    default = configs.get("default")
    if default:
        fig.add_hline(y=default["median_steps"], line={"dash": "dot", "color": "#888"},
                      annotation_text=f"random starts (default recipe): {default['median_steps']:g} steps",
                      secondary_y=False)
    fig.update_xaxes(title_text="--init-spread (seed s > 0 starts this share of the prediction's norm away)")
    fig.update_yaxes(title_text="median steps to exact (bar: worst problem)", rangemode="tozero",
                     secondary_y=False)
    fig.update_yaxes(title_text="median cosine distance of a text's seeds (e)", range=[0, 1.05],
                     dtick=0.25, showgrid=False, secondary_y=True)
    fig.update_layout(title=title, template="plotly_white", height=440)
    return fig
