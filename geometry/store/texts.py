"""Which texts do we fit, as which token ids, and how much information do they hold for the model?

A text SPEC names a source: `builtin` (the paragraphs in builtin_texts.py), `windows:COUNT`
(COUNT non-overlapping windows of WINDOW_WORDS words from inside those paragraphs, past the
part that serves as a context for generated texts), `random:COUNT` (words drawn uniformly from
the 100k most frequent English words), `generated:C:K` (K continuations sampled from the model
for each of C contexts), a path to a `.txt` / `.jsonl` file, or a column of a table where
researchers keep texts: `parquet:FILE[:COLUMN[,ID_COLUMN]]`, `csv:FILE[:COLUMN[,ID_COLUMN]]`
or a local Hugging Face dataset `hf:DIR[:SPLIT[:COLUMN[,ID_COLUMN]]]` (a folder written by
`Dataset.save_to_disk`, or a folder of the dataset's own parquet/csv/json files; nothing is
fetched from a hub). COLUMN defaults to `text`; ids come from ID_COLUMN when named, else
file-000, file-001, ...; a `context_id` column, when there, groups texts by context. A Python
API caller may also give the texts themselves (`records_of`). All of these are source "file":
texts the user brought. `load_texts` turns a spec into `Text` records: token ids plus the per-token negative
log-likelihood under the model run normally, whose sum is the paper's H_LM (nats here;
`bits=True` divides by ln 2).

BOS: `token_ids` never include BOS or any other special token. The proto-tokens replace any
prefix, and an arrangement that wants a real first token (`bos e m*`) adds the model's own BOS
itself. `token_nll` scores the text with the model's text-start token
(`loaded.info.bos_token_id`; for SmolLM2 that is `<|endoftext|>`, see models.py) in front, so
t_1 also gets a conditional probability. A model without one has no unconditional distribution
to ask, so t_1 gets log(vocab_size), the NLL of a uniform guess, and t_2.. are scored from the
text itself. Only the first n_ctx - 1 tokens of a text longer than the model's context are
scored, and a run scores only the longest prefix it fits (`score_tokens`; a run's texts are
stored unscored and scored once by scoring.ensure_scored), so `token_nll` may be shorter than
`token_ids`, or None.

Generated texts: the context is the first 32 tokens of a built-in paragraph (after BOS when
the model has one); the continuation alone is the text. Sampling is plain ancestral sampling at
temperature 1 (`do_sample=True, top_k=0, top_p=1.0`), special tokens suppressed so every
continuation has exactly the requested length, with `torch.manual_seed` per context inside
`torch.random.fork_rng` so a (seed, context) pair always gives the same continuations and the
caller's random state is left alone. Their `token_ids` are the sampled ids, not a re-tokenisation
of the decoded string (the two can differ).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from protoscope.geometry.store.builtin_texts import PARAGRAPHS
from protoscope.geometry.errors import ProtoscopeError

SOURCES = ("builtin", "random", "generated", "file")
SPEC_FORMS = ("builtin, windows:COUNT, random:COUNT, generated:CONTEXTS:PER_CONTEXT, "
              "a path to a .txt or .jsonl file, parquet:FILE[:COLUMN[,ID_COLUMN]], "
              "csv:FILE[:COLUMN[,ID_COLUMN]] or hf:DIR[:SPLIT[:COLUMN[,ID_COLUMN]]]")
TABLE_SOURCES = ("parquet", "csv", "hf")  # a column of a table or a local dataset
TEXT_COLUMN = "text"
CONTEXT_TOKENS = 32
RANDOM_VOCAB = 100_000
# Windows start past the first WINDOW_START words of a paragraph: its opening serves as the
# context of generated texts (CONTEXT_TOKENS tokens, about 25 words) and as the `builtin` text.
WINDOW_WORDS, WINDOW_START = 20, 40
# Full-vocabulary logits dominate memory (B x L x 49152 floats for the default model), so a
# forward batch holds at most this many logit bytes; one text always fits in a batch.
LOGITS_BUDGET_BYTES = 256 * 2**20
TOKENIZE_CHUNK = 1000  # texts per tokenizer call: progress stays live on a file of 10,000


@dataclass(frozen=True)
class Text:
    """One text to fit: where it came from, its token ids and (optionally) per-token NLL."""

    text_id: str
    source: str
    context_id: str | None
    text: str
    token_ids: tuple[int, ...]
    token_nll: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ProtoscopeError(f"text {self.text_id!r}: unknown source {self.source!r}; "
                                  f"allowed: {', '.join(SOURCES)}")
        # Tuples keep the record hashable and equal to itself after a JSON round trip.
        object.__setattr__(self, "token_ids", tuple(int(t) for t in self.token_ids))
        if self.token_nll is not None:
            object.__setattr__(self, "token_nll", tuple(float(x) for x in self.token_nll))

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    def prefix(self, n: int) -> tuple[int, ...]:
        """The first n token ids; a capacity search fits growing prefixes of one text."""
        if n < 1 or n > len(self.token_ids):
            raise ProtoscopeError(f"text {self.text_id!r} has {len(self.token_ids)} tokens; "
                                  f"a prefix of {n} needs 1 <= n <= {len(self.token_ids)}")
        return self.token_ids[:n]

    def h_lm(self, n: int | None = None, bits: bool = False) -> float:
        """H_LM of the first n tokens (all when None): sum of -log P(t_i | t_<i), nats or bits."""
        if self.token_nll is None:
            raise ProtoscopeError(f"text {self.text_id!r} has no token NLL (loaded with "
                                  "with_nll=False, or not scored yet: scoring.ensure_scored)")
        n = len(self.token_nll) if n is None else n
        if n < 1 or n > len(self.token_nll):
            raise ProtoscopeError(f"text {self.text_id!r} has NLL for {len(self.token_nll)} "
                                  f"tokens; H_LM of {n} needs 1 <= n <= {len(self.token_nll)}")
        nats = math.fsum(self.token_nll[:n])
        return nats / math.log(2) if bits else nats

    def to_json(self) -> dict:
        return {"text_id": self.text_id, "source": self.source, "context_id": self.context_id,
                "text": self.text, "token_ids": list(self.token_ids),
                "token_nll": None if self.token_nll is None else list(self.token_nll)}

    @classmethod
    def from_json(cls, d: dict) -> Text:
        missing = [k for k in ("text_id", "source", "text", "token_ids") if k not in d]
        if missing:
            raise ProtoscopeError(f"text record lacks {', '.join(missing)}: {str(d)[:80]}")
        try:
            return cls(d["text_id"], d["source"], d.get("context_id"), d["text"],
                       d["token_ids"], d.get("token_nll"))
        except ProtoscopeError:
            raise
        except (TypeError, ValueError):  # e.g. token_ids that are not a list of numbers
            raise ProtoscopeError(f"text record {d['text_id']!r} is malformed") from None


# ---------------------------------------------------------------- spec


def _positive_int(value: str, what: str, spec: str) -> int:
    if not re.fullmatch(r"\d+", value) or int(value) <= 0:
        raise ProtoscopeError(f"text spec {spec!r}: {what} must be a positive integer, "
                              f"got {value!r}")
    return int(value)


def parse_text_spec(spec: str) -> tuple[str, dict]:
    """Validate a SPEC without a model, so the CLI fails before a slow model load.

    Returns (source, params): ("builtin", {}), ("windows", {"count"}), ("random", {"count"}),
    ("generated", {"contexts", "per_context"}), ("file", {"path"}) or, for a table's column,
    ("parquet" | "csv" | "hf", {"path", "split", "column", "id_column"}).
    """
    spec = spec.strip()
    head, *args = spec.split(":")
    if spec == "builtin":
        return "builtin", {}
    if head in TABLE_SOURCES:
        return head, _table_spec(head, args, spec)
    if head == "windows" and len(args) == 1:
        count, available = _positive_int(args[0], "COUNT", spec), len(window_texts())
        if count > available:
            raise ProtoscopeError(f"text spec {spec!r}: the built-in paragraphs hold {available} "
                                  "windows")
        return "windows", {"count": count}
    if head == "random" and len(args) == 1:
        return "random", {"count": _positive_int(args[0], "COUNT", spec)}
    if head == "generated" and len(args) == 2:
        contexts = _positive_int(args[0], "CONTEXTS", spec)
        if contexts > len(PARAGRAPHS):
            raise ProtoscopeError(f"text spec {spec!r}: at most {len(PARAGRAPHS)} contexts "
                                  "(one per built-in paragraph)")
        return "generated", {"contexts": contexts,
                             "per_context": _positive_int(args[1], "PER_CONTEXT", spec)}
    if Path(spec).suffix.lower() in (".txt", ".jsonl"):
        if not Path(spec).is_file():
            raise ProtoscopeError(f"text file {spec} does not exist or is not a file")
        return "file", {"path": Path(spec)}
    raise ProtoscopeError(f"unknown text spec {spec!r}; use {SPEC_FORMS}")


def _table_spec(kind: str, args: list[str], spec: str) -> dict:
    """parquet:FILE[:COLUMN[,ID_COLUMN]], csv:FILE[:...], hf:DIR[:SPLIT[:COLUMN[,ID_COLUMN]]]."""
    most = 3 if kind == "hf" else 2
    if not args or not args[0] or len(args) > most:
        form = "DIR[:SPLIT[:COLUMN[,ID_COLUMN]]]" if kind == "hf" else "FILE[:COLUMN[,ID_COLUMN]]"
        raise ProtoscopeError(f"text spec {spec!r}: use {kind}:{form}")
    path = Path(args[0])
    split = (args[1] or None) if kind == "hf" and len(args) > 1 else None
    columns = args[2 if kind == "hf" else 1] if len(args) > (2 if kind == "hf" else 1) else ""
    column, _, id_column = columns.partition(",")
    if kind == "hf" and not path.is_dir():
        raise ProtoscopeError(f"dataset folder {path} does not exist or is not a folder")
    if kind != "hf" and not path.is_file():
        raise ProtoscopeError(f"{kind} file {path} does not exist or is not a file")
    return {"path": path, "split": split, "column": column or TEXT_COLUMN,
            "id_column": id_column or None}


# ---------------------------------------------------------------- sources


def builtin_texts() -> list[tuple[str, str]]:
    """(text_id, text) for the paragraphs that ship with protoscope."""
    return [(f"builtin-{slug}", text) for slug, text in PARAGRAPHS]


@functools.lru_cache(maxsize=1)
def window_texts() -> tuple[tuple[str, str], ...]:
    """(text_id, text) of every window, ordered round-robin over paragraphs (window k of each
    paragraph before window k+1 of any), so `windows:COUNT` spreads over all paragraphs."""
    per_paragraph = []
    for slug, paragraph in PARAGRAPHS:
        words = paragraph.split()
        starts = range(WINDOW_START, len(words) - WINDOW_WORDS + 1, WINDOW_WORDS)
        per_paragraph.append([(f"window-{slug}-{k:02d}", " ".join(words[s:s + WINDOW_WORDS]))
                              for k, s in enumerate(starts)])
    depth = max(len(w) for w in per_paragraph)
    return tuple(w[k] for k in range(depth) for w in per_paragraph if k < len(w))


@functools.lru_cache(maxsize=1)
def _frequent_words() -> tuple[str, ...]:
    import wordfreq

    # The list is used as wordfreq ships it (a few entries are contractions or digits), as the
    # paper used GloVe's top 100k as shipped.
    return tuple(wordfreq.top_n_list("en", RANDOM_VOCAB))


def random_texts(count: int, seed: int, n_words: int) -> list[tuple[str, str]]:
    """(text_id, text): n_words words drawn uniformly with replacement, joined by spaces."""
    if count <= 0 or n_words <= 0:
        raise ProtoscopeError(f"random texts need COUNT > 0 and words > 0, "
                              f"got {count} and {n_words}")
    rng = random.Random(seed)
    words = _frequent_words()
    return [(f"random-{i:03d}", " ".join(rng.choices(words, k=n_words))) for i in range(count)]


def tokenize(loaded, text: str) -> tuple[int, ...]:
    """Token ids of text with no BOS and no special tokens (see the module docstring)."""
    return tuple(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])


def _special_ids(loaded) -> list[int]:
    ids = set(loaded.tokenizer.all_special_ids)
    eos = loaded.model.generation_config.eos_token_id
    ids.update([eos] if isinstance(eos, int) else (eos or []))
    return sorted(i for i in ids if i is not None and 0 <= i < loaded.info.vocab_size)


def _with_bos(loaded, ids: Sequence[int]) -> list[int]:
    bos = loaded.info.bos_token_id
    return ([bos] if bos is not None else []) + list(ids)


def generated_texts(loaded, count_contexts: int, per_context: int, seed: int,
                    n_tokens: int) -> list[Text]:
    """per_context continuations of n_tokens for each of the first count_contexts paragraphs."""
    if not 0 < count_contexts <= len(PARAGRAPHS) or per_context <= 0 or n_tokens <= 0:
        raise ProtoscopeError(f"generated texts need 1..{len(PARAGRAPHS)} contexts and "
                              f"positive counts, got {count_contexts}:{per_context}")
    texts = []
    for c, (_, paragraph) in enumerate(PARAGRAPHS[:count_contexts]):
        context = _with_bos(loaded, tokenize(loaded, paragraph)[:CONTEXT_TOKENS])
        for k, ids in enumerate(_sample(loaded, context, per_context, n_tokens, seed, c)):
            texts.append(Text(text_id=f"gen-c{c:02d}-k{k:02d}", source="generated",
                              context_id=f"c{c:02d}", text=loaded.tokenizer.decode(ids),
                              token_ids=ids))
    return texts


def _sample(loaded, context: list[int], count: int, n_tokens: int, seed: int,
            c: int) -> list[tuple[int, ...]]:
    if len(context) + n_tokens > loaded.info.n_ctx:
        raise ProtoscopeError(f"a context of {len(context)} tokens plus {n_tokens} generated "
                              f"exceeds the model's context of {loaded.info.n_ctx} tokens")
    input_ids = torch.tensor([context] * count, device=loaded.device)
    special = _special_ids(loaded)
    device = torch.device(loaded.device)
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        # One seed per (seed, context): generated:3:K repeats the first contexts of :5:K.
        torch.manual_seed(seed * 1_000_003 + c)
        out = loaded.model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
            do_sample=True, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
            num_beams=1, max_new_tokens=n_tokens, suppress_tokens=special,
            pad_token_id=special[0] if special else 0)
    return [tuple(row[len(context):].tolist()) for row in out]


# ---------------------------------------------------------------- NLL


def token_nll(loaded, token_ids, batch: int | None = None, progress=None,
              max_tokens: int | None = None):
    """-log P(t_i | BOS, t_<i) in nats, per token, under the model run normally.

    `token_ids` is one sequence of ids (returns a 1-D float64 array) or a list of sequences
    (returns a list of arrays). Texts are sorted by length and right-padded into batches of at
    most `batch` texts whose logits fit LOGITS_BUDGET_BYTES. Only the first n_ctx - 1 tokens
    of a text longer than the model's context are scored (BOS takes one position).
    `progress("scored", done, total)`, when given, is called after each batch. `max_tokens`
    scores only each text's first tokens (a run that fits prefixes of at most that length needs
    no more for H_LM, and scoring is most of a large file's preparation time).
    """
    if isinstance(token_ids, (torch.Tensor, np.ndarray)):
        token_ids = token_ids.tolist()
    single = len(token_ids) > 0 and isinstance(token_ids[0], (int, np.integer))
    seqs = [list(token_ids)] if single else [list(s) for s in token_ids]
    seqs = [s[:max_tokens] for s in seqs] if max_tokens is not None else seqs
    results: list[np.ndarray | None] = [None] * len(seqs)
    scored = 0
    for group in _batches(loaded, seqs, batch):
        for i, nll in zip(group, _nll_batch(loaded, [seqs[i] for i in group])):
            results[i] = nll
        scored += len(group)
        if progress:
            progress("scored", scored, len(seqs))
    return results[0] if single else results


def _scored_length(loaded, n: int) -> int:
    has_bos = loaded.info.bos_token_id is not None
    return min(n, loaded.info.n_ctx - int(has_bos))


def _batches(loaded, seqs: list[list[int]], batch: int | None) -> list[list[int]]:
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    groups, current = [], []
    for i in order:
        rows = len(current) + 1
        length = _scored_length(loaded, len(seqs[i])) + 1
        too_big = rows * length * loaded.info.vocab_size * 4 > LOGITS_BUDGET_BYTES
        if current and (too_big or (batch is not None and rows > batch)):
            groups.append(current)
            current = []
        current.append(i)
    return groups + ([current] if current else [])


def _nll_batch(loaded, seqs: list[list[int]]) -> list[np.ndarray]:
    has_bos = loaded.info.bos_token_id is not None
    inputs = [_with_bos(loaded, s[:_scored_length(loaded, len(s))]) for s in seqs]
    width = max(len(x) for x in inputs)
    ids = torch.zeros(len(inputs), width, dtype=torch.long)
    mask = torch.zeros(len(inputs), width, dtype=torch.long)
    for r, x in enumerate(inputs):
        ids[r, :len(x)] = torch.tensor(x)
        mask[r, :len(x)] = 1
    with torch.no_grad():
        logits = loaded.model(input_ids=ids.to(loaded.device),
                              attention_mask=mask.to(loaded.device)).logits
        out = []
        for r, x in enumerate(inputs):
            # Position j predicts token j+1; one row at a time bounds the float32 copy.
            target = torch.tensor(x[1:], device=logits.device)
            nll = F.cross_entropy(logits[r, :len(x) - 1].float(), target, reduction="none")
            nll = nll.double().cpu().numpy()
            if not has_bos:
                nll = np.concatenate([[math.log(loaded.info.vocab_size)], nll])
            out.append(nll)
    return out


# ---------------------------------------------------------------- files


def _read_utf8(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProtoscopeError(f"cannot read text file {path}: {exc.strerror}") from None
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProtoscopeError(f"text file {path} is not UTF-8 text "
                              f"(bad byte at offset {exc.start})") from None
    if "\x00" in content:
        raise ProtoscopeError(f"text file {path} looks binary (contains NUL bytes)")
    if not content.strip():
        raise ProtoscopeError(f"text file {path} is empty")
    return content


def _jsonl_record(path: Path, lineno: int, line: str, index: int) -> tuple[str, str | None, str]:
    where = f"{path} line {lineno}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtoscopeError(f"{where} is not JSON: {exc.msg}") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise ProtoscopeError(f"{where} needs an object with a string field 'text'")
    if not record["text"].strip():
        raise ProtoscopeError(f"{where}: the text is empty")
    text_id, context_id = record.get("id", f"file-{index:03d}"), record.get("context_id")
    if not isinstance(text_id, str) or not text_id:
        raise ProtoscopeError(f"{where}: 'id' must be a non-empty string")
    if context_id is not None and not isinstance(context_id, str):
        raise ProtoscopeError(f"{where}: 'context_id' must be a string or null")
    return text_id, context_id, record["text"]


def read_text_file(path) -> list[tuple[str, str | None, str]]:
    """(text_id, context_id, text) from a .txt file (blank-line-separated) or a .jsonl file.

    .txt paragraphs are kept verbatim apart from surrounding whitespace (line breaks inside a
    paragraph are tokens the model sees); they get ids file-000, file-001, ...
    """
    path = Path(path)
    if not path.is_file():
        raise ProtoscopeError(f"text file {path} does not exist or is not a file")
    content = _read_utf8(path)
    if path.suffix.lower() == ".jsonl":
        lines = [(n, line) for n, line in enumerate(content.splitlines(), 1) if line.strip()]
        records = [_jsonl_record(path, n, line, i) for i, (n, line) in enumerate(lines)]
    else:
        paragraphs = [p.strip() for p in re.split(r"\n[ \t\r\f\v]*\n", content) if p.strip()]
        records = [(f"file-{i:03d}", None, p) for i, p in enumerate(paragraphs)]
    _check_unique([r[0] for r in records], f"text file {path}")
    return records


def read_table_texts(kind: str, path, split: str | None = None, column: str = TEXT_COLUMN,
                     id_column: str | None = None) -> list[tuple[str, str | None, str]]:
    """(text_id, context_id, text) from a column of a parquet or csv file or a local dataset."""
    where = f"{kind}:{path}"
    if kind == "parquet":
        frame = _read_frame(lambda: pd.read_parquet(path), where, "is not a parquet file")
    elif kind == "csv":
        frame = _read_frame(lambda: pd.read_csv(path, dtype=str, keep_default_na=False),
                            where, "is not a CSV file")
    else:
        frame, where = _dataset_frame(Path(path), split)
    return records_of(frame, column=column, id_column=id_column, where=where)


def _read_frame(read, where: str, what: str) -> pd.DataFrame:
    try:
        return read()
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = (str(exc).splitlines() or [""])[0].split(". ")[0][:160]
        raise ProtoscopeError(f"{where} {what} ({first})") from None


def _dataset_frame(path: Path, split: str | None) -> tuple[pd.DataFrame, str]:
    """One split of a dataset saved with save_to_disk, or of a folder of its data files."""
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # a local folder; never a hub
    try:
        import datasets
    except ImportError:
        raise ProtoscopeError("hf: texts need the datasets package: pip install "
                              "'protoscope[datasets]'") from None
    saved = (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()
    try:
        data = (datasets.load_from_disk(str(path)) if saved
                else datasets.load_dataset(str(path)))
    except Exception as exc:  # datasets raises many kinds for a folder that is not a dataset
        raise ProtoscopeError(f"hf:{path} is not a local dataset ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    if isinstance(data, datasets.DatasetDict):
        splits = list(data)
        if split is None and len(splits) != 1:
            raise ProtoscopeError(f"hf:{path} holds splits {', '.join(splits)}; name one: "
                                  f"hf:{path}:{splits[0]}")
        split = split or splits[0]
        if split not in data:
            raise ProtoscopeError(f"hf:{path} has no split {split!r}; it holds "
                                  f"{', '.join(splits)}")
        data = data[split]
    elif split is not None and split != str(data.split or split):
        raise ProtoscopeError(f"hf:{path} is one split ({data.split}), not {split!r}")
    return data.to_pandas(), f"hf:{path}" + (f":{split}" if split else "")


def records_of(texts, column: str = TEXT_COLUMN, id_column: str | None = None,
               where: str = "texts") -> list[tuple[str, str | None, str]]:
    """(text_id, context_id, text) from texts a caller holds: a list of strings, a pandas
    Series (ids from its index unless that is the default 0..n-1), a DataFrame or a
    `datasets.Dataset` (its `column`, ids from `id_column`, contexts from `context_id`), or a
    dataset column. Each text must be a non-empty string; ids must be unique."""
    if hasattr(texts, "to_pandas") and hasattr(texts, "column_names"):  # a datasets.Dataset
        texts = texts.to_pandas()
    if isinstance(texts, pd.DataFrame):
        if column not in texts.columns:
            raise ProtoscopeError(f"{where} has no column {column!r}; its columns: "
                                  f"{', '.join(map(str, texts.columns))}")
        if id_column is not None and id_column not in texts.columns:
            raise ProtoscopeError(f"{where} has no id column {id_column!r}")
        ids = texts[id_column] if id_column else None
        contexts = texts["context_id"] if "context_id" in texts.columns else None
        texts = texts[column].reset_index(drop=True)
    elif isinstance(texts, pd.Series):
        default = isinstance(texts.index, pd.RangeIndex) and texts.index.start == 0
        ids, contexts = (None if default else pd.Series(texts.index)), None
        texts = texts.reset_index(drop=True)
    elif isinstance(texts, (str, bytes)) or not hasattr(texts, "__iter__"):
        raise ProtoscopeError(f"{where}: give a text spec, or a list, Series or dataset "
                              f"column of strings, not {type(texts).__name__}")
    else:
        texts, ids, contexts = pd.Series(list(texts), dtype=object), None, None
    if texts.empty:
        raise ProtoscopeError(f"{where} holds no texts")
    records = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ProtoscopeError(f"{where}: text {i} is {'empty' if isinstance(text, str) else type(text).__name__}, "
                                  "not a non-empty string")
        text_id = f"file-{i:03d}" if ids is None else ids.iloc[i]
        if not isinstance(text_id, str):
            text_id = None if text_id is None or text_id != text_id else str(text_id)
        if not text_id:
            raise ProtoscopeError(f"{where}: text {i} has no id")
        context = None if contexts is None else contexts.iloc[i]
        context = None if context is None or context != context or context == "" else str(context)
        records.append((text_id, context, text))
    _check_unique([r[0] for r in records], where)
    return records


def texts_label(records: Sequence[tuple[str, str | None, str]]) -> str:
    """The config's `texts` for texts a caller gave: their count and a digest, so a resume
    with other texts is refused as another config."""
    digest = hashlib.sha256(json.dumps(list(records)).encode()).hexdigest()[:12]
    return f"given:{len(records)}:{digest}"


# ---------------------------------------------------------------- loading


def _check_unique(ids: list[str], where: str) -> None:
    seen = set()
    for text_id in ids:
        if text_id in seen:
            raise ProtoscopeError(f"{where}: duplicate text id {text_id!r}")
        seen.add(text_id)


def to_texts(loaded, records: Sequence[tuple[str, str | None, str]], source: str,
              progress=None) -> list[Text]:
    """Text records from (text_id, context_id, text), tokenised in chunks (one tokenizer call
    per chunk, not per text) with `progress("tokenised", done, total)` after each."""
    for text_id, _, text in records:
        if not text.strip():
            raise ProtoscopeError(f"text {text_id!r} is empty")
    out: list[Text] = []
    for start in range(0, len(records), TOKENIZE_CHUNK):
        chunk = records[start:start + TOKENIZE_CHUNK]
        ids = loaded.tokenizer([t for _, _, t in chunk], add_special_tokens=False)["input_ids"]
        for (text_id, context_id, text), token_ids in zip(chunk, ids):
            if not token_ids:
                raise ProtoscopeError(f"text {text_id!r} has no tokens for this tokenizer")
            out.append(Text(text_id, source, context_id, text, token_ids))
        if progress:
            progress("tokenised", len(out), len(records))
    return out


def load_texts(spec: str, loaded, seed: int = 0, random_words: int = 400,
               generate_tokens: int = 128, with_nll: bool = True, progress=None,
               score_tokens: int | None = None) -> list[Text]:
    """The texts a SPEC names, tokenised for `loaded`, with per-token NLL unless with_nll=False.

    `progress(stage, done, total)`, when given, is called as texts are "tokenised" and "scored";
    `score_tokens` limits the NLL to each text's first tokens (None: the whole text).
    """
    source, params = parse_text_spec(spec)
    if source == "builtin":
        texts = to_texts(loaded, [(i, None, t) for i, t in builtin_texts()], "builtin", progress)
    elif source == "windows":  # built-in prose, so the same source as the paragraphs
        texts = to_texts(loaded, [(i, None, t) for i, t in window_texts()[:params["count"]]],
                          "builtin", progress)
    elif source == "random":
        texts = to_texts(loaded, [(i, None, t) for i, t in
                                   random_texts(params["count"], seed, random_words)], "random", progress)
    elif source == "generated":
        texts = generated_texts(loaded, params["contexts"], params["per_context"], seed,
                                generate_tokens)
    elif source in TABLE_SOURCES:
        texts = to_texts(loaded, read_table_texts(source, **params), "file", progress)
    else:
        texts = to_texts(loaded, read_text_file(params["path"]), "file", progress)
    _check_unique([t.text_id for t in texts], f"text spec {spec!r}")
    if with_nll:
        nlls = token_nll(loaded, [t.token_ids for t in texts], progress=progress,
                         max_tokens=score_tokens)
        texts = [dataclasses.replace(t, token_nll=n) for t, n in zip(texts, nlls)]
    return texts
