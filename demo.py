"""The main job, end to end on the embedded default model: `protoscope demo`.

Fits a small mixed text set (built-in, model-generated from a shared context, random words)
with two seeds each under the paper's connectivity protocol (m shared by each text's seeds, e
per solution, so the paths between a text's solutions move e only), runs every analysis, writes the report and one compare page, and prints the findings table. Sizes
are chosen to finish in under 8 minutes on a 2-core CPU while the figures still say something
(README: the demo's measured time); the protocol and where it differs from the paper's are
recorded in the manifest.

Why not one m for every text, the paper's main protocol for uniqueness: measured on this
demo's seven texts at 8 tokens (3 seeds, 21 solutions), that share group ran its whole
400-step budget (20 of 21 exact) and its curves held on 3 of 7 pairs within 100 steps, so the
curve finding could not be conclusive inside the demo's minutes; with m per text the groups
are small and the curves are the ones bench/curves.py measured. The uniqueness rows then
compare e between texts whose m differ (the protocol says so in the manifest).
"""

from __future__ import annotations

import sys
import time


from .analysis.findings import as_text as findings_text
from .analysis.run import run_analyses
from .geometry.models import resolve_device
from .geometry.recipes import resolve_recipe
from .geometry.runs import RunConfig, fit_run, record_threads
from .geometry.store import RunStore
from .progress import Progress
from .studies import PAPER, _count, _default, fit_settings, record_protocol, say_notes, too_few

DEMO_TEXTS = "builtin:5+generated:1:3+random:2"  # 10 texts: 7 gave 6 pairs, an interval down to 0.5
DEMO_LENGTH, DEMO_SEEDS, DEMO_MAX_STEPS = 8, 2, 400
DEMO_OPTIONS = {
    # the curve budget and recipe are analyze's defaults; only the sizes are the demo's
    "connectivity": {"max_pairs": 1, "grid": 21, "cross_text_pairs": 1},
    "neighbourhoods": {"directions": 3, "adversarial_steps": 3},
}


def run_demo(out: str = "runs/demo", device: str = "cpu", quiet: bool = False, *,
             texts: str = DEMO_TEXTS, length: int = DEMO_LENGTH, seeds: int = DEMO_SEEDS,
             max_steps: int = DEMO_MAX_STEPS, options: dict = DEMO_OPTIONS) -> dict:
    """Fit, analyse, report; returns seconds per stage (also kept in the run's manifest).
    The keyword sizes exist for tests; `protoscope demo` uses the measured defaults."""
    from .reports.compare import build_compare
    from .reports.report import build_report

    resolve_device(device)  # a bad --device fails before a progress line is printed
    started, timings = time.perf_counter(), {}
    config = RunConfig(texts=texts, seeds=seeds, lengths=(length,), share="m", group_size=1,
                       recipe=resolve_recipe("default", max_steps=max_steps), generate_tokens=48)
    say = (lambda *a: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    with RunStore(out).lock():
        say_notes([too_few("demo", _count(texts), "texts")])
        say(f"[1/4] fitting {seeds} seeds x texts '{texts}' at {length} tokens into {out}")
        bar = Progress(quiet=quiet)
        try:
            fitted = fit_run(out, config, device=device, lock=False, **bar.callbacks())
        finally:
            bar.close()
        store, loaded, chosen = fitted.store, fitted.loaded, fitted.texts
        timings["fit"] = time.perf_counter() - started
        say("[2/4] analyses")
        timings.update({f"analysis:{k}": v for k, v in run_analyses(
            store, loaded=loaded, quiet=quiet, options=options).items()})
        record_threads(store, "analyze")
        record_protocol(store, "demo", {
            **fit_settings(config), "texts": texts, "seeds": seeds, "length": length,
            "share": "m shared by a text's seeds, e per solution",
            "bezier_steps": options.get("connectivity", {}).get(
                "bezier_steps", _default("connectivity", "bezier_steps")),
            "pairs": options.get("connectivity", {}).get("max_pairs")}, PAPER["demo"])
    say("[3/4] report")
    t0 = time.perf_counter()
    report = build_report(out)
    say("[4/4] compare page")
    compare = build_compare(out, chosen[0].text_id)
    timings["pages"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    timings = {k: round(v, 1) for k, v in timings.items()}
    with store.lock():
        store.update_manifest(demo_seconds=timings)
    rows = store.solutions()
    findings = store.analysis("findings")
    if findings is not None and len(findings):
        print(findings_text(findings))
    print(f"{len(rows)} solutions, {int(rows['converged'].sum())} converged; "
          f"total {timings['total']:.0f} s")
    print("seconds: " + ", ".join(f"{k.removeprefix('analysis:')} {v:.0f}"
                                  for k, v in timings.items() if k != "total"))
    print(f"report:  {report}\ncompare: {compare}")
    return timings
