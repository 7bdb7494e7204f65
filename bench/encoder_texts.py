"""Which texts does the encoder at scale train on? Made once, written to a .jsonl, so several
trainings (plain, unrolled) share exactly the same texts and a resumed training does not
generate them again.

The texts a spec names (`encoder train --texts` takes the same spec), each as
{"id", "context_id", "text"}: the model's own continuations keep their context, so the
training's held-out split still keeps every text of one context on one side.

    python -m protoscope.bench.encoder_texts --texts generated:10:121+random:800+windows:99 \
        --text-seed 29 --generate-tokens 72 --out runs/enc/texts-2020.jsonl
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from . import common

RANDOM_WORDS = 96  # enough for 64 tokens; the rest of a longer string would never be trained on


def write(spec: str, seed: int, generate_tokens: int, out: pathlib.Path) -> dict:
    """Make the texts of `spec` and write them to `out`; what was written and how long it took."""
    from protoscope.geometry.store.texts import load_texts

    loaded = common.model()
    with common.Clock() as clock:
        texts = [t for part in spec.split("+")
                 for t in load_texts(part, loaded, seed=seed, generate_tokens=generate_tokens,
                                     random_words=RANDOM_WORDS,
                                     with_nll=False)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    tmp.write_text("".join(json.dumps({"id": t.text_id, "context_id": t.context_id,
                                       "text": t.text}) + "\n" for t in texts))
    tmp.replace(out)
    return {"spec": spec, "text_seed": seed, "generate_tokens": generate_tokens,
            "texts": len(texts), "seconds": round(clock.wall, 1), "cpu_seconds": round(clock.cpu, 1),
            "written": str(out), "made": time.strftime("%Y-%m-%d %H:%M:%S")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", required=True, metavar="SPEC")
    ap.add_argument("--text-seed", type=int, default=0)
    ap.add_argument("--generate-tokens", type=int, default=72)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    args = ap.parse_args(argv)
    print(json.dumps(write(args.texts, args.text_seed, args.generate_tokens, args.out)))


if __name__ == "__main__":
    main()
