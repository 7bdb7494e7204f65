"""How cheaply does a curve that keeps the text come? Curve-training recipes side by side.

Under the paper's protocol (m shared by a text's seeds, e per solution, the path moves e), each
candidate recipe trains a quadratic Bezier curve between the SAME same-text pairs of solutions,
and the benchmark records per pair the curve steps until every point of the evaluation grid
reconstructs the text (checked every `CHECK` steps; a curve not held within the budget counts
as not held), the decoder points it spent, and the wall time per pair (the pairs of one
candidate train as one batch, so a pair's time is the batch's over the pairs).

The pairs come from runs this benchmark fits itself (kept under runs/bench-curves/, reused
when present): a TUNING set (20-word windows of the built-in prose, 12 tokens) on which the
candidates are compared, and a HELD-OUT set (bench/starts.py's held-out texts: sentences
written for benchmarks and random words, which no tuning used) at 12 and 16 tokens on which the
chosen recipe is checked against the old default. Seed 0 and seed 1 of each text form its pair.

    python -m protoscope.bench.curves [--only LABEL ...] [--sets tune-12 heldout-12 heldout-16]
    python -m protoscope.bench.curves --smoke      # a tiny model, seconds; numbers mean nothing
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from . import common

RUNS = Path("runs/bench-curves")
BUDGET, CHECK, GRID = 100, 5, 61
SETS = {  # name: (texts, count, length)
    "tune-12": ("windows", 6, 12),
    "heldout-12": ("heldout", 10, 12),
    "heldout-16": ("heldout", 10, 16),
}


def set_texts(kind: str, count: int, loaded) -> list:
    """The texts of one set: built-in windows (tuning) or the starts bench's held-out texts."""
    if kind == "heldout":
        from .starts import held_out_texts

        return held_out_texts(loaded, count)
    from protoscope.geometry.store.texts import load_texts

    return load_texts(f"windows:{count}", loaded, with_nll=False)


def fit_pairs(name: str, loaded, root: Path = RUNS, seeds: int = 2, max_steps: int = 1500,
              fit: bool = True):
    """Fit (or reuse) the run of one set: m shared by each text's seeds, e per seed.
    `fit=False` takes the run as it stands (a fit stopped early: the pairs exact so far)."""
    from protoscope.geometry.store.runstore import RunStore

    if not fit:
        return RunStore.open(root / name)
    from protoscope.geometry.engine.recipes import resolve_recipe
    from protoscope.geometry.runs.fit import RunConfig, fit_run
    from protoscope.progress import Progress

    kind, count, length = SETS[name]
    config = RunConfig(texts=f"bench-curves:{name}", seeds=seeds, lengths=(length,),
                       share="m", group_size=1,
                       recipe=resolve_recipe("default", max_steps=max_steps))
    out = root / name
    fresh = not (out / "manifest.json").exists()
    bar = Progress(quiet=True, desc=f"fit {name}", every=60.0)
    fitted = fit_run(out, config, loaded=loaded, texts=set_texts(kind, count, loaded) if fresh
                     else None, on_groups=bar.on_groups)
    return fitted.store


CANDIDATES = {  # label: train_beziers keywords (lr is the control point's; S = t per step)
    "analyze default: lr 0.02, S 8": {"lr": 0.02, "samples_per_step": 8},
    "study default: lr 0.02, S 4": {"lr": 0.02, "samples_per_step": 4},
    "lr 0.05, S 4": {"lr": 0.05, "samples_per_step": 4},
    "lr 0.1, S 4": {"lr": 0.1, "samples_per_step": 4},
    "lr 0.2, S 4": {"lr": 0.2, "samples_per_step": 4},
    "lr 0.1, S 2": {"lr": 0.1, "samples_per_step": 2},
    "lr 0.1, S 8": {"lr": 0.1, "samples_per_step": 8},
    "lr 0.1, S 4, worst t": {"lr": 0.1, "samples_per_step": 4, "t_sampling": "worst"},
    "lr 0.1, S 4, midpoint start": {"lr": 0.1, "samples_per_step": 4, "midpoint_steps": 50},
}


def load_pairs(store, per_text: int = 1) -> list[dict]:
    """Same-text pairs of a run's exact solutions, chosen as the connectivity analysis does."""
    from protoscope.analysis.connectivity import same_text_pairs
    from protoscope.geometry.engine.paths import join

    rows, e, m = store.solution_vectors()
    index = {int(s): i for i, s in enumerate(rows["solution_id"])}
    ids = {t.text_id: t.token_ids for t in store.texts()}
    ends = rows[(rows["method"] == "one-step") & (rows["accuracy"] >= 0.99)]
    out = []
    for pair in same_text_pairs(ends, per_text, seed=0):
        i, j = index[int(pair.a["solution_id"])], index[int(pair.b["solution_id"])]
        if pair.moved != "e":
            continue  # the protocol moves e between solutions that share m
        out.append({"text_id": pair.a["text_id"], "arrangement": pair.a["arrangement"],
                    "a": join(e[i], m[i], "e"), "b": join(e[j], m[j], "e"), "fixed": m[i],
                    "targets": torch.tensor(ids[pair.a["text_id"]][: int(pair.a["length"])])})
    return out


def train(label: str, recipe: dict, pairs: list[dict], loaded, budget: int = BUDGET,
          check: int = CHECK, grid: int = GRID) -> dict:
    """One candidate on every pair (one batch per arrangement): steps to held and cost."""
    from protoscope.analysis.connectivity import coarse_grid
    from protoscope.geometry.engine.decoder import Decoder
    from protoscope.geometry.engine.paths import decode_path, even_grid, train_beziers

    rows = []
    with common.Clock() as clock:
        for arrangement in sorted({p["arrangement"] for p in pairs}):
            chunk = [p for p in pairs if p["arrangement"] == arrangement]
            stack = {k: torch.stack([p[k] for p in chunk]) for k in ("a", "b", "fixed", "targets")}
            decoder = Decoder(loaded, arrangement)
            curves = train_beziers(decoder, stack["a"], stack["b"],
                                   stack["targets"], budget, seed=0, moved="e",
                                   fixed=stack["fixed"], grid=grid, check_every=check,
                                   check_grid=coarse_grid(grid, 21), **recipe)
            for p, c in zip(chunk, curves):
                worst = decode_path(decoder, c, even_grid(grid), p["targets"], "e", p["fixed"])
                rows.append({"text_id": p["text_id"], "held": bool(c.held),
                             "worst_accuracy": round(float(worst.accuracy.min()), 3),
                             "steps": int(c.steps_used) if c.held else None,
                             "midpoint_steps": int(c.midpoint_steps),
                             "evaluations": int(c.evaluations),
                             "length_ratio": round(c.length(grid) / c.straight_length(), 3)})
    held = [r for r in rows if r["held"]]
    steps = [r["steps"] if r["held"] else float("inf") for r in rows]
    median = statistics.median(steps) if steps else None
    return {"label": label, "recipe": recipe, "pairs": len(rows), "held": len(held),
            "held_share": round(len(held) / max(1, len(rows)), 3),
            "median_steps": None if median in (None, float("inf")) else median,
            "median_steps_note": "pairs not held count as beyond the budget",
            "max_steps_held": max((r["steps"] for r in held), default=None),
            "seconds_per_pair": round(clock.wall / max(1, len(rows)), 1),
            "cpu_seconds_per_pair": round(clock.cpu / max(1, len(rows)), 1), "rows": rows}


def compare(sets, labels, loaded, root: Path = RUNS, budget: int = BUDGET,
            on_done=None, fit: bool = True, kept: dict | None = None) -> dict:
    """Every candidate in `labels` on the pairs of every set, side by side. `kept`: an earlier
    result of the same settings; a candidate it holds for the same pairs is not trained again."""
    out = {}
    for name in sets:
        pairs = load_pairs(fit_pairs(name, loaded, root, fit=fit))
        before = (kept or {}).get(name, {})
        same = before.get("texts") == [p["text_id"] for p in pairs]
        out[name] = {"pairs": len(pairs), "texts": [p["text_id"] for p in pairs],
                     "candidates": dict(before.get("candidates", {})) if same else {}}
        for label in labels:
            if label in out[name]["candidates"]:
                print(f"{name} | {label}: kept from the result file (same settings, same pairs)", file=sys.stderr, flush=True)
                continue
            result = train(label, CANDIDATES[label], pairs, loaded, budget)
            out[name]["candidates"][label] = result
            print(f"{name} | {label}: held {result['held']}/{result['pairs']}, median steps "
                  f"{result['median_steps']}, {result['seconds_per_pair']} s/pair",
                  file=sys.stderr, flush=True)
            if on_done:
                on_done(out)
    return out


def table_rows(result: dict) -> list[dict]:
    return [{"set": name, "candidate": label, "held": f"{c['held']}/{c['pairs']}",
             "median steps": c["median_steps"], "worst held": c["max_steps_held"],
             "s/pair": c["seconds_per_pair"]}
            for name, block in result.items() for label, c in block["candidates"].items()]


def _smoke() -> dict:
    """A tiny model, three texts x 2 seeds at 4 tokens, two candidates: every path in seconds."""
    import tempfile

    from protoscope.geometry.models.loading import tiny_model
    from protoscope.geometry.engine.recipes import resolve_recipe
    from protoscope.geometry.runs.fit import RunConfig, fit_run
    from protoscope.geometry.store.texts import Text, tokenize

    loaded = tiny_model("llama", seed=0, initializer_range=0.3)
    words = ["the old man walked to the city in the morning",
             "money and power are not what we need", "she went to the river in the evening"]
    texts = [Text(f"smoke-{i}", "random", None, w, tokenize(loaded, w)) for i, w in enumerate(words)]
    config = RunConfig(model=loaded.info.name, texts="smoke", seeds=2, lengths=(4,), share="m",
                       group_size=1, recipe=resolve_recipe("default", max_steps=300))
    with tempfile.TemporaryDirectory(prefix="protoscope-curves-smoke-") as tmp:
        store = fit_run(Path(tmp) / "run", config, loaded=loaded, texts=texts).store
        pairs = load_pairs(store)
        labels = ["study default: lr 0.02, S 4", "lr 0.1, S 4, midpoint start",
                  "lr 0.1, S 4, worst t"]
        return {"smoke": {"pairs": len(pairs), "candidates": {
            label: train(label, CANDIDATES[label], pairs, loaded, budget=20, grid=21)
            for label in labels}}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--only", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES),
                        metavar="LABEL", help="candidates to run (default: all)")
    parser.add_argument("--name", default="curves", help="bench/results/NAME.json")
    parser.add_argument("--fit-only", action="store_true", help="fit the pairs' runs and stop")
    parser.add_argument("--as-fitted", action="store_true",
                        help="take each set's run as it stands (pairs exact so far), no fitting")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny model in seconds (checks the code; numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.smoke:
        print(common.table(table_rows(_smoke()), ["set", "candidate", "held", "median steps",
                                                  "worst held", "s/pair"]))
        return
    loaded = common.model()
    if not args.fit_only:
        settings = {"budget": BUDGET, "check_every": CHECK, "grid": GRID, "sets": SETS}

        def save(result):
            common.write_result(args.name, {"command": common.command_line(),
                                            "settings": settings, "sets": result,
                                            "machine": common.machine()})
        earlier = common.RESULTS / f"{args.name}.json"
        kept = None
        if earlier.exists():
            data = json.loads(earlier.read_text())
            if data.get("settings") == json.loads(json.dumps(settings)):
                kept = data.get("sets")
        result = compare(args.sets, args.only, loaded, on_done=save, fit=not args.as_fitted,
                         kept=kept)
        print(common.table(table_rows(result), ["set", "candidate", "held", "median steps",
                                                "worst held", "s/pair"]))
        return
    for name in args.sets:
        started = time.perf_counter()
        store = fit_pairs(name, loaded)
        rows = store.solutions()
        print(f"{name}: {int(rows['converged'].sum())} of {len(rows)} solutions exact, "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
