"""Convergence and speed side by side: the `make bench-quick` and `make bench` entry point.

Quick (under 15 minutes on an otherwise idle 2-core machine) answers, each measured in this run:
how many fewer steps the default recipe needs than the paper's (same texts, lengths, seeds),
how much batching gains in solutions per hour, what fraction of the machine's matmul peak the
fitting loop reaches (and where the rest of the time goes), and how memory grows with batch
size and length. Full does the same at 32 tokens with the recipes' own budgets and adds warm vs
cold capacity search, one-step vs autoregressive decoding and capacity by text source.

Every finished part is kept in `bench/results/<name>.partial.json`; a run stopped part-way and
started again with the same settings measures only what is left.

Timed parts run first and alone, with every thread (or `--threads`); convergence jobs (whose
step counts do not depend on timing) then run in single-thread worker processes side by side,
with the memory probes.

    python -m protoscope.bench.run --quick      # bench/results/quick.json
    python -m protoscope.bench.run --full       # bench/results/full.json
    python -m protoscope.bench.run --smoke      # every code path in seconds (prints only)
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from collections.abc import Callable
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
    # Where a new problem should start (bench/starts.py): paper, default and the shipped
    # encoder on 8 held-out texts x 2 seeds at 16 tokens; its headline keys join quick.json's.
    "extras": {"starts": {}},
}
# The full run: convergence at 32 tokens with the recipes' own budgets (the paper's plain `e m*`,
# which rarely converges, capped: its median is then a lower bound), the timed part and memory
# at that length, and the three additions. Sized to finish in about 1.5 hours on an
# idle 2-core machine, plus the 32-token starts comparison (paper, default, curriculum and the
# shipped encoder: about 85 minutes of both cores on its own); the recipe search, the
# arrangement table and the LM-head layout have their own commands (bench/README.md) and can
# be added here under "extras".
FULL = {**QUICK, "name": "full", "length": 32,
        "caps": {"paper_e_m": 1000},
        "memory_points": ((1, 32), (8, 32), (32, 32), (8, 64), (8, 128), (8, 256)),
        "extras": {
            "decoding": {"lengths": (16, 64, 128), "batches": (1, 8)},
            "capacity_warm": {"n_texts": 2, "seeds": 1, "max_length": 45, "budget": 600},
            # A small budget: capacities are lower bounds, below what 5000 steps would find.
            "capacity_sources": {"n_texts": 2, "seeds": 1, "max_length": 64, "budget": 500},
            # The starts comparison's 32-token half (bench-quick carries the 16-token one).
            "starts": {"settings": {"length": 32}},
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
             "starts": {"settings": {"length": 4, "texts": 1, "seeds": 1, "cap": 10}},
         }}

TARGETS = {  # goals from the issues, reported (never asserted)
    "steps_ratio_paper_over_default": (">=", 5.0),
    # the amortised start: >= 10x fewer steps than the paper recipe, on held-out problems
    "steps_ratio_paper_over_best": (">=", 10.0),
    "steps_ratio_paper_over_best_32": (">=", 10.0),
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


def idle_estimate(costs: dict, conv: dict) -> float:
    """Seconds this run would take with the machine to itself, from CPU time (shared machines
    stretch the wall time). Timed part: its CPU time over the threads (an overestimate when
    the machine was loaded, since threads waiting for a descheduled partner spin). Then the
    convergence jobs, single-threaded: the longest job or their total over the cores,
    whichever is longer; the memory probes and any extras: their CPU time over the cores."""
    cores = os.cpu_count() or 1
    jobs = [c["cpu_seconds"] for c in conv.values()]
    rest = sum(c["cpu_seconds"] for k, c in costs.items() if k not in ("timed", "convergence"))
    return (costs["timed"]["cpu_seconds"] / torch.get_num_threads()
            + max(max(jobs), sum(jobs) / cores) + rest / cores)


def run(s: dict, checkpoint: common.Checkpoint) -> dict:
    """Every part of a run, each kept by `checkpoint` as soon as it is finished."""
    started = time.perf_counter()
    result = {"command": common.command_line(), "settings": s, "machine": common.machine()}
    timed = checkpoint.part("timed", lambda: {**timed_part(s), "load_average_after": os.getloadavg()})
    # Memory probes only measure memory, so they share the machine with the convergence
    # workers, using the core that idles while the last convergence job finishes its stragglers.
    with ThreadPoolExecutor(1) as background:
        pending = background.submit(checkpoint.part, "convergence", lambda: convergence.compare(
            n_texts=s["texts"], seeds=s["seeds"], length=s["length"], caps=s["caps"]))
        mem = checkpoint.part("memory", lambda: memory.measure(s["memory_points"], s["memory_steps"]))
        conv = pending.result()
    result = {**headline(conv, timed, mem), **result,
              "convergence": conv, "throughput": timed, "memory": mem}
    if s.get("extras"):
        result["extras"] = {key: checkpoint.part(key, lambda key=key: EXTRAS[key](**kw))
                            for key, kw in s["extras"].items()}
        if "starts" in result["extras"]:
            result.update({k: result["extras"]["starts"]["headline"][k] for k in STARTS_KEYS})
    if s["name"] == "quick":
        result.update(starts_at(32))
    costs = checkpoint.costs
    result["seconds_this_invocation"] = time.perf_counter() - started
    result["parts_kept_from_an_interrupted_run"] = checkpoint.reused
    result["part_seconds"] = costs
    result["seconds_total"] = sum(c["seconds"] for k, c in costs.items() if k != "memory")  # memory overlaps
    result["cpu_seconds_total"] = sum(c["cpu_seconds"] for c in costs.values())
    result["idle_machine_minutes_estimate"] = idle_estimate(costs, conv) / 60
    result["targets"] = targets(result)
    result["targets"]["success_rate_default_at_least_paper"] = {
        "goal": ">= success_rate_paper",
        "met": result["success_rate_default"] >= result["success_rate_paper"]}
    return result


def _lazy(module: str, function: str) -> Callable:
    def call(**kw):
        return getattr(importlib.import_module(f"protoscope.bench.{module}"), function)(**kw)
    return call


# What a run's "extras" may name: the full run's additions and the separately run benchmarks.
EXTRAS = {
    "decoding": _lazy("decoding", "compare"),
    "capacity_warm": _lazy("capacity_search", "warm_vs_cold"),
    "capacity_sources": _lazy("capacity_search", "by_source"),
    "arrangements": _lazy("arrangements", "measured"),
    "recipes": _lazy("recipe_search", "measured"),
    "head_layout": _lazy("head_layout", "compare"),
    "starts": _lazy("starts", "measured"),
}
STARTS_KEYS = ("steps_ratio_paper_over_best", "best_start", "success_rate_best", "success_rate_paper_held_out")


def starts_at(length: int) -> dict:
    """The starts comparison's keys at `length` tokens, suffixed `_LENGTH`, from its own result
    file (bench/results/starts_LENGTH.json): at 32 tokens it costs about 85 minutes of both
    cores, too long for bench-quick, so quick.json carries what that file measured, and says
    which file and commands (empty when the file is missing or holds no paper row)."""
    import json

    from .starts import headline

    path = common.RESULTS / f"starts_{length}.json"
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    h = headline(saved["configs"])
    if not h:
        return {}
    best = saved["configs"][h["best_start"]]
    return {**{f"{k}_{length}": h[k] for k in (*STARTS_KEYS, "median_steps_best", "median_steps_paper_held_out")},
            f"starts_{length}_from": {"file": f"bench/results/{path.name}",
                                      "best_measured_by": best.get("measured_by", saved.get("command")),
                                      "paper_measured_by": saved["configs"]["paper"].get(
                                          "measured_by", saved.get("command"))}}


def targets(result: dict) -> dict:
    """Each target whose key this result holds: its goal and whether it was met."""
    return {k: {"goal": f"{op} {v}", "met": _met(result[k], op, v)}
            for k, (op, v) in TARGETS.items() if k in result}


def refresh_starts(name: str, length: int = 32) -> dict:
    """An existing result file (quick.json) with its `_LENGTH` starts keys read again from
    starts_LENGTH.json and its targets recomputed; nothing else in it is re-measured."""
    import json

    path = common.RESULTS / f"{name}.json"
    result = json.loads(path.read_text())
    result = {k: v for k, v in result.items() if not k.endswith(f"_{length}") and k != f"starts_{length}_from"}
    result.update(starts_at(length))
    result["targets"] = {**result.get("targets", {}), **targets(result)}
    mark = f"starts at {length} tokens (from starts_{length}.json)"
    result["printed_table"] = [line for line in result.get("printed_table", []) if not line.startswith(mark)] + [
        f"{mark}: ratio paper/best {result.get(f'steps_ratio_paper_over_best_{length}')}, "
        f"best {result.get(f'best_start_{length}')}"]
    common.write_result(name, result)
    return result


def _met(value, op: str, goal: float) -> bool:
    return value >= goal if op == ">=" else value <= goal


def report(r: dict) -> str:
    """The tables printed at the end of a run."""
    keys = ["steps_ratio_paper_over_default", "median_steps_default", "median_steps_paper",
            "success_rate_default", "success_rate_paper", "median_steps_paper_e_m",
            "success_rate_paper_e_m", "steps_ratio_paper_as_published_over_default", "batched_speedup", "flop_utilisation",
            "flop_utilisation_convention_3x", "fitting_gflops", "matmul_peak_gflops",
            *(k for k in STARTS_KEYS if k in r), *(f"{k}_32" for k in STARTS_KEYS if f"{k}_32" in r)]
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
    kept = r["parts_kept_from_an_interrupted_run"]
    lines += ["", f"total {r['seconds_total'] / 60:.1f} min wall, {r['cpu_seconds_total'] / 60:.1f} "
              f"CPU-min (about {r['idle_machine_minutes_estimate']:.1f} min on an idle machine); "
              f"load average at start {r['machine']['load_average_at_start'][0]:.1f}, "
              f"at end {os.getloadavg()[0]:.1f}"
              + (f"; parts kept from an interrupted run: {', '.join(kept)}" if kept else "")]
    return "\n".join(lines)


def extras_report(x: dict) -> list[str]:
    """A table or a line for each extra the run measured, in the order they ran."""
    lines: list[str] = []
    for key, value in x.items():
        lines += ["", *EXTRA_REPORTS[key](value)]
    return lines[1:]


def _warm_lines(w: dict) -> list[str]:
    return [f"capacity search, warm vs cold start (grid {w['warm']['grid']}, budget "
            f"{w['warm']['budget']} steps): warm {w['warm']['total_steps']} steps, cold "
            f"{w['cold']['total_steps']} (saved {w['steps_saved_fraction']:.0%}); capacity warm "
            f"{w['warm']['capacity']}, cold {w['cold']['capacity']}"]


def _source_lines(by_source: dict) -> list[str]:
    return [f"capacity {source} (budget {r['budget']} steps, grid up to {r['grid'][-1]}): "
            f"{r['capacity']}, H_LM nats {({k: round(v) for k, v in r['h_lm_nats'].items()})}"
            for source, r in by_source.items()]


EXTRA_REPORTS = {
    "decoding": lambda rows: ["decoding throughput (tokens/s)", common.table(
        rows, ["batch", "length", "one_step_tokens_per_s", "autoregressive_tokens_per_s", "ratio"])],
    "capacity_warm": _warm_lines,
    "capacity_sources": _source_lines,
    "arrangements": lambda a: ["arrangements (mean accuracy)", common.table(
        a["mean_accuracy"], ["arrangement"] + [k for k in a["mean_accuracy"][0] if k.startswith("N=")])],
    "recipes": lambda r: ["recipe search", common.table(
        r["table"], ["variant", "changes", "budget", "median_steps", "success", "mean_acc"])],
    "starts": lambda r: importlib.import_module("protoscope.bench.starts").report(r),
    "head_layout": lambda rows: ["LM head on a flattened input (bench/head_layout.py)", common.table(
        rows, ["batch", "seconds_per_step_as_is", "seconds_per_step_flat_head", "speedup"])],
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes: checks the scripts only")
    mode.add_argument("--refresh-starts", metavar="NAME", default=None,
                      help="read the 32-token starts keys into bench/results/NAME.json again from "
                           "starts_32.json (after that comparison gained rows); nothing is measured")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for the timed part (default: torch's, all cores); "
                         "1 gives steadier ratios on a machine shared with other jobs")
    args = ap.parse_args(argv)
    if args.refresh_starts:
        r = refresh_starts(args.refresh_starts)
        print(f"{args.refresh_starts}.json: steps_ratio_paper_over_best_32 "
              f"{r.get('steps_ratio_paper_over_best_32')} ({r.get('best_start_32')})")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = QUICK if args.quick else FULL if args.full else SMOKE
    partial = None if args.smoke else common.RESULTS / f"{settings['name']}.partial.json"
    checkpoint = common.Checkpoint(partial, settings)
    result = run(settings, checkpoint)
    result["printed_table"] = report(result).splitlines()  # the output, kept with the numbers
    print("\n".join(result["printed_table"]))
    if not args.smoke:  # smoke numbers mean nothing: never written over real results
        print(f"\nwritten: {common.write_result(settings['name'], result)}")
        checkpoint.finish()


if __name__ == "__main__":
    main()
