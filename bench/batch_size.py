"""How many problems should one batch hold on this machine? Problem-steps/s by tokens in flight.

The engine fills a batch up to a budget of target tokens in flight (`Fitter.auto_batch_size`:
batch = budget // length). This measures the real engine step (fixed work, as in
throughput.py) at several batch sizes for each length, round by round in turn so a shared
machine's load falls on all alike, and reports the median problem-steps/s of each with the
batch the engine would choose, so the budget can be set from a measurement.

    python -m protoscope.bench.batch_size --lengths 16 32 --batches 8 16 32 64 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics

from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.engine.fitting import Fitter

from . import common
from .throughput import fixed_work_recipe, step_rate


def measure(lengths=(16, 32), batches=(8, 16, 32, 64), steps: int = 4, rounds: int = 2) -> list[dict]:
    auto = Fitter(Decoder(common.model(), "bos e m*"), fixed_work_recipe(steps))
    rates: dict = {}
    for _ in range(rounds):
        for length in lengths:
            for batch in batches:
                rate = step_rate(batch, length, steps)["problem_steps_per_s"]
                rates.setdefault((length, batch), []).append(rate)
    rows = [{"length": n, "batch": b, "tokens_in_flight": n * b,
             "problem_steps_per_s": statistics.median(r), "rounds": r,
             "engine_choice": b == auto.auto_batch_size(n)} for (n, b), r in rates.items()]
    for n in lengths:
        best = max((r for r in rows if r["length"] == n), key=lambda r: r["problem_steps_per_s"])
        for r in rows:
            if r["length"] == n:
                r["of_best"] = r["problem_steps_per_s"] / best["problem_steps_per_s"]
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--name", default="batch_size")
    args = ap.parse_args(argv)
    rows = measure(args.lengths, args.batches, args.steps, args.rounds)
    print(common.table(rows, ["length", "batch", "tokens_in_flight", "problem_steps_per_s",
                              "of_best", "engine_choice"]))
    common.write_result(args.name, {"command": common.command_line(), "machine": common.machine(),
                                    "rows": rows})


if __name__ == "__main__":
    main()
