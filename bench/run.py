"""Convergence and speed side by side: the `make bench-quick` and `make bench` entry point.

Quick (under 15 minutes on an otherwise idle 2-core machine) answers, each measured in this run:
how many fewer steps the default recipe needs than the paper's (same texts, lengths, seeds),
how much batching gains in solutions per hour, what fraction of the machine's matmul peak the
fitting loop reaches (and where the rest of the time goes), and how memory grows with batch
size and length. Full adds uncapped budgets, the recipe search, the arrangement table, warm vs
cold capacity search, one-step vs autoregressive decoding and capacity by text source.

Timed parts run first and alone, with every thread (or `--threads`); convergence jobs (whose
step counts do not depend on timing) then run in single-thread worker processes side by side,
with the memory probes.

    python -m protoscope.bench.run --quick      # bench/results/quick.json
    python -m protoscope.bench.run --full       # bench/results/full.json
    python -m protoscope.bench.run --smoke      # every code path in seconds (prints only)
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from . import common, convergence, memory, profile_step, throughput

QUICK = {
    "name": "quick",
    "texts": 4, "seeds": 2, "length": 16,
    # The paper recipe runs up to 5000 steps without restarts; quick runs cap every budget
    # (default's own is 2000) and the plain `e m*` run, which rarely converges (FITTING-NOTES),
    # harder still: its 8 problems would otherwise take more time than everything else.
    "caps": {"default": 1000, "paper": 1000, "paper_e_m": 300},
    "batches": (1, 2, 4, 8, 16, 32), "sweep_steps": 5,
    "speedup_problems": 16, "speedup_steps": 10,
    "profile_batch": 32, "profile_steps": 3,
    "memory_points": ((1, 16), (8, 16), (32, 16), (8, 64), (8, 128)), "memory_steps": 2,
}
FULL = {**QUICK, "name": "full", "caps": {}, "sweep_steps": 8, "speedup_steps": 20,
        "memory_points": ((1, 16), (8, 16), (32, 16), (64, 16), (8, 64), (8, 128), (8, 256)),
        "extras": {
            "arrangements": {"n_texts": 4, "seeds": 2, "budget": 300},
            "recipes": {"n_texts": 4, "seeds": 2, "length": 16},
            "decoding": {"lengths": (16, 64, 128), "batches": (1, 8)},
            "head_layout": {"batches": (1, 8, 32), "steps": 4, "rounds": 3},
            "capacity_warm": {"n_texts": 2, "seeds": 2, "max_length": 90, "budget": 1000},
            # A small budget: capacities are lower bounds, below what 5000 steps would find.
            "capacity_sources": {"n_texts": 3, "seeds": 1, "max_length": 181, "budget": 500},
        }}
# Every code path in seconds, for checking the scripts themselves (numbers mean nothing).
SMOKE = {**QUICK, "name": "smoke", "texts": 1, "seeds": 2, "length": 4,
         "caps": {"default": 20, "paper": 20, "paper_e_m": 10}, "batches": (1, 2),
         "sweep_steps": 3, "speedup_problems": 2, "speedup_steps": 3, "profile_batch": 2,
         "profile_steps": 1, "memory_points": ((1, 4), (2, 4)), "memory_steps": 1,
         "extras": {
             "arrangements": {"n_texts": 1, "seeds": 1, "budget": 5, "lengths": (1, 2)},
             "recipes": {"n_texts": 1, "seeds": 1, "length": 4, "cap": 10},
             "decoding": {"lengths": (4,), "batches": (1,)},
             "head_layout": {"batches": (1,), "length": 4, "steps": 2, "rounds": 1},
             "capacity_warm": {"n_texts": 1, "seeds": 1, "max_length": 5, "budget": 10},
             "capacity_sources": {"n_texts": 1, "seeds": 1, "max_length": 4, "budget": 5},
         }}

TARGETS = {  # goals from the benchmark issue, reported (never asserted)
    "steps_ratio_paper_over_default": (">=", 5.0),
    "batched_speedup": (">=", 4.0),
    "flop_utilisation": (">=", 0.5),
}


def timed_part(s: dict) -> dict:
    """Throughput, batching, FLOP utilisation and the profile: alone, with every thread."""
    rates = [throughput.step_rate(b, s["length"], s["sweep_steps"]) for b in s["batches"]]
    best = max(rates, key=lambda r: r["problem_steps_per_s"])
    util = throughput.utilisation(best, s["length"])
    speedup = throughput.batched_speedup(s["speedup_problems"], s["length"], s["speedup_steps"])
    prof = profile_step.profile_steps(s["profile_batch"], s["length"], s["profile_steps"])
    counted = throughput.model_flops(common.model(), s["profile_batch"], util["input_positions"], s["length"])
    # ~1.0 means the count is right and no weight-gradient matmuls run (they would add ~50%).
    prof["profiler_flops_over_counted"] = prof["profiler_matmul_flops_per_step"] / counted["step"]
    return {"step_rates": rates, "utilisation": util, "speedup": speedup, "profile": prof}


def headline(conv: dict, timed: dict, mem: list[dict]) -> dict:
    util, speedup = timed["utilisation"], timed["speedup"]
    return {
        **convergence.headline(conv),
        "batched_speedup": speedup["speedup"],
        "problem_steps_per_second": {str(r["batch"]): r["problem_steps_per_s"] for r in timed["step_rates"]},
        "flop_utilisation": util["flop_utilisation"],
        "flop_utilisation_convention_3x": util["flop_utilisation_convention_3x"],
        "fitting_gflops": util["fitting_gflops"],
        "matmul_peak_gflops": util["matmul_gflops"]["square_2048"]["median"],
        "peak_memory_mb": {f"{m['batch']}x{m['length']}": m["peak_rss_mb"] for m in mem},
        "fitting_memory_mb": {f"{m['batch']}x{m['length']}": m["fitting_mb"] for m in mem},
        **memory.growth(mem),
    }


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (workers, memory probes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def idle_estimate(cpu_timed: float, conv: dict, result: dict) -> float:
    """Seconds this run would take with the machine to itself, from CPU time (shared machines
    stretch the wall time). Timed part: its CPU time over the threads (an overestimate when
    the machine was loaded, since threads waiting for a descheduled partner spin). Then the
    convergence jobs, single-threaded: the longest job or their total over the cores,
    whichever is longer; the memory probes and any extras: their CPU time over the cores."""
    cores = os.cpu_count() or 1
    jobs = [c["cpu_seconds"] for c in conv.values()]
    rest = result["cpu_seconds_total"] - cpu_timed - sum(jobs)
    return cpu_timed / torch.get_num_threads() + max(max(jobs), sum(jobs) / cores) + rest / cores


def run(s: dict, extras: bool = False) -> dict:
    started, cpu0 = time.perf_counter(), cpu_seconds()
    result = {"command": common.command_line(), "settings": s, "machine": common.machine()}
    with common.Clock() as clock:
        timed = timed_part(s)
    result["seconds_timed_part"] = clock.wall
    result["load_average_after_timed_part"] = os.getloadavg()
    cpu_timed = cpu_seconds() - cpu0
    # Memory probes only measure memory, so they share the machine with the convergence
    # workers, using the core that idles while the last convergence job finishes its stragglers.
    with ThreadPoolExecutor(1) as background:
        pending = background.submit(convergence.compare, n_texts=s["texts"], seeds=s["seeds"],
                                    length=s["length"], caps=s["caps"])
        mem = memory.measure(s["memory_points"], s["memory_steps"])
        conv = pending.result()
    result = {**headline(conv, timed, mem), **result,
              "convergence": conv, "throughput": timed, "memory": mem}
    if extras:
        result["extras"] = full_extras(s["extras"])
    result["seconds_total"] = time.perf_counter() - started
    result["cpu_seconds_total"] = cpu_seconds() - cpu0
    result["idle_machine_minutes_estimate"] = idle_estimate(cpu_timed, conv, result) / 60
    result["targets"] = {k: {"goal": f"{op} {v}", "met": _met(result[k], op, v)} for k, (op, v) in TARGETS.items()}
    result["targets"]["success_rate_default_at_least_paper"] = {
        "goal": ">= success_rate_paper",
        "met": result["success_rate_default"] >= result["success_rate_paper"]}
    return result


def full_extras(x: dict) -> dict:
    """The full run's additions (the arrangement table and recipe search in full as well)."""
    from . import arrangements, capacity_search, decoding, head_layout, recipe_search

    rows = arrangements.measure(**x["arrangements"])
    recipes = recipe_search.search(**x["recipes"])
    return {
        "arrangements": {"settings": x["arrangements"], "mean_accuracy": arrangements.wide(rows),
                         "exact_rate": arrangements.wide(rows, "exact_rate"), "rows": rows,
                         "paper_table1_llama_3_2_1b": arrangements.PAPER_TABLE1},
        "recipes": {"settings": x["recipes"], "table": recipe_search.rows_for_table(recipes),
                    "variants": recipes},
        "decoding": decoding.compare(**x["decoding"]),
        "head_layout": head_layout.compare(**x["head_layout"]),
        "capacity_warm_vs_cold": capacity_search.warm_vs_cold(**x["capacity_warm"]),
        "capacity_by_source": capacity_search.by_source(**x["capacity_sources"]),
    }


def _met(value, op: str, goal: float) -> bool:
    return value >= goal if op == ">=" else value <= goal


def report(r: dict) -> str:
    """The tables printed at the end of a run."""
    keys = ["steps_ratio_paper_over_default", "median_steps_default", "median_steps_paper",
            "success_rate_default", "success_rate_paper", "median_steps_paper_e_m",
            "success_rate_paper_e_m", "steps_ratio_paper_as_published_over_default", "batched_speedup", "flop_utilisation",
            "flop_utilisation_convention_3x", "fitting_gflops", "matmul_peak_gflops"]
    lines = [common.table([{"key": k, "value": r.get(k), "target": r["targets"].get(k, {}).get("goal"),
                            "met": r["targets"].get(k, {}).get("met")} for k in keys],
                          ["key", "value", "target", "met"])]
    lines += ["", "convergence (steps per problem; - = not converged within the budget)",
              common.table(convergence.rows_for_table(r["convergence"]),
                           ["config", "recipe", "arrangement", "budget", "median_steps", "success",
                            "mean_acc", "steps"])]
    t = r["throughput"]
    lines += ["", f"throughput ({r['settings']['length']} tokens, fixed work per problem)",
              common.table(t["step_rates"], ["batch", "seconds_per_step", "problem_steps_per_s"]),
              f"batched {t['speedup']['batched']['solutions_per_hour']:.0f} solutions/h vs one at a "
              f"time {t['speedup']['one_at_a_time']['solutions_per_hour']:.0f}",
              "", f"where a step's wall time goes (batch {t['profile']['batch']})",
              common.table([{"category": k, "share": v} for k, v in t["profile"]["share_of_wall"].items()],
                           ["category", "share"]),
              "", "memory (own process per point; fitting_mb = peak during fitting - after load)",
              common.table(r["memory"], ["batch", "length", "rss_after_load_mb", "peak_rss_mb", "fitting_mb"])]
    if "extras" in r:
        lines += ["", *extras_report(r["extras"])]
    lines += ["", f"total {r['seconds_total'] / 60:.1f} min wall, {r['cpu_seconds_total'] / 60:.1f} "
              f"CPU-min (about {r['idle_machine_minutes_estimate']:.1f} min on an idle machine); "
              f"load average at start {r['machine']['load_average_at_start'][0]:.1f}, "
              f"at end {os.getloadavg()[0]:.1f}"]
    return "\n".join(lines)


def extras_report(x: dict) -> list[str]:
    arr = x["arrangements"]
    cols = ["arrangement"] + [k for k in arr["mean_accuracy"][0] if k.startswith("N=")]
    warm = x["capacity_warm_vs_cold"]
    lines = ["arrangements (mean accuracy)", common.table(arr["mean_accuracy"], cols), "",
             "recipe search", common.table(x["recipes"]["table"], ["variant", "changes", "budget",
                                                                   "median_steps", "success", "mean_acc"]),
             "", "decoding throughput (tokens/s)",
             common.table(x["decoding"], ["batch", "length", "one_step_tokens_per_s",
                                          "autoregressive_tokens_per_s", "ratio"]),
             "", "LM head on a flattened input (bench/head_layout.py)",
             common.table(x["head_layout"], ["batch", "seconds_per_step_as_is",
                                             "seconds_per_step_flat_head", "speedup"]),
             "", f"capacity search: warm start {warm['warm']['total_steps']} steps, cold "
                 f"{warm['cold']['total_steps']} (saved {warm['steps_saved_fraction']:.0%}); "
                 f"capacity warm {warm['warm']['capacity']} cold {warm['cold']['capacity']}"]
    for source, res in x["capacity_by_source"].items():
        lines.append(f"capacity {source} (budget {res['budget']} steps): {res['capacity']}")
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes: checks the scripts only")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for the timed part (default: torch's, all cores); "
                         "1 gives steadier ratios on a machine shared with other jobs")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = QUICK if args.quick else FULL if args.full else SMOKE
    result = run(settings, extras=not args.quick)
    result["printed_table"] = report(result).splitlines()  # the output, kept with the numbers
    print("\n".join(result["printed_table"]))
    if not args.smoke:  # smoke numbers mean nothing: never written over real results
        print(f"\nwritten: {common.write_result(settings['name'], result)}")


if __name__ == "__main__":
    main()
