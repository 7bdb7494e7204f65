"""How fast does the fitting loop run: batching gain, problem-steps per second, FLOP utilisation?

The work is made identical across settings: patience 0 and a fixed step budget too short to
converge, so every problem takes exactly `steps` steps and only throughput differs (checked:
the measured problem-steps are reported). FLOPs are counted from the model's shapes:

    forward   2 x (non-embedding matmul weights) x input positions
              + 4 x L^2 x (query width) per layer and sequence (QK^T and AV, full square)
              + 2 x d_model x vocab x supervised positions (the LM head)
    backward  only gradients to the inputs: the weights are frozen, so no weight-gradient
              matmuls run. That is 1 x forward for every linear map and the head, and
              2 x forward for attention's quadratic part (dQ, dK, dV, dP).
The result is close to 2 x forward; `flops_convention_3x` also gives the usual 3 x forward
(backward = 2 x forward, i.e. as if weight gradients were computed) for comparison.
Utilisation divides by the median rate of a plain 2048^3 float32 matmul measured in the same
run (the best rate is reported too), and the matmul rates at the loop's own shapes say how
much of the gap is the shapes themselves.

    python -m protoscope.bench.throughput --batches 1 2 4 8 16 32 --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from . import common

STEP_RECIPE = dict(patience=0, max_restarts=0)  # plus max_steps: a fixed amount of work


def fixed_work_recipe(steps: int):
    return common.recipe("default", max_steps=steps, **STEP_RECIPE)


# ---------------------------------------------------------------- FLOP count


def model_flops(loaded, batch: int, input_len: int, supervised: int) -> dict:
    """Matmul FLOPs of one fitting step (forward, backward to the inputs), by the formulas above."""
    model, cfg = loaded.model, loaded.model.config
    tied = {id(loaded.model.get_input_embeddings().weight), id(loaded.model.get_output_embeddings().weight)}
    linear = sum(p.numel() for p in model.parameters() if p.dim() == 2 and id(p) not in tied)
    heads = getattr(cfg, "num_attention_heads")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    layers = loaded.info.n_layers
    fwd_linear = 2 * linear * batch * input_len
    fwd_attention = 4 * input_len**2 * heads * head_dim * layers * batch
    fwd_head = 2 * loaded.info.d_model * loaded.info.vocab_size * batch * supervised
    forward = fwd_linear + fwd_attention + fwd_head
    backward = fwd_linear + 2 * fwd_attention + fwd_head
    return {"linear_params": linear, "forward": forward, "backward_to_inputs": backward,
            "step": forward + backward, "step_convention_3x": 3 * forward,
            "share_head": fwd_head / forward, "share_attention": fwd_attention / forward}


def matmul_gflops(m: int, k: int, n: int, reps: int = 7) -> dict:
    """Float32 GFLOP/s of an [m, k] x [k, n] matmul (torch, all threads): median and best.

    Utilisation uses the median, the same statistic as the step times: on a shared machine a
    best-of would compare a lucky matmul with a typical step.
    """
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)  # warm-up: thread pool, allocator, packing
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    flop = 2 * m * k * n / 1e9
    return {"median": flop / statistics.median(times), "best": flop / min(times)}


def matmul_peaks(loaded, batch: int, input_len: int, supervised: int) -> dict:
    """The plain 2048^3 peak and the rates at the fitting loop's own largest matmul shapes."""
    d, vocab = loaded.info.d_model, loaded.info.vocab_size
    ffn = getattr(loaded.model.config, "intermediate_size", 4 * d)
    return {"square_2048": matmul_gflops(2048, 2048, 2048),
            f"mlp_{batch * input_len}x{d}x{ffn}": matmul_gflops(batch * input_len, d, ffn, reps=20),
            f"head_{batch * supervised}x{d}x{vocab}": matmul_gflops(batch * supervised, d, vocab)}


# ---------------------------------------------------------------- timing the engine


def step_rate(batch: int, length: int, steps: int, arrangement: str = "bos e m*") -> dict:
    """Problem-steps per second with `batch` problems in flight (median step, first skipped)."""
    chosen = _problems(batch, length)
    stamps: list[float] = []
    common.fit(arrangement, fixed_work_recipe(steps), chosen, batch_size=batch,
               on_step=lambda acc: stamps.append(time.perf_counter()))
    per_step = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))
    return {"batch": batch, "seconds_per_step": per_step, "problem_steps_per_s": batch / per_step}


def _problems(count: int, length: int):
    """`count` distinct problems over the first 4 texts, seeds as needed."""
    seeds = -(-count // 4)
    return common.problems(common.texts(count=4), seeds, length)[:count]


def batched_speedup(n_problems: int, length: int, steps: int, arrangement: str = "bos e m*") -> dict:
    """Solutions per hour: all problems in one batch against the same problems one at a time."""
    chosen = _problems(n_problems, length)
    rec = fixed_work_recipe(steps)
    out = {}
    for label, batch in (("batched", n_problems), ("one_at_a_time", 1)):
        with common.Clock() as clock:
            solutions = common.fit(arrangement, rec, chosen, batch_size=batch)
        done = sum(s.steps for s in solutions)
        out[label] = {"batch_size": batch, "seconds": clock.wall, "cpu_seconds": clock.cpu,
                      "problem_steps": done, "solutions_per_hour": n_problems / clock.wall * 3600}
    out["speedup"] = out["batched"]["solutions_per_hour"] / out["one_at_a_time"]["solutions_per_hour"]
    out["identical_work"] = out["batched"]["problem_steps"] == out["one_at_a_time"]["problem_steps"]
    return out


def utilisation(rate: dict, length: int, arrangement: str = "bos e m*") -> dict:
    """FLOP/s of the fitting loop at one measured batch size against the matmul peak."""
    loaded = common.model()
    from protoscope.geometry.engine.arrangements import parse_arrangement

    input_len = parse_arrangement(arrangement).input_length(length)
    flops = model_flops(loaded, rate["batch"], input_len, length)
    peaks = matmul_peaks(loaded, rate["batch"], input_len, length)
    achieved = flops["step"] / rate["seconds_per_step"] / 1e9
    return {"batch": rate["batch"], "input_positions": input_len, "flops": flops,
            "fitting_gflops": achieved,
            "fitting_gflops_convention_3x": flops["step_convention_3x"] / rate["seconds_per_step"] / 1e9,
            "matmul_gflops": peaks,
            "flop_utilisation": achieved / peaks["square_2048"]["median"],
            "flop_utilisation_vs_best_matmul": achieved / peaks["square_2048"]["best"],
            "flop_utilisation_convention_3x":
                flops["step_convention_3x"] / rate["seconds_per_step"] / 1e9 / peaks["square_2048"]["median"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--length", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--speedup-problems", type=int, default=16)
    ap.add_argument("--speedup-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--name", default=None, help="write bench/results/NAME.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rates = [step_rate(b, args.length, args.steps) for b in args.batches]
    util = utilisation(max(rates, key=lambda r: r["problem_steps_per_s"]), args.length)
    speedup = batched_speedup(args.speedup_problems, args.length, args.speedup_steps)
    print(common.table(rates, ["batch", "seconds_per_step", "problem_steps_per_s"]))
    print(f"batched_speedup {speedup['speedup']:.2f}  flop_utilisation {util['flop_utilisation']:.2f} "
          f"({util['fitting_gflops']:.1f} of {util['matmul_gflops']['square_2048']['median']:.1f} GFLOP/s)")
    if args.name:
        common.write_result(args.name, {"command": common.command_line(), "machine": common.machine(),
                                        "step_rates": rates, "utilisation": util, "speedup": speedup,
                                        "batched_speedup": speedup["speedup"],
                                        "flop_utilisation": util["flop_utilisation"]})


if __name__ == "__main__":
    main()
