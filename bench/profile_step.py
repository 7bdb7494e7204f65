"""Where does a fitting step spend its time? A torch.profiler breakdown of the real engine loop.

A few steps of the batched engine run under the profiler (after one warm-up step);
operator self-times are grouped into matmul, attention, head loss, elementwise/normalisation,
data movement and the optimiser, and the remainder of the wall time is Python and dispatch
overhead. The profiler's own FLOP count of the matmuls checks the analytic count in
throughput.py (it would be ~1.5x larger if weight gradients were being computed).

    python -m protoscope.bench.profile_step --batch 32 --length 16 --steps 3
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from torch.profiler import ProfilerActivity, profile, schedule

from . import common
from .throughput import _problems, fixed_work_recipe

# Substrings of aten op names -> category; the first match wins.
CATEGORIES = (
    ("matmul", ("mm", "matmul", "linear", "addmm", "bmm")),
    ("attention", ("attention", "_flash", "sdpa")),
    ("head_loss", ("log_softmax", "nll_loss", "cross_entropy", "argmax", "max")),
    ("data_movement", ("copy", "cat", "index", "stack", "clone", "contiguous", "to", "expand",
                       "transpose", "view", "reshape", "slice", "select", "empty", "zeros",
                       "fill", "where", "lerp")),
    ("elementwise_norm", ("mul", "add", "sub", "div", "pow", "rsqrt", "mean", "silu", "sigmoid",
                          "neg", "cos", "sin", "sqrt", "exp", "sum", "tanh", "isfinite", "all")),
)


def category(name: str) -> str:
    op = name.removeprefix("aten::").lower()
    for label, keys in CATEGORIES:
        if any(k in op for k in keys):
            return label
    return "other"


def profile_steps(batch: int, length: int, steps: int) -> dict:
    """Profile `steps` engine steps with `batch` problems; share of wall time per category."""
    chosen = _problems(batch, length)
    stamps: list[float] = []
    # The first engine step (cold caches, batch set-up) is the profiler's warm-up.
    sched = schedule(wait=0, warmup=1, active=steps, repeat=1)
    with profile(activities=[ProfilerActivity.CPU], schedule=sched, with_flops=True) as prof:
        def on_step(acc):
            stamps.append(time.perf_counter())
            prof.step()

        common.fit("bos e m*", fixed_work_recipe(steps + 2), chosen, batch_size=batch,
                   on_step=on_step)
    wall = stamps[steps] - stamps[0]  # the window the profiler recorded
    self_us = defaultdict(float)
    flops = 0
    top = []
    for evt in prof.key_averages():
        self_us[category(evt.key)] += evt.self_cpu_time_total
        flops += evt.flops or 0
        top.append((evt.self_cpu_time_total, evt.key, evt.count))
    in_ops = sum(self_us.values()) / 1e6
    shares = {k: v / 1e6 / wall for k, v in sorted(self_us.items(), key=lambda kv: -kv[1])}
    shares["python_and_dispatch_overhead"] = max(0.0, 1 - in_ops / wall)
    top.sort(reverse=True)
    return {"batch": batch, "length": length, "steps": steps, "wall_seconds": wall,
            "share_of_wall": shares, "profiler_matmul_flops_per_step": flops / steps,
            "top_ops": [{"op": k, "self_s_per_step": t / 1e6 / steps, "calls_per_step": c / steps}
                        for t, k, c in top[:12]]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)
    result = profile_steps(args.batch, args.length, args.steps)
    print(common.table([{"category": k, "share": v} for k, v in result["share_of_wall"].items()],
                       ["category", "share"]))
    print(common.table(result["top_ops"], ["op", "self_s_per_step", "calls_per_step"]))
    print("profiler matmul FLOPs per step:", result["profiler_matmul_flops_per_step"])


if __name__ == "__main__":
    main()
