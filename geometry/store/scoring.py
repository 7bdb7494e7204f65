"""When does a run's H_LM get computed? Once, when first needed, by `ensure_scored`.

A run stores its texts without their per-token NLL (`token_nll: null` in texts.jsonl): fitting
never reads it, and scoring every text under the model was nearly all of the minutes a
10,000-line file waited before its first optimiser step (bench/prepare_texts.py). The scores are
filled in by this one function, called by `fit_run` after the fit and by every reader of H_LM
that has a model (the capacity search, the information and probes analyses); reports never run
a model and read H_LM from the tables those wrote.

Texts are scored up to the longest length the run fits (the manifest's `config.lengths`;
nothing reads H_LM further), in chunks, and texts.jsonl is rewritten atomically after each
chunk, so an interrupted scoring keeps what it scored and the next call goes on from there.
Texts that already carry an NLL are left as they are. The caller holds the run's lock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .runstore import RunStore
from .texts import Text, token_nll

CHUNK = 1000  # texts scored between two rewrites of texts.jsonl


def unscored(texts: list[Text]) -> list[int]:
    """Indices of the texts that have no per-token NLL yet."""
    return [i for i, t in enumerate(texts) if t.token_nll is None]


def score_length(store: RunStore) -> int | None:
    """How many tokens of each text to score: the longest length the run fits (None: all)."""
    lengths = (store.manifest.get("config") or {}).get("lengths") or ()
    return max(int(n) for n in lengths) if lengths else None


def ensure_scored(store: RunStore, loaded,
                  progress: Callable[[str, int, int], None] | None = None,
                  chunk: int = CHUNK) -> list[Text]:
    """The run's texts, every one with its per-token NLL; scores (and stores) those without.

    `progress("scored", done, total)` counts the texts scored in this call, as `token_nll` does.
    """
    texts = store.texts()
    todo = unscored(texts)
    if not todo:
        return texts
    max_tokens = score_length(store)
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]

        def report(stage: str, done: int, total: int, offset: int = start) -> None:
            if progress:
                progress(stage, offset + done, len(todo))

        nlls = token_nll(loaded, [texts[i].token_ids for i in part], progress=report,
                         max_tokens=max_tokens)
        for i, nll in zip(part, nlls):
            texts[i] = dataclasses.replace(texts[i], token_nll=nll)
        store.write_texts(texts)
    return texts
