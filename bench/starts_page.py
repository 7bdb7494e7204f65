"""What does a learned start buy, at each length? One page over the starts benchmark's result
files: the starts table per length (zero-step accuracy, median and worst steps, success, wall
time with the encoder's own cost), the steps-vs-seed-spread curve, and each encoder's training
curve (read from its JSON). It runs no model; the figures can also be written as images.

    python -m protoscope.bench.starts_page --results starts_16 starts_32 starts_64 starts_spread \
        --encoder runs/enc/plain --out runs/enc/starts.html [--static png --static-dir docs/img]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import pandas as pd

from . import common

COLUMNS = ["start", "zero_step_acc", "median_steps", "worst_steps", "success", "seconds",
           "encoder_s", "seed_cos_e"]


def starts_frame(result: dict) -> pd.DataFrame:
    """One row per configuration of one result file; the worst problem counts a failure as the
    budget (`steps_counted`), so a start that failed is never shown as fast."""
    rows = []
    for label, r in result["configs"].items():
        rows.append({"start": label, "zero_step_acc": round(r["zero_step_accuracy"], 4),
                     "median_steps": r["median_steps"],
                     "worst_steps": max(p["steps_counted"] for p in r["rows"]),
                     "success": f"{sum(p['converged'] for p in r['rows'])}/{len(r['rows'])}",
                     "seconds": r["seconds"], "encoder_s": r["encoder_seconds"],
                     "seed_cos_e": (r.get("seed_spread") or {}).get("median_cosine_distance_e")})
    return pd.DataFrame(rows, columns=COLUMNS)


def sections(results: dict[str, dict], encoders: list[dict]):
    """The page's sections: a table per result file, the spread curve, the training curves."""
    from protoscope.reports.figures_encoder import spread_curve, training_curve
    from protoscope.reports.page import Section, html_table

    tables = []
    for name, result in results.items():
        s = result["settings"]
        tables += [f"{name}: {s['texts']} held-out texts x {s['seeds']} seeds at {s['length']} "
                   f"tokens, budget {s['cap']} steps (a problem not exact within it counts as the "
                   f"budget).", html_table(starts_frame(result))]
    by_length: dict[int, dict] = {}  # files of one length hold the same problems: one curve
    for result in results.values():
        by_length.setdefault(result["settings"]["length"], {}).update(result["configs"])
    curves = [spread_curve(configs, n) for n, configs in sorted(by_length.items())
              if any(r.get("spread") is not None for r in configs.values())]
    out = [Section("starts", "Starts per length", tables),
           Section("spread", "Seeds vs speed", curves or [spread_curve({})])]
    if encoders:
        out.append(Section("training", "Training curves",
                           [training_curve(meta) for meta in encoders]))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", nargs="+", required=True, metavar="NAME",
                    help="result files of bench/starts.py (names under bench/results or paths)")
    ap.add_argument("--encoder", action="append", default=[], metavar="ENC",
                    help="an end-to-end encoder whose training curve joins the page (repeatable)")
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--static", default=None, help="also write the figures as png, svg or pdf")
    ap.add_argument("--static-dir", default=None, type=pathlib.Path)
    args = ap.parse_args(argv)
    from protoscope.geometry.errors import ProtoscopeError
    from protoscope.reports.page import render_page, write_page

    try:
        results = {pathlib.Path(n).stem: _read(n) for n in args.results}
        encoders = [_read(pathlib.Path(e).with_suffix(".json")) for e in args.encoder]
        page = sections(results, encoders)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        print(f"written: {write_page(args.out, render_page('protoscope starts', page))}")
        if args.static:
            from plotly.graph_objects import Figure

            from protoscope.reports.figures_export import export_figures

            figures = [(f"{s.anchor}-{i + 1:02d}", b) for s in page
                       for i, b in enumerate(b for b in s.blocks if isinstance(b, Figure))]
            for path in export_figures(figures, args.static_dir or args.out.parent, args.static):
                print(f"written: {path}")
    except ProtoscopeError as err:
        print(f"protoscope: {err}", file=sys.stderr)
        sys.exit(2)


def _read(name) -> dict:
    from protoscope.geometry.errors import ProtoscopeError

    path = pathlib.Path(name)
    if not path.suffix:
        path = common.RESULTS / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ProtoscopeError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None


if __name__ == "__main__":
    main()
