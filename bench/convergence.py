"""How many steps does each recipe need to reconstruct a text exactly, and how often does it?

Every configuration fits the same problems (texts x seeds at one length). Steps count every
forward/backward of a problem, restarts included; a problem that does not converge within the
budget counts as the budget, so a median is never flattered by dropping failures. The paper's
recipe has no restarts and a 5000-step budget; quick runs cap every budget (recorded in the
result) so the comparison fits in minutes. Step counts do not depend on timing, so the
configurations run side by side in worker processes.

    python -m protoscope.bench.convergence --texts 4 --seeds 2 --length 16 --cap 1500
"""

from __future__ import annotations

import argparse

from . import common

# (label, recipe, arrangement): the default recipe against the paper's, both with a BOS in
# front, and the paper's recipe in the paper's own plain layout.
COMPARED = (
    ("default", "default", "bos e m*"),
    ("paper", "paper", "bos e m*"),
    ("paper_e_m", "paper", "e m*"),
)


def job(label: str, recipe_name: str, arrangement: str, n_texts: int, seeds: int,
        length: int, cap: int | None, overrides: dict | None = None, text_offset: int = 0) -> dict:
    """Fit one configuration on the shared problem list; per-problem rows and a summary."""
    base = common.recipe(recipe_name, **(overrides or {}))
    budget = min(base.max_steps, cap) if cap else base.max_steps
    rec = common.recipe(recipe_name, **{**(overrides or {}), "max_steps": budget})
    chosen = common.problems(common.texts(count=n_texts, offset=text_offset), seeds, length)
    with common.Clock() as clock:
        solutions = common.fit(arrangement, rec, chosen, label=label)
    rows = [common.outcome(s, budget) for s in solutions]
    return {"label": label, "recipe": rec.to_dict(), "arrangement": arrangement,
            "budget": budget, "budget_capped": budget < base.max_steps,
            "recipe_budget": base.max_steps, "rows": rows, "seconds": round(clock.wall, 1), "cpu_seconds": round(clock.cpu, 1),
            **common.summary(rows)}


def compare(configs=COMPARED, n_texts: int = 4, seeds: int = 2, length: int = 16,
            cap: int | None = None, caps: dict | None = None, workers: int | None = None) -> dict:
    """Run every configuration, one single-thread worker each; `caps` overrides `cap` per label.

    One worker per configuration even beyond the core count: the OS then shares the cores
    among whichever jobs are left, so no core idles while one job finishes its stragglers.
    """
    jobs = [(job, dict(label=label, recipe_name=name, arrangement=arr, n_texts=n_texts,
                       seeds=seeds, length=length, cap=(caps or {}).get(label, cap)))
            for label, name, arr in configs]
    results = common.run_jobs(jobs, workers or len(jobs))
    return {r["label"]: r for r in results}


def headline(by_label: dict) -> dict:
    """The keys the quick run promises: ratio of medians and both success rates."""
    d, p = by_label["default"], by_label["paper"]
    out = {
        "steps_ratio_paper_over_default": p["median_steps"] / d["median_steps"],
        "success_rate_default": d["success_rate"],
        "success_rate_paper": p["success_rate"],
        "median_steps_default": d["median_steps"],
        "median_steps_paper": p["median_steps"],
        "budget_default": d["budget"],
        "budget_paper": p["budget"],
    }
    if "paper_e_m" in by_label:
        q = by_label["paper_e_m"]
        out.update(median_steps_paper_e_m=q["median_steps"], success_rate_paper_e_m=q["success_rate"],
                   budget_paper_e_m=q["budget"],
                   # The paper's method as published (its recipe AND its plain `e m*` layout). A
                   # lower bound when its budget is the smaller one: failures count as that budget.
                   steps_ratio_paper_as_published_over_default=q["median_steps"] / d["median_steps"],
                   steps_ratio_paper_as_published_is_lower_bound=q["budget"] < d["budget"])
    return out


def rows_for_table(by_label: dict) -> list[dict]:
    return [{"config": k, "recipe": v["recipe"]["name"], "arrangement": v["arrangement"],
             "budget": v["budget"], "median_steps": v["median_steps"],
             "success": v["success_rate"], "mean_acc": v["mean_accuracy"],
             "steps": " ".join(str(r["steps"]) if r["converged"] else "-" for r in v["rows"])}
            for k, v in by_label.items()]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.problem_arguments(ap, "convergence")
    args = ap.parse_args(argv)
    by_label = compare(n_texts=args.texts, seeds=args.seeds, length=args.length, cap=args.cap)
    print(common.table(rows_for_table(by_label), ["config", "recipe", "arrangement", "budget",
                                                 "median_steps", "success", "mean_acc", "steps"]))
    common.write_result(args.name, {"command": common.command_line(), "machine": common.machine(),
                                    **headline(by_label), "configs": by_label})


if __name__ == "__main__":
    main()
