"""Does a warm start save steps in a capacity search, and what is the default model's capacity?

Warm start: the same search (texts, seeds, length grid, recipe) runs twice through
geometry.capacity, once starting each length from the previous length's vectors and once from
fresh vectors; steps saved = total steps cold - total steps warm, with the capacities reached
(a warm start must not buy speed with fewer reconstructions).

Capacity by source: built-in, random-word and model-generated texts, one search each with a
small budget (recorded), so the numbers are lower bounds like the paper's, and smaller still.

    python -m protoscope.bench.capacity_search --max-length 90 --budget 1000
"""

from __future__ import annotations

import argparse
import tempfile

from protoscope.geometry.runs.capacity import capacity_search, length_grid

from protoscope.geometry.tables import capacity_per_text
from protoscope.geometry.runs.fit import RunConfig, prepare_run
from protoscope.geometry.tables import reconstructed

from . import common


def search(spec: str, n_texts: int, seeds: int, max_length: int, budget: int,
           warm_start: bool = True, **text_options) -> dict:
    """One capacity search in a throw-away run store; solutions and per-text capacity."""
    config = RunConfig(texts=spec, seeds=seeds, lengths=tuple(length_grid(max_length)),
                       kind="capacity", warm_start=warm_start,
                       recipe=common.recipe("default", max_steps=budget), **text_options)
    with tempfile.TemporaryDirectory() as out:
        store, loaded, all_texts = prepare_run(f"{out}/run", config, loaded=common.model())
        label = f"{spec}{'' if warm_start else ' cold'}"
        table = capacity_search(store, loaded, all_texts[:n_texts], config,
                                on_length=lambda method, n, rows: _log(label, n, rows))
        rows = store.solutions()
    per_text = capacity_per_text(table)
    return {"texts": spec, "warm_start": warm_start, "budget": budget, "seeds": seeds,
            "grid": list(config.lengths), "total_steps": int(rows["steps"].sum()),
            "solutions": len(rows),
            "capacity": {r.text_id: int(r.capacity) for r in per_text.itertuples()},
            "h_lm_nats": {r.text_id: float(r.h_lm_nats) for r in per_text.itertuples()},
            "steps_by_length": rows.groupby("length")["steps"].sum().astype(int).to_dict()}


def _log(label: str, length: int, rows: dict) -> None:
    import sys

    ok = sum(bool(reconstructed(acc)) for acc in rows.values())
    print(f"capacity {label}: length {length}: {ok}/{len(rows)} reconstructed", file=sys.stderr, flush=True)


def warm_vs_cold(n_texts: int = 2, seeds: int = 2, max_length: int = 90, budget: int = 1000,
                 workers: int | None = None) -> dict:
    jobs = [(search, dict(spec="builtin", n_texts=n_texts, seeds=seeds, max_length=max_length,
                          budget=budget, warm_start=w)) for w in (True, False)]
    warm, cold = common.run_jobs(jobs, workers)
    return {"warm": warm, "cold": cold, "steps_saved": cold["total_steps"] - warm["total_steps"],
            "steps_saved_fraction": 1 - warm["total_steps"] / max(1, cold["total_steps"])}


def by_source(n_texts: int = 3, seeds: int = 1, max_length: int = 181, budget: int = 500,
              workers: int | None = None) -> dict:
    """Capacity on built-in, random-word and generated texts (one search per source)."""
    specs = {"builtin": ("builtin", {}),
             "random": (f"random:{n_texts}", {}),
             "generated": (f"generated:{n_texts}:1", {"generate_tokens": max(256, max_length)})}
    jobs = [(search, dict(spec=spec, n_texts=n_texts, seeds=seeds, max_length=max_length,
                          budget=budget, **opts)) for spec, opts in specs.values()]
    return dict(zip(specs, common.run_jobs(jobs, workers)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-length", type=int, default=90)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--texts", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--what", choices=("warm", "sources"), default="warm")
    args = ap.parse_args(argv)
    if args.what == "warm":
        result = warm_vs_cold(args.texts, args.seeds, args.max_length, args.budget)
        print({k: result[k] for k in ("steps_saved", "steps_saved_fraction")})
        print("capacity warm", result["warm"]["capacity"], "cold", result["cold"]["capacity"])
    else:
        result = by_source(args.texts, args.seeds, args.max_length, args.budget)
        for source, r in result.items():
            print(source, r["capacity"])
    common.write_result(f"capacity_{args.what}", {
        "command": common.command_line(), "machine": common.machine(), "texts": args.texts,
        "seeds": args.seeds, "max_length": args.max_length, "budget": args.budget, **result})


if __name__ == "__main__":
    main()
