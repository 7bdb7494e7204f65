"""What do the proto-tokens hold, and can anything but the one-step decoding read it?

Four measurements of a run (paper: H_LM and capacity, finding 5, the 279x throughput claim;
Bondarenko et al.: attention to e); what a linear probe reads off the vectors is analysis/probes.py:
- information: H_LM of each text's fitted prefix (nats and bits), its capacity, and the bits
  of H_LM per trained dimension (2d when e and m are both per text, d when one is shared);
- prompting: the proto-tokens fed as an ordinary prompt ([bos] e m) and continued greedily;
  how often the continuation matches the text (the paper says: unrelated text);
- attention: the share of attention that each layer's supervised query positions give to the
  bos, e and m slots, averaged over heads, queries and solutions;
- throughput: tokens per second of one decoder forward pass for a batch of solutions vs
  greedy autoregressive generation of as many tokens (from [mem] solutions when the run has
  them, else from each text's own first token, labelled as a stand-in).
Every forward pass goes through the shared decoder's views (one-step, prompt, attention).
Progress (analysis/progress.py): stages "prompting" and "attention" count solutions, stage
"throughput" the batch sizes timed (never reported from inside a timed call).
"""

from __future__ import annotations

import math
import statistics
import time

import pandas as pd
import torch

from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.store.scoring import ensure_scored
from protoscope.geometry.tables import capacity_of, columns

from .progress import reporter
from protoscope.options import takes

from .registry import options_of

VERSION = 1  # of this analysis's numbers: bump it when a change alters them (analysis/run.py)


@takes(options_of("information"), "information")
def analyze(store, loaded, progress=None, *, batch: int, throughput_batches: tuple[int, ...],
            repeats: int) -> dict[str, pd.DataFrame]:
    """The information, prompting, attention and throughput tables of a run.

    `batch` bounds how many solutions go through the model at once; throughput is timed at
    each size in `throughput_batches` (1: latency, where generation pays N sequential steps;
    larger: a batch that amortises them), `repeats` times after a warm-up. `progress` hears
    how far it is (analysis/progress.py); it is not an option.
    """
    if batch < 1 or repeats < 1 or min(throughput_batches, default=0) < 1:
        raise ValueError("need batch >= 1, repeats >= 1 and throughput batch sizes >= 1")
    rows, e, m = store.solution_vectors()
    texts = {t.text_id: t for t in ensure_scored(store, loaded)}
    one_step = (rows["method"] == "one-step").to_numpy()
    solutions = _Solutions(rows[one_step].reset_index(drop=True), e[one_step], m[one_step], texts)
    mem = _Solutions(rows[~one_step].reset_index(drop=True), e[~one_step], m[~one_step], texts)
    return {
        "information": information(loaded, rows, texts, store.analysis("capacity")),
        "prompting": prompting(loaded, solutions, batch, progress),
        "attention": attention(loaded, solutions, batch, progress),
        "throughput": throughput(loaded, solutions, mem, throughput_batches, repeats, progress),
    }


class _Solutions:
    """Rows of one kind of solution with their vectors and target ids."""

    def __init__(self, rows: pd.DataFrame, e: torch.Tensor, m: torch.Tensor, texts: dict):
        self.rows, self.e, self.m, self.texts = rows, e, m, texts

    def __len__(self) -> int:
        return len(self.rows)

    def batches(self, batch: int, first_only: bool = False):
        """(rows, e, m, targets [B, N], arrangement) per chunk of one length and arrangement
        (only the first chunk of each with `first_only`)."""
        for (arrangement, n), group in self.rows.groupby(["arrangement", "length"], sort=True):
            for start in range(0, batch if first_only else len(group), batch):
                chunk = group.iloc[start:start + batch]
                index = torch.tensor(chunk.index.to_numpy())
                ids = [self.texts[t].token_ids[: int(n)] for t in chunk["text_id"]]
                yield chunk, self.e[index], self.m[index], torch.tensor(ids), arrangement


# -- H_LM and capacity ------------------------------------------------------------------------
def information(loaded, rows: pd.DataFrame, texts: dict,
                capacity: pd.DataFrame | None) -> pd.DataFrame:
    """Per text: H_LM of the longest fitted prefix, capacity, best C_tokens there, bits per dim."""
    fitted = rows[rows["method"] == "one-step"]
    reached = _capacities(fitted, capacity)
    out = []
    for text_id, group in fitted.groupby("text_id", sort=True):
        text, n = texts[text_id], int(group["length"].max())
        nats = text.h_lm(n)  # scored by ensure_scored up to the run's longest length
        # A shared vector carries no per-text information, so only per-text dimensions count.
        per_text = 1 if set(group["share"]) & {"m", "e"} else 2
        dims = per_text * loaded.info.d_model
        out.append({"text_id": text_id, "source": text.source, "length": n, "h_lm_nats": nats,
                    "h_lm_bits": nats / math.log(2), "capacity": int(reached.get(text_id, 0)),
                    "c_tokens": int(group.loc[group["length"] == n, "c_tokens"].max()),
                    "bits_per_dimension": nats / math.log(2) / dims, "per_text_dimensions": dims})
    return pd.DataFrame(out, columns=columns("information"))


def _capacities(fitted: pd.DataFrame, capacity: pd.DataFrame | None) -> dict[str, int]:
    """Longest reconstructed length per text: the capacity table if any, else the solutions."""
    table = capacity if capacity is not None and len(capacity) else fitted
    table = table[table["method"] == "one-step"]
    return capacity_of(table, ["text_id"]).set_index("text_id")["capacity"].to_dict()


# -- proto-tokens as an ordinary prompt -------------------------------------------------------
def prompting(loaded, solutions: _Solutions, batch: int, progress=None) -> pd.DataFrame:
    """Greedy continuation of the prompt [bos] e m and how much of the text it reproduces.

    The prompt's last position is also a position of the one-step input, so by causality its
    output is the token the one-step decoding puts there (t_2 under `bos e m*`); the
    continuation is aligned with the text from that token on. `token_overlap` counts every
    generated token, `overlap_beyond_first` only those after it: what autoregressive reading
    adds beyond the one position it shares with the one-step decoding. The continuation is
    exactly n tokens (end-of-sequence is never chosen: the decoder's prompt view).
    """
    out, report, done = [], reporter(progress), 0
    report("prompting", 0, len(solutions))
    for chunk, e, m, targets, arrangement in solutions.batches(batch):
        done += len(chunk)
        decoder = Decoder(loaded, arrangement)
        bos = decoder.arrangement.bos
        _, first = decoder.arrangement.layout(targets.shape[1])
        offset = max(0, (2 + int(bos)) - 1 - first)  # target index the prompt's last output meets
        n = targets.shape[1] - offset
        if n < 1:
            report("prompting", done, len(solutions))
            continue
        generated = decoder.greedy(decoder.prompt(e, m), n).cpu()
        same = (generated == targets[:, offset:]).float()
        for k, (sid, tid) in enumerate(zip(chunk["solution_id"], chunk["text_id"])):
            out.append({"solution_id": int(sid), "text_id": tid,
                        "continuation": loaded.tokenizer.decode(generated[k].tolist()),
                        "token_overlap": float(same[k].mean()),
                        "first_token_match": bool(same[k, 0]),
                        "overlap_beyond_first": float(same[k, 1:].mean()) if n > 1 else math.nan,
                        "aligned_from": offset, "prompt": "bos e m" if bos else "e m"})
        report("prompting", done, len(solutions))
    return pd.DataFrame(out, columns=columns("prompting"))


# -- attention ------------------------------------------------------------------------------
def attention(loaded, solutions: _Solutions, batch: int, progress=None) -> pd.DataFrame:
    """Mean attention share per layer that supervised query positions give to each slot."""
    sums: dict[tuple[int, str], float] = {}
    count, report = 0, reporter(progress)
    report("attention", 0, len(solutions))
    for _, e, m, targets, arrangement in solutions.batches(batch):
        masses = Decoder(loaded, arrangement).attention(e, m, targets).mass()
        for name, mass in masses.items():  # [layers, B]
            for layer, per_solution in enumerate(mass):
                sums[layer, name] = sums.get((layer, name), 0.0) + float(per_solution.sum())
        count += len(e)
        report("attention", count, len(solutions))
    out = [{"layer": layer, "slot": name, "attention_mass": total / count}
           for (layer, name), total in sorted(sums.items())]
    return pd.DataFrame(out, columns=columns("attention"))


# -- throughput -----------------------------------------------------------------------------
def _timed(run, repeats: int) -> tuple[float, object]:
    """Median wall time of `run` after one warm-up call, and its last result."""
    result = run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def throughput(loaded, solutions: _Solutions, mem: _Solutions, batches: tuple[int, ...],
               repeats: int, progress=None) -> pd.DataFrame:
    """Tokens reconstructed per second: one decoder pass vs greedy autoregressive decoding,
    on the first solutions of each length at each batch size."""
    out, report = [], reporter(progress)
    report("throughput", 0, len(batches))
    for done, size in enumerate(batches, 1):
        out += _throughput_at(loaded, solutions, mem, size, repeats)
        report("throughput", done, len(batches), batch=size)
    return pd.DataFrame(out, columns=columns("throughput"))


def _throughput_at(loaded, solutions: _Solutions, mem: _Solutions, size: int,
                   repeats: int) -> list[dict]:
    out, dev = [], loaded.device
    for _, e, m, targets, arrangement in solutions.batches(size, first_only=True):
        decoder = Decoder(loaded, arrangement)
        e, m, on_device = e.to(dev), m.to(dev), targets.to(dev)
        seconds, decoded = _timed(lambda: decoder(e, m, on_device), repeats)
        out.append(_rate("one-step", targets, seconds, decoded.predicted.cpu(), None))
        if not len(mem):  # no [mem] solutions: time generation from the text's first token
            prompt = decoder.prompt(loaded.embed(on_device[:, 0]))
            n = targets.shape[1]
            seconds, _ = _timed(lambda: decoder.greedy(prompt, n), repeats)
            # Generated from t_1, these tokens stand for t_2.. t_{N+1}; only the speed counts.
            out.append(_rate("autoregressive", targets, seconds, None, "first token of the text"))
    for _, e, _, targets, arrangement in mem.batches(size, first_only=True):
        decoder = Decoder(loaded, arrangement)
        prompt = decoder.prompt(e)  # the [mem] vector predicts t_1
        n = targets.shape[1]
        seconds, generated = _timed(lambda: decoder.greedy(prompt, n), repeats)
        out.append(_rate("mem", targets, seconds, generated.cpu(), None))
    return out


def _rate(method: str, targets: torch.Tensor, seconds: float, predicted, stand_in) -> dict:
    tokens = targets.numel()
    accuracy = float((predicted == targets).float().mean()) if predicted is not None else math.nan
    return {"method": method, "length": int(targets.shape[1]), "batch": int(targets.shape[0]),
            "tokens": int(tokens), "seconds": seconds, "tokens_per_second": tokens / seconds,
            "accuracy": accuracy, "stand_in": stand_in}
