"""How long does a large text file take to reach the first optimiser step, and where does it go?

`write` makes a reproducible .jsonl of distinct short texts (words drawn with a seed from the
5,000 most frequent English words); `measure` loads the model, then runs the fit-run sequence
on that file into a temporary run and stops at the first optimiser step, reporting seconds to
each stage: model loaded, texts tokenised, texts scored (per-token NLL for H_LM; since scoring
waits for the end of the fit, geometry/store/scoring.py, a run stopped at its first step has no
`texts_scored` mark and `scored_tokens` 0), first step.

    python -m protoscope.bench.prepare_texts write --out /tmp/texts-10000.jsonl --count 10000
    python -m protoscope.bench.prepare_texts measure /tmp/texts-10000.jsonl --length 8
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from protoscope.geometry.models.loading import DEFAULT_MODEL, load_model
from protoscope.geometry.engine.recipes import resolve_recipe
from protoscope.geometry.runs.fit import RunConfig, fit_run, use_threads

from . import common

WORDS = 5000


def write_texts(out, count: int = 10_000, seed: int = 0, min_words: int = 8,
                max_words: int = 20) -> Path:
    """`count` distinct lines {"id": "line-00000", "text": ...} of min..max_words words."""
    import wordfreq

    words = wordfreq.top_n_list("en", WORDS)
    rng, seen, lines = random.Random(seed), set(), []
    while len(lines) < count:
        text = " ".join(rng.choices(words, k=rng.randint(min_words, max_words)))
        if text not in seen:
            seen.add(text)
            lines.append(json.dumps({"id": f"line-{len(lines):05d}", "text": text}))
    out = Path(out)
    out.write_text("\n".join(lines) + "\n")
    return out


class _FirstStep(Exception):
    pass


def measure(path, length: int = 8, model: str = DEFAULT_MODEL) -> dict:
    """Seconds from start to each stage of preparing `path`, up to the first optimiser step."""
    marks: dict[str, float] = {}
    started = time.perf_counter()

    def mark(name: str) -> None:
        marks[name] = round(time.perf_counter() - started, 1)

    loaded = load_model(model)
    mark("model_loaded")

    def on_texts(stage: str, done: int, total: int) -> None:
        if done == total:
            mark(f"texts_{stage}")

    def on_step(acc) -> None:
        mark("first_step")
        raise _FirstStep

    config = RunConfig(model=model, texts=str(path), seeds=1, lengths=(length,),
                       recipe=resolve_recipe("default"))
    with tempfile.TemporaryDirectory() as folder:
        try:
            fitted = fit_run(Path(folder) / "run", config, loaded=loaded, on_texts=on_texts,
                             on_problems=lambda n: mark("problems_ready"), on_step=on_step)
        except _FirstStep:
            fitted = None
        texts = [json.loads(line) for line in Path(folder, "run", "texts.jsonl").open()]
    assert fitted is None, "fitting finished without a step"
    return {"texts": len(texts), "length": length,
            "tokens": sum(len(t["token_ids"]) for t in texts),
            "scored_tokens": sum(len(t["token_nll"] or ()) for t in texts), "seconds": marks}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m protoscope.bench.prepare_texts")
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("write", help="write the .jsonl of distinct short texts")
    w.add_argument("--out", required=True)
    w.add_argument("--count", type=int, default=10_000)
    w.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("measure", help="seconds to the first optimiser step on a .jsonl")
    m.add_argument("path")
    m.add_argument("--length", type=int, default=8, help="fitted length (default 8: every line has at least 8 tokens)")
    m.add_argument("--model", default=DEFAULT_MODEL)
    m.add_argument("--threads", type=int, default=None)
    m.add_argument("--save", default=None, help="also write bench/results/NAME.json")
    args = parser.parse_args(argv)
    if args.what == "write":
        print(write_texts(args.out, args.count, args.seed))
        return
    threads = use_threads(args.threads)
    result = {"command": common.command_line(), "machine": common.machine(), "threads": threads,
              **measure(args.path, args.length, args.model)}
    print(json.dumps(result, indent=2))
    if args.save:
        print(common.write_result(args.save, result))


if __name__ == "__main__":
    main()
