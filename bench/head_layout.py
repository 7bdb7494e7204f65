"""Would a flattened LM-head input make the fitting step faster? Decoder as is vs one changed line.

`Decoder._head_loss` applies the head to `hidden[:, first:first+n]`, a slice that is not
contiguous and requires grad; for such an input `torch.matmul` does not fold the batch into
the rows, so the head runs as a batched matmul against the weight expanded over the batch (B
small [n, d] x [d, vocab] products, forward and backward: `aten::bmm` in the profile) instead
of one [B*n, d] x [d, vocab] `aten::mm`. The variant (`Decoder(..., flat_head=True)`) changes
only that line:

    logits = self._head(h.reshape(-1, h.shape[-1])).view(*h.shape[:-1], -1).float()

Both run the real engine step (fixed work, same problems), interleaved round by round so a
shared machine's load falls on both alike; the median step time of each is reported, with the
largest difference in accuracy or loss between the two (it should be float rounding only).

    python -m protoscope.bench.head_layout --batches 1 8 32 --steps 4 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.engine.fitting import Fitter

from . import common
from .throughput import _problems, fixed_work_recipe


def _step_times(flat_head: bool, batch: int, length: int, steps: int):
    stamps: list[float] = []
    decoder = Decoder(common.model(), "bos e m*", flat_head=flat_head)
    fitter = Fitter(decoder, fixed_work_recipe(steps),
                    batch_size=batch, on_step=lambda acc: stamps.append(time.perf_counter()))
    groups = fitter.fit(_problems(batch, length))
    results = {(s.problem.text_id, s.problem.seed): (s.accuracy, s.loss) for g in groups for s in g.solutions}
    return [b - a for a, b in zip(stamps, stamps[1:])], results


def compare(batches=(1, 8, 32), length: int = 16, steps: int = 4, rounds: int = 3) -> list[dict]:
    rows = []
    for batch in batches:
        times = {"as_is": [], "flat_head": []}
        outputs = {}
        for _ in range(rounds):
            for label, flat_head in (("as_is", False), ("flat_head", True)):
                t, outputs[label] = _step_times(flat_head, batch, length, steps)
                times[label] += t
        a, b = statistics.median(times["as_is"]), statistics.median(times["flat_head"])
        diff = max(max(abs(x[0] - y[0]), abs(x[1] - y[1]) / max(1.0, abs(x[1])))
                   for x, y in zip(outputs["as_is"].values(), outputs["flat_head"].values()))
        rows.append({"batch": batch, "seconds_per_step_as_is": a, "seconds_per_step_flat_head": b,
                     "speedup": a / b, "max_result_difference": diff})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--length", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = compare(args.batches, args.length, args.steps, args.rounds)
    print(common.table(rows, ["batch", "seconds_per_step_as_is", "seconds_per_step_flat_head",
                              "speedup", "max_result_difference"]))
    common.write_result("head_layout", {"command": common.command_line(), "machine": common.machine(),
                                        "length": args.length, "steps": args.steps,
                                        "rounds": args.rounds, "rows": rows})


if __name__ == "__main__":
    main()
