"""How long a text can two vectors hold? Capacity search over a grid of prefix lengths.

For every (text, seed) the search fits prefixes of growing length; a length counts as
reconstructed at accuracy >= 0.99 (PAPER.md; the rule and the capacity rule live in
geometry/tables.py), and a (text, seed) stops climbing after two lengths in a row fail. With warm start, length L starts from the vectors found at the previous
length (the same e, and m repeated more times): measured in bench/ to save steps. A text's
capacity is the longest prefix reconstructed by any of its seeds. The [mem] baseline (method
`mem`) climbs the same grid with one trained vector in front of the teacher-forced text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pandas as pd

from ..engine.arrangements import parse_arrangement
from ..engine.fitting import Problem
from ..store.runstore import RunStore
from ..store.scoring import ensure_scored
from ..store.texts import Text
from ..tables import columns, reconstructed
from .fit import RunConfig, done_keys, fit_into

PAPER_GRID = (4, 5, 8, 11, 16, 22, 32, 45, 64, 90, 128, 181, 256, 362, 512, 724, 1024, 1448)


def method_arrangement(method: str, arrangement: str) -> str:
    """The arrangement a method fits: one-step uses the run's; [mem] gets the same BOS prefix,
    so both methods see the same first position (without it, the default model's first
    position acts as an attention sink and [mem] misses t_1: 5 of 6 texts stuck at 3/4 tokens
    at length 4 with 400 steps, against 6/6 with the prefix)."""
    if method == "mem":
        return "bos mem" if parse_arrangement(arrangement).bos else "mem"
    return arrangement


def length_grid(max_length: int) -> list[int]:
    """The paper's powers-of-sqrt(2) grid, extended the same way, up to `max_length`."""
    grid = [n for n in PAPER_GRID if n <= max_length]
    k = math.log2(PAPER_GRID[-1]) * 2
    while (nxt := round(2 ** ((k + 1) / 2))) <= max_length:
        grid.append(nxt)
        k += 1
    return grid


def capacity_search(store: RunStore, loaded, texts: Sequence[Text], config: RunConfig,
                    batch_size: int | None = None, progress: Callable | None = None,
                    on_length: Callable | None = None,
                    on_texts: Callable[[str, int, int], None] | None = None,
                    on_groups: Callable | None = None) -> pd.DataFrame:
    """Climb the length grid for every method; resumes from whatever the store already holds.
    The table's H_LM comes from the texts, scored once the climb ends (`ensure_scored`,
    reporting to `on_texts`). `progress(group)` as each group is stored, `on_groups` with the
    groups in flight after every step (as `fit_run` takes them)."""
    for method in config.methods:
        arrangement = method_arrangement(method, config.arrangement)
        failures = {(t.text_id, s): 0 for t in texts for s in range(config.seeds)}
        for length in config.lengths:
            alive = [(t, s) for t in texts for s in range(config.seeds)
                     if failures[(t.text_id, s)] < 2 and len(t.token_ids) >= length]
            if not alive:
                break
            _fit_length(store, loaded, alive, length, arrangement, config, batch_size, progress,
                        on_groups)
            rows = _rows(store, arrangement, length)
            for t, s in alive:
                acc = rows.get((t.text_id, s), 0.0)
                failures[(t.text_id, s)] = 0 if reconstructed(acc) else failures[(t.text_id, s)] + 1
            if on_length:
                on_length(method, length, rows)
    ensure_scored(store, loaded, progress=on_texts)
    return capacity_table(store)


def _fit_length(store, loaded, alive, length, arrangement, config, batch_size, progress,
                on_groups=None) -> None:

    done = done_keys(store, arrangement)
    previous = _previous_solutions(store, arrangement, length) if config.warm_start else {}
    problems = []
    for index, (text, seed) in enumerate(alive):
        if (text.text_id, seed, length) in done:
            continue
        warm = previous.get((text.text_id, seed))
        problems.append(Problem(
            text.text_id, seed, text.prefix(length), group=0,
            init_e=None if warm is None else warm[1], init_m=None if warm is None else warm[2],
            init_from=-1 if warm is None else warm[0]))
    if problems:
        fit_into(store, loaded, problems, config, arrangement=arrangement,
                 batch_size=batch_size, progress=progress, on_groups=on_groups)


def _previous_solutions(store: RunStore, arrangement: str, length: int) -> dict:
    """(text_id, seed) -> (solution_id, e, m) of the longest stored length below `length`."""
    rows, e, m = store.solution_vectors()
    keep = (rows["arrangement"] == arrangement) & (rows["length"] < length)
    found = {}
    for i in rows.index[keep].tolist():
        r = rows.loc[i]
        key = (r["text_id"], int(r["seed"]))
        if key not in found or found[key][3] < int(r["length"]):
            found[key] = (int(r["solution_id"]), e[i], m[i], int(r["length"]))
    return {k: v[:3] for k, v in found.items()}


def _rows(store: RunStore, arrangement: str, length: int) -> dict:
    rows = store.solutions()
    rows = rows[(rows["arrangement"] == arrangement) & (rows["length"] == length)]
    return {(r.text_id, int(r.seed)): float(r.accuracy) for r in rows.itertuples()}


def capacity_table(store: RunStore) -> pd.DataFrame:
    """One row per stored solution with its prefix's H_LM, as in docs/tables.md `capacity`
    (NaN for a text not scored yet: `capacity_search` scores before it builds the table)."""
    rows = store.solutions()
    texts = {t.text_id: t for t in store.texts()}
    records = []
    for r in rows.itertuples():
        text = texts[r.text_id]
        h = text.h_lm(int(r.length)) if text.token_nll is not None else float("nan")
        records.append({
            "text_id": r.text_id, "source": text.source, "seed": int(r.seed), "method": r.method,
            "arrangement": r.arrangement, "length": int(r.length), "accuracy": float(r.accuracy),
            "c_tokens": int(r.c_tokens), "reconstructed": bool(reconstructed(float(r.accuracy))),
            "h_lm_nats": h, "h_lm_bits": h / math.log(2),
        })
    return pd.DataFrame.from_records(records, columns=columns("capacity"))

