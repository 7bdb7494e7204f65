"""How much faster is one-step decoding than autoregressive decoding from a [mem] vector?

One-step: the toolkit's Decoder turns (e, m) into N tokens in one forward pass (`bos e m*`).
Autoregressive: one trained [mem] vector as the prompt, then greedy generation of N tokens
with a KV cache (N forward passes of one position each), as the [mem] baseline decodes: the
Decoder's prompt view for the `mem` arrangement.
Throughput is tokens emitted per second of decoding; vector values do not change the cost, so
random vectors are used. Best of a few repetitions, both measured in the same process.

    python -m protoscope.bench.decoding --lengths 16 64 128 --batches 1 8
"""

from __future__ import annotations

import argparse
import time

import torch

from protoscope.geometry.engine.decoder import Decoder

from . import common


def _best_seconds(fn, reps: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def one_step(batch: int, length: int, reps: int = 3) -> float:
    """Tokens per second of one forward pass of the decoder."""
    loaded = common.model()
    decoder = Decoder(loaded, "bos e m*")
    scale = loaded.info.embedding_std
    e, m = torch.randn(batch, loaded.info.d_model) * scale, torch.randn(batch, loaded.info.d_model) * scale
    targets = torch.zeros(batch, length, dtype=torch.long)
    return batch * length / _best_seconds(lambda: decoder(e, m, targets), reps)


def autoregressive(batch: int, length: int, reps: int = 3) -> float:
    """Tokens per second of greedy generation with a KV cache from one [mem] vector."""
    loaded = common.model()
    decoder = Decoder(loaded, "mem")
    prompt = decoder.prompt(torch.randn(batch, loaded.info.d_model) * loaded.info.embedding_std)
    return batch * length / _best_seconds(lambda: decoder.greedy(prompt, length), reps)


def compare(lengths=(16, 64, 128), batches=(1, 8), reps: int = 3) -> list[dict]:
    rows = []
    for batch in batches:
        for length in lengths:
            one, ar = one_step(batch, length, reps), autoregressive(batch, length, reps)
            rows.append({"batch": batch, "length": length, "one_step_tokens_per_s": one,
                         "autoregressive_tokens_per_s": ar, "ratio": one / ar})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args(argv)
    rows = compare(args.lengths, args.batches)
    print(common.table(rows, ["batch", "length", "one_step_tokens_per_s",
                              "autoregressive_tokens_per_s", "ratio"]))


if __name__ == "__main__":
    main()
