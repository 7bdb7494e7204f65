"""Which arrangement of e and m lets a model reconstruct a text? The paper's Table 1.

Every arrangement fits the same problems (a few built-in texts x 2 seeds) at N = 1, 2, 4, 16
target tokens with the default recipe and a fixed budget (300 steps, restarts included), and
reports the mean of each problem's best accuracy, as the paper's Table 1 does (Llama-3.2-1B,
PG-19, 5000 steps, so the numbers are comparable in pattern, not in value). `bos e m*` is the
toolkit's default arrangement; `e m*` is the paper's. One arrangement per worker process.

    python -m protoscope.bench.arrangements --texts 4 --seeds 2 --budget 300
    python -m protoscope.bench.arrangements --model gemma3-270m   (results/arrangements-gemma3-270m.json)
"""

from __future__ import annotations

import argparse
import statistics

from protoscope.geometry.models.loading import DEFAULT_MODEL

from . import common

ARRANGEMENTS = ("e m*", "e m*+1", "bos e m*", "e*", "e*/2 m*/2", "(e m)*")
LENGTHS = (1, 2, 4, 16)

# PAPER.md, Table 1 (Llama-3.2-1B, mean accuracy), by the spec names of geometry/engine/arrangements.py.
# The paper's N=256 column has no counterpart here.
PAPER_TABLE1 = {
    "e*": {1: 1.00, 2: 0.45, 4: 0.17, 256: 0.01},
    "e*/2 m*/2": {1: 1.00, 2: 1.00, 4: 0.12, 256: 0.01},
    "(e m)*": {1: 1.00, 2: 1.00, 4: 1.00, 256: 0.17},
    "e m*+1": {1: 1.00, 2: 1.00, 4: 1.00, 256: 0.97},
    "e m*": {1: 1.00, 2: 1.00, 4: 1.00, 256: 0.99},
}


def job(arrangement: str, n_texts: int, seeds: int, lengths, budget: int,
        model: str = DEFAULT_MODEL) -> list[dict]:
    """Fit every length for one arrangement; one row per length."""
    common.use_model(model)
    rec = common.recipe("default", max_steps=budget)
    chosen = [p for n in lengths for p in common.problems(common.texts(count=n_texts), seeds, n)]
    solutions = common.fit(arrangement, rec, chosen, label=arrangement)
    rows = []
    for n in lengths:
        outcomes = [common.outcome(s, budget) for s in solutions if s.problem.length == n]
        rows.append({"arrangement": arrangement, "length": n,
                     "mean_accuracy": statistics.fmean(o["accuracy"] for o in outcomes),
                     "exact_rate": sum(o["converged"] for o in outcomes) / len(outcomes),
                     "median_steps": statistics.median(o["steps_counted"] for o in outcomes),
                     "accuracies": [o["accuracy"] for o in outcomes]})
    return rows


def measure(arrangements=ARRANGEMENTS, n_texts: int = 4, seeds: int = 2, lengths=LENGTHS,
            budget: int = 300, workers: int | None = None, model: str = DEFAULT_MODEL) -> list[dict]:
    jobs = [(job, dict(arrangement=a, n_texts=n_texts, seeds=seeds, lengths=tuple(lengths),
                       budget=budget, model=model)) for a in arrangements]
    return [row for rows in common.run_jobs(jobs, workers) for row in rows]


def wide(rows: list[dict], key: str = "mean_accuracy") -> list[dict]:
    """One line per arrangement, one column per N (the shape of the paper's table)."""
    out: dict[str, dict] = {}
    for r in rows:
        out.setdefault(r["arrangement"], {"arrangement": r["arrangement"]})[f"N={r['length']}"] = r[key]
    return list(out.values())


def summary(rows: list[dict]) -> dict:
    """The table both ways (mean accuracy, exact rate), the rows behind it and the paper's."""
    return {"mean_accuracy": wide(rows), "exact_rate": wide(rows, "exact_rate"), "rows": rows,
            "paper_table1_llama_3_2_1b": PAPER_TABLE1}


def measured(**settings) -> dict:
    """`measure(**settings)` with its summary: what a benchmark run keeps as one part."""
    return {"settings": settings, **summary(measure(**settings))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    ap.add_argument("--only", nargs="*", help="arrangement specs to run (default: all six)")
    ap.add_argument("--model", default=DEFAULT_MODEL,
                    help=f"model alias or folder (default: {DEFAULT_MODEL})")
    ap.add_argument("--workers", type=int, default=None,
                    help="worker processes, one thread each (default: one per core)")
    args = ap.parse_args(argv)
    rows = measure(args.only or ARRANGEMENTS, args.texts, args.seeds, args.lengths, args.budget,
                   args.workers, args.model)
    columns = ["arrangement"] + [f"N={n}" for n in args.lengths]
    print("mean accuracy")
    print(common.table(wide(rows), columns))
    print("exact reconstructions")
    print(common.table(wide(rows, "exact_rate"), columns))
    name = "arrangements" if args.model == DEFAULT_MODEL else f"arrangements-{args.model}"
    common.write_result(name, {
        "command": common.command_line(), "machine": common.machine(), "model": args.model,
        "texts": f"first {args.texts} built-in", "seeds": args.seeds, "budget_steps": args.budget,
        "recipe": common.recipe("default", max_steps=args.budget).to_dict(), **summary(rows)})


if __name__ == "__main__":
    main()
