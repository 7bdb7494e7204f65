"""How did an end-to-end encoder learn? Its training curve, drawn from the encoder's own JSON.

`encoder train --kind end-to-end` records one history row per epoch (epoch 0 is the start:
the `mlp` fitted on solutions, or the `--from` encoder): the training loss, the held-out loss
and the held-out zero-step token accuracy, overall and per length. This page draws them beside
the encoder (ENC.html); it reads the JSON only and runs no model.
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
             "seconds (all epochs)": run.get("seconds"), "options": run.get("options")}
    page = render_page("protoscope encoder", [Section("curve", "Training curve", [training_curve(meta)])],
                       meta_list(facts))
    return write_page(path, page)
