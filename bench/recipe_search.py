"""Which values should the default recipe have? Median steps and success rate of alternatives.

The default recipe started as a guess (Adam lr 0.02, betas 0.9/0.9, init at the embedding
scale, patience 150, 8 restarts, constant rate); this search moved its rate to 0.05 (results:
recipes.json and recipes_more.json on the first 4 built-in texts, recipes_heldout.json on the
next 4 with `--text-offset 4`). Each alternative changes one or two values of the current
default and fits the same problems (4 built-in texts x 2 seeds, 16 tokens, `bos e m*`) with the
default's budget; a problem that does not converge counts as the budget. Medians of 8 problems
move by +-50% between neighbouring settings: per-problem variance, not the knob, dominates.

Note on `cosine`: the engine's cosine decays over `max_steps` of each vector's own clock, and
that clock restarts with the vector, so with a 2000-step budget and restarts every 150 steps
or so the rate hardly decays (lr x 0.99 after 150 steps): `cosine` mostly measures that.

    python -m protoscope.bench.recipe_search
"""

from __future__ import annotations

import argparse

from . import common
from .convergence import job

VARIANTS = {  # names say the absolute values they set; rows before the switch ran at lr 0.02
    "default": {},
    "lr_0.02": {"lr": 0.02},
    "lr_0.01": {"lr": 0.01},
    "lr_0.05": {"lr": 0.05},
    "patience_80": {"lr": 0.02, "patience": 80},
    "cosine": {"lr": 0.02, "schedule": "cosine"},
    "lr_0.05_patience_80": {"lr": 0.05, "patience": 80},
    "lr_0.03": {"lr": 0.03},
    "lr_0.1": {"lr": 0.1},
    "lr_0.05_beta2_0.99": {"lr": 0.05, "beta2": 0.99},  # bench/results/recipes_more.json
    "lr_0.05_init_normal": {"lr": 0.05, "init": "normal"},
    "lr_0.05_patience_300": {"lr": 0.05, "patience": 300},
}


def search(variants: dict = VARIANTS, n_texts: int = 4, seeds: int = 2, length: int = 16,
           cap: int | None = None, workers: int | None = None, text_offset: int = 0) -> dict:
    jobs = [(job, dict(label=label, recipe_name="default", arrangement="bos e m*",
                       n_texts=n_texts, seeds=seeds, length=length, cap=cap, overrides=over,
                       text_offset=text_offset))
            for label, over in variants.items()]
    return {r["label"]: r for r in common.run_jobs(jobs, workers)}


def rows_for_table(results: dict) -> list[dict]:
    return [{"variant": k, "changes": ", ".join(f"{a}={b}" for a, b in VARIANTS.get(k, {}).items()) or "-",
             "budget": v["budget"], "median_steps": v["median_steps"], "success": v["success_rate"],
             "mean_acc": v["mean_accuracy"],
             "steps": " ".join(str(r["steps"]) if r["converged"] else "-" for r in v["rows"])}
            for k, v in results.items()]


def measured(**settings) -> dict:
    """`search(**settings)` with its table: what a benchmark run keeps as one part."""
    variants = search(**settings)
    return {"settings": settings, "table": rows_for_table(variants), "variants": variants}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.problem_arguments(ap, "recipes")
    ap.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    ap.add_argument("--text-offset", type=int, default=0,
                    help="skip this many built-in texts (a held-out check of a first search)")
    args = ap.parse_args(argv)
    variants = {k: v for k, v in VARIANTS.items() if not args.only or k in args.only}
    results = search(variants, args.texts, args.seeds, args.length, args.cap,
                     text_offset=args.text_offset)
    print(common.table(rows_for_table(results),
                       ["variant", "changes", "budget", "median_steps", "success", "mean_acc", "steps"]))
    common.write_result(args.name, {"command": common.command_line(), "machine": common.machine(),
                                    "texts": args.texts, "text_offset": args.text_offset,
                                    "seeds": args.seeds, "length": args.length,
                                    "arrangement": "bos e m*", "variants": results})


if __name__ == "__main__":
    main()
