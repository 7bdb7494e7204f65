"""How does a command become a run store full of solutions? Opening, resuming and filling runs.

`fit_run` is the whole sequence every fitting command uses (the CLI's fit and experiment, the
demo, the tests' tiny run, and anything new that fits a run): take the run's lock, prepare the
run, skip what is stored, fit the rest, score the texts' H_LM, mark the run complete. Its parts stay public for
callers that climb a grid instead (capacity): `prepare_run` loads the model, opens (and
checks) or creates the store with its texts (unscored: scoring.py); `fit_into` turns problems into solutions appended
to the store as each group finishes. A run directory that already exists is resumed when its
config matches and refused otherwise, so re-running an interrupted command finishes it without
refitting anything already stored.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import pathlib
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import pandas as pd

from ... import __version__
from ..engine.arrangements import DEFAULT_ARRANGEMENT, parse_arrangement
from ..engine.decoder import Decoder
from ..engine.fitting import SHARES, FittedGroup, Fitter, Problem
from ..engine.recipes import Recipe
from ..engine.subspace import fit_in_subspace, parse_subspaces
from ..errors import ProtoscopeError, StoreError
from ..models import DEFAULT_MODEL
from ..models.loading import LoadedModel, load_model
from ..starts.encoder import encoder_starts, resolve_encoder
from ..starts.frozen import check_frozen_m, load_frozen_m, m_sha256
from ..starts.names import start_of
from ..store.checkpoints import FitCheckpoint
from ..store.runstore import TRAJECTORIES, RunStore, subspace_of
from ..store.scoring import ensure_scored
from ..store.texts import (TABLE_SOURCES, Text, load_texts, parse_text_spec, read_table_texts,
                           read_text_file)


PROTOCOLS = ("all", "first-of-context")
CHECKPOINTS = "checkpoints"  # RUN/checkpoints: the groups in flight (checkpoints.py)


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's results; saved in the manifest and checked on resume."""

    model: str = DEFAULT_MODEL
    texts: str = "builtin"
    seeds: int = 2
    lengths: tuple[int, ...] = (16,)
    arrangement: str = DEFAULT_ARRANGEMENT
    share: str = "none"
    group_size: int = 0  # texts per share group; 0: all texts in one group
    recipe: Recipe = field(default_factory=Recipe)
    text_seed: int = 0
    random_words: int = 400
    generate_tokens: int = 128
    dtype: str = "float32"
    kind: str = "fit"  # fit | capacity
    warm_start: bool = True
    methods: tuple[str, ...] = ("one-step",)
    protocol: str = "all"  # all: `seeds` per text; first-of-context: see protocol_seeds
    m_from: str = ""  # a run or .safetensors file whose m stays frozen (frozen.py); "": fit m
    start: str = ""  # "": the recipe's init; "encoder" or "encoder:PATH": an encoder's prediction
    start_spread: float = 0.05  # encoder starts: seed s > 0 moves by this x the prediction's norm
    trajectory_every: int = 0  # keep each solution's path every this many steps (0: none)
    subspace: str = ""  # "K[,K...][:KIND]": fit [e; m] = x0 + P z in each K-dim subspace (subspace.py)

    def __post_init__(self):
        if self.seeds < 1:
            raise ProtoscopeError(f"--seeds must be at least 1, got {self.seeds}")
        if not self.lengths or min(self.lengths) < 1:
            raise ProtoscopeError(f"lengths must be positive integers, got {list(self.lengths)}")
        if self.share not in SHARES:
            raise ProtoscopeError(f"--share must be one of {', '.join(SHARES)}, got {self.share!r}")
        if self.group_size < 0:
            raise ProtoscopeError(f"--group-size must be >= 0, got {self.group_size}")
        parse_arrangement(self.arrangement)
        if self.start and (self.start.partition(":")[0] != "encoder" or self.start.endswith(":")):
            raise ProtoscopeError(f"--init {self.start!r}: expected normal, embedding, encoder or encoder:PATH")
        if self.start and self.kind != "fit":
            raise ProtoscopeError("--init encoder applies to fit, not to the capacity search")
        if not (math.isfinite(self.start_spread) and self.start_spread >= 0):
            raise ProtoscopeError(f"--init-spread must be a finite number >= 0, got {self.start_spread}")
        if self.subspace:
            parse_subspaces(self.subspace)
            clash = [name for name, on in (("--share", self.share != "none"), ("--m-from", self.m_from),
                                           ("--init encoder", self.start), ("--curriculum", self.recipe.curriculum),
                                           ("--trajectory-every", self.trajectory_every),
                                           ("the capacity search", self.kind != "fit")) if on]
            if clash:
                raise ProtoscopeError(f"--subspace fits each problem alone from the recipe's "
                                      f"start; it does not combine with {clash[0]}")
        if self.trajectory_every < 0:
            raise ProtoscopeError(f"--trajectory-every must be >= 0, got {self.trajectory_every}")
        if self.protocol not in PROTOCOLS:
            raise ProtoscopeError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lengths"], d["methods"] = list(self.lengths), list(self.methods)
        if not d["start"]:  # runs from before encoders had no such field: they still resume
            del d["start"]
        if not d.get("start") or self.start_spread == 0.05:  # nor before the spread was an option
            del d["start_spread"]
        for name in ("trajectory_every", "subspace"):  # nor before these options, at their defaults
            if not d[name]:
                del d[name]
        return d


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    import torch
    import transformers


    return {"protoscope": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def prepare_run(out, config: RunConfig, device: str = "cpu", overwrite: bool = False,
                loaded: LoadedModel | None = None, texts: Sequence[Text] | None = None,
                on_texts: Callable[[str, int, int], None] | None = None,
                ) -> tuple[RunStore, LoadedModel, list[Text]]:
    """Load the model, then resume the store at `out` or create it with freshly loaded texts.

    `texts`, when given, are stored as they are instead of loading `config.texts` (which then
    only labels them); `on_texts(stage, done, total)` reports text preparation (see load_texts).
    """
    store = RunStore(out)
    if texts is None and (overwrite or not (store.path / "manifest.json").exists()):
        check_text_spec(config.texts)
    frozen_m = load_frozen_m(config.m_from) if config.m_from else None  # before a slow model load
    loaded = loaded or load_model(config.model, device=device, dtype=config.dtype)
    if frozen_m is not None:
        check_frozen_m(frozen_m, config.m_from, loaded.info.d_model, loaded.info.name,
                       parse_arrangement(config.arrangement), loaded.info.weights_sha256)
    if (store.path / "manifest.json").exists() and not overwrite:
        store = RunStore.open(out)
        check_same_run(store, config, loaded)
        stored_m = (store.manifest.get("m_from") or {}).get("m_sha256")
        if frozen_m is not None and stored_m and stored_m != m_sha256(frozen_m):
            raise StoreError(f"the m in --m-from {config.m_from} changed since {store.path} began; "
                             f"use another --out or --overwrite")
        return store, loaded, store.texts()
    if overwrite and store.path.exists():
        _clear(store)
    for length in config.lengths:
        n = parse_arrangement(config.arrangement).input_length(length)
        if n > loaded.info.n_ctx:
            raise ProtoscopeError(f"length {length} needs {n} input positions, more than the "
                                  f"context of {loaded.info.name} ({loaded.info.n_ctx})")
    texts = list(texts) if texts is not None else load_text_mix(config, loaded, on_texts)
    check_prefixes(texts, config)
    manifest = {
        "model": {"name": loaded.info.name, "source": loaded.info.source,
                  "weights_sha256": loaded.info.weights_sha256, "family": loaded.info.family,
                  "d_model": loaded.info.d_model, "vocab_size": loaded.info.vocab_size},
        "dtype": config.dtype, "device": str(loaded.device), "config": config.to_dict(),
        "command": sys.argv, "versions": versions(), "created": now(), "updated": now(),
    }
    if frozen_m is not None:
        manifest["m_from"] = {"source": str(pathlib.Path(config.m_from).resolve()),
                              "m_sha256": m_sha256(frozen_m)}
    return RunStore.create(out, manifest, texts), loaded, texts


def load_text_mix(config: RunConfig, loaded: LoadedModel,
                  on_texts: Callable[[str, int, int], None] | None = None) -> list[Text]:
    """Texts of a SPEC, or of several joined by '+' (e.g. `builtin:3+generated:1:2+random:1`);
    `builtin:K` takes the first K built-in paragraphs. They come without their NLL: scoring was
    nearly all of the minutes a 10,000-line file spent before its first optimiser step
    (bench/prepare_texts.py), and fitting never reads it; `scoring.ensure_scored` adds it to
    the stored texts once, after the fit or when a reader of H_LM first needs it."""
    texts: list[Text] = []
    for part in config.texts.split("+"):
        head, _, count = part.strip().partition(":")
        take = None
        if head == "builtin" and count:
            if not count.isdigit() or int(count) < 1:
                raise ProtoscopeError(f"text spec {part!r}: COUNT must be a positive integer")
            part, take = "builtin", int(count)
        texts += load_texts(part, loaded, seed=config.text_seed, random_words=config.random_words,
                            generate_tokens=config.generate_tokens, progress=on_texts,
                            with_nll=False)[:take]
    ids = [t.text_id for t in texts]
    if len(set(ids)) != len(ids):
        raise ProtoscopeError(f"text spec {config.texts!r} names some texts twice")
    return texts


def check_prefixes(texts: Sequence[Text], config: RunConfig) -> None:
    """A fit run needs every text at least as long as its longest length; a text shorter is an
    error naming it (a capacity search just stops climbing such a text)."""
    if config.kind == "fit":
        for t in texts:
            t.prefix(max(config.lengths))


def check_text_spec(spec: str) -> None:
    """A bad spec, or a text file that is missing, empty, not UTF-8 or bad JSONL, fails here,
    before a model load that can take seconds (or minutes, converting the default model)."""
    for part in spec.split("+"):  # the mix grammar of load_text_mix
        if part.strip().partition(":")[0] == "builtin":
            continue  # builtin or builtin:K, whose count load_text_mix checks
        source, params = parse_text_spec(part)
        if source == "file":
            read_text_file(params["path"])
        elif source in TABLE_SOURCES:
            read_table_texts(source, **params)


def check_same_run(store: RunStore, config: RunConfig, loaded: LoadedModel) -> None:
    manifest = store.manifest
    sha = manifest.get("model", {}).get("weights_sha256")
    if sha != loaded.info.weights_sha256:
        raise StoreError(f"{store.path} was written for model {manifest.get('model', {}).get('name')!r} "
                         f"with other weights; use another --out or --overwrite")
    stored = _grid_free(dict(manifest.get("config", {})))
    wanted = _grid_free(config.to_dict())
    if stored != _jsonable(wanted):
        diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != _jsonable(wanted).get(k))
        raise StoreError(f"{store.path} holds a run with another config (differs in: "
                         f"{', '.join(diff)}); use another --out or --overwrite")


def _grid_free(config: dict) -> dict:
    """A config with its subspace grid reduced to the kind: each (text, seed, length, K) is
    stored under its own key (done_keys), so a resumed run may try more K (or fewer)."""
    if config.get("subspace"):
        config["subspace"] = parse_subspaces(config["subspace"])[0].kind
    return config


def _jsonable(d):
    import json

    return json.loads(json.dumps(d, default=str))


def _clear(store: RunStore) -> None:
    for name in ("manifest.json", "texts.jsonl", "solutions.safetensors", "solutions.parquet"):
        (store.path / name).unlink(missing_ok=True)
    for path in (store.path / "analysis").glob("*.parquet") if (store.path / "analysis").exists() else ():
        path.unlink()
    for path in (store.path / CHECKPOINTS).glob("fit-*") if (store.path / CHECKPOINTS).exists() else ():
        path.unlink()
    for path in (store.path / TRAJECTORIES).glob("*.safetensors") if (store.path / TRAJECTORIES).exists() else ():
        path.unlink()


def problems_for(texts: Sequence[Text], config: RunConfig, length: int,
                 done: set | None = None) -> list[Problem]:
    """One problem per (text, seed) at `length`, grouped for sharing; stored ones skipped."""
    size = config.group_size or len(texts)
    seeds_of = (protocol_seeds(texts, config.seeds) if config.protocol == "first-of-context"
                else {t.text_id: config.seeds for t in texts})
    problems = []
    for index, text in enumerate(texts):
        seeds = seeds_of[text.text_id]
        for seed in range(seeds):
            if done and (text.text_id, seed, length) in done:
                continue
            problems.append(Problem(text.text_id, seed, text.prefix(length), group=index // size))
    return problems


def protocol_seeds(texts: Sequence[Text], seeds_for_first: int) -> dict[str, int]:
    """The paper's non-uniqueness protocol: per context, `seeds_for_first` seeds for its first
    text and one for each other text (same-text pairs need several seeds; texts of a context
    need one each to be compared). A text without a context_id is its own context."""
    seen, out = set(), {}
    for t in texts:
        context = ("context", t.context_id) if t.context_id is not None else ("text", t.text_id)
        out[t.text_id] = 1 if context in seen else int(seeds_for_first)
        seen.add(context)
    return out


def method_of(arrangement: str) -> str:
    """The solution rows' `method`: mem for the teacher-forced [mem] baseline, else one-step."""
    return "mem" if parse_arrangement(arrangement).teacher_forced else "one-step"


def done_keys(store: RunStore, arrangement: str, subspace: str = "") -> set:
    """(text_id, seed, length) stored for an arrangement, by ordinary fits or (`subspace`
    K:KIND) by fits in that subspace."""
    rows = store.solutions()
    rows = rows[(rows["arrangement"] == arrangement) & (subspace_of(rows) == subspace)]
    return set(zip(rows["text_id"], rows["seed"].astype(int), rows["length"].astype(int)))


def fit_into(store: RunStore, loaded: LoadedModel, problems: Sequence[Problem], config: RunConfig,
             arrangement: str | None = None, batch_size: int | None = None,
             progress: Callable | None = None, on_step: Callable | None = None,
             on_groups: Callable | None = None,
             checkpoint_every: tuple[int, float] = (50, 60.0)) -> pd.DataFrame:
    """Fit `problems` and append every finished group to the store at once; returns new rows.

    The groups in flight are checkpointed in RUN/checkpoints every `checkpoint_every` (steps,
    seconds), whichever comes first; a later call resumes them from there (checkpoints.py)."""
    arrangement = arrangement or config.arrangement
    method = method_of(arrangement)
    decoder = Decoder(loaded, arrangement)
    new_ids: list[int] = []
    stored = done_keys(store, arrangement)
    # an encoder start is named by the encoder fit_run resolved (the manifest's `start`)
    encoder = ((store.manifest.get("start") or {}).get("encoder") or config.start) if config.start else ""

    def save(group: FittedGroup) -> None:
        keys = {(s.problem.text_id, s.problem.seed, s.problem.length) for s in group.solutions}
        if not keys <= stored:  # a group replayed from a checkpoint may have been stored already
            rows = [solution_row(s, config, arrangement, method, encoder) for s in group.solutions]
            ids = store.append(rows, group.e, group.m)
            new_ids.extend(ids)
            store.write_trajectories({i: s.path for i, s in zip(ids, group.solutions)
                                      if s.path is not None})
        if progress:
            progress(group)

    frozen_m = load_frozen_m(config.m_from) if config.m_from else None
    signature = {"arrangement": arrangement, "share": config.share, "recipe": config.recipe.to_dict(),
                 "m_from": m_sha256(frozen_m) if frozen_m is not None else None}
    steps, seconds = checkpoint_every
    checkpoint = FitCheckpoint(store.path / CHECKPOINTS, signature, every_steps=steps, every_seconds=seconds)
    Fitter(decoder, config.recipe, share=config.share, batch_size=batch_size, on_step=on_step,
           checkpoint=checkpoint, on_groups=on_groups, frozen_m=frozen_m,
           trajectory_every=config.trajectory_every).fit(problems, on_group=save)
    store.update_manifest(updated=now())
    rows = store.solutions()
    return rows[rows["solution_id"].isin(new_ids)]


@dataclass
class FittedRun:
    """What `fit_run` leaves: the store (complete), the model and texts it used, new rows."""

    store: RunStore
    loaded: LoadedModel
    texts: list[Text]
    new_rows: pd.DataFrame


def fit_run(out, config: RunConfig, *, device: str = "cpu", overwrite: bool = False,
            loaded: LoadedModel | None = None, texts: Sequence[Text] | None = None,
            batch_size: int | None = None, lock: bool = True,
            on_texts: Callable[[str, int, int], None] | None = None,
            on_problems: Callable[[int], None] | None = None,
            on_group: Callable[[FittedGroup], None] | None = None,
            on_step: Callable | None = None, on_groups: Callable | None = None,
            checkpoint_every: tuple[int, float] = (50, 60.0)) -> FittedRun:
    """Fit (or resume) every (text, seed, length) of `config` into the run store at `out`.

    The one fit-run sequence: hold the run's lock (`lock=False` when the caller already holds
    it, e.g. to analyse under the same lock), `prepare_run` (load or reuse `loaded`; open and
    check an existing run, or create it from `texts` or `config.texts`), skip the (text, seed,
    length) already stored for `config.arrangement`, fit the rest length by length with
    `fit_into`, score the texts' H_LM (`scoring.ensure_scored`: only now, so the first
    optimiser step never waits for it; a run interrupted before is scored by the next call),
    record the torch thread count used, mark the run complete.

    Progress callbacks, all optional: `on_texts(stage, done, total)` while texts are prepared
    (stage "tokenised"; "scored" after the fit); `on_problems(total)` once, with the number of problems left
    to fit (0 when a finished run is resumed); `on_step(accuracy)` after every optimiser step
    with the per-problem accuracy of the batch; `on_group(group)` as each group is stored;
    `on_groups(progress)` after every step with a `GroupProgress` per group in flight.
    `progress.Progress().callbacks()` supplies all five as a live bar on stderr. The groups in
    flight are checkpointed every `checkpoint_every` (steps, seconds) and resumed (`fit_into`).
    """
    store = RunStore(out)
    with store.lock() if lock else contextlib.nullcontext():
        store, loaded, texts = prepare_run(out, config, device=device, overwrite=overwrite,
                                           loaded=loaded, texts=texts, on_texts=on_texts)
        if config.subspace:
            new = _fit_subspaces(store, loaded, texts, config, batch_size, on_problems,
                                 on_group, on_step)
        else:
            done = done_keys(store, config.arrangement)
            todo = {n: problems_for(texts, config, n, done=done) for n in config.lengths}
            if config.start:
                todo = _encoder_starts(store, loaded, config.start, config.start_spread, todo)
            if on_problems:
                on_problems(sum(len(p) for p in todo.values()))
            new = [fit_into(store, loaded, problems, config, batch_size=batch_size,
                            progress=on_group, on_step=on_step, on_groups=on_groups,
                            checkpoint_every=checkpoint_every)
                   for problems in todo.values() if problems]
        texts = ensure_scored(store, loaded, progress=on_texts)  # H_LM, after the first step
        record_threads(store, config.kind)
        store.update_manifest(status="complete")
    rows = pd.concat(new, ignore_index=True) if new else store.solutions().iloc[:0]
    return FittedRun(store, loaded, texts, rows)


def _fit_subspaces(store: RunStore, loaded: LoadedModel, texts: Sequence[Text], config: RunConfig,
                   batch_size: int | None, on_problems, on_group, on_step) -> list[pd.DataFrame]:
    """Every (length, subspace) of a `--subspace` config not stored yet, each batch appended
    as it finishes (subspace.py: no checkpoints, so an interruption loses one batch)."""
    arrangement = config.arrangement
    method = method_of(arrangement)
    todo = [(n, sub, problems_for(texts, config, n, done=done_keys(store, arrangement, sub.label)))
            for n in config.lengths for sub in parse_subspaces(config.subspace)]
    if on_problems:
        on_problems(sum(len(p) for *_, p in todo))
    decoder, new_ids = Decoder(loaded, arrangement), []
    for length, sub, problems in todo:
        def save(solutions, e, m, sub=sub, length=length) -> None:
            rows = [solution_row(s, config, arrangement, method, subspace=sub.label) for s in solutions]
            new_ids.extend(store.append(rows, e, m))
            if on_group:
                on_group(FittedGroup((length, sub.label), solutions, e, m))
        if problems:
            fit_in_subspace(decoder, config.recipe, problems, sub, batch_size, on_step, save)
    store.update_manifest(updated=now())
    rows = store.solutions()
    return [rows[rows["solution_id"].isin(new_ids)]]


def _encoder_starts(store: RunStore, loaded: LoadedModel, spec: str, spread: float,
                    todo: dict[int, list[Problem]]) -> dict[int, list[Problem]]:
    """Every problem starts from the encoder's prediction (encoder.py); the manifest names it."""

    encoder = resolve_encoder(spec, loaded)
    store.update_manifest(start={"spec": spec, "encoder": str(encoder.path), "kind": encoder.kind,
                                 "tensors_sha256": encoder.meta["tensors_sha256"], "spread": spread})
    return {n: encoder_starts(encoder, loaded, problems, spread) for n, problems in todo.items()}


def use_threads(threads: int | None) -> int:
    """Set torch's CPU thread count (None keeps torch's default) before a model loads;
    returns the count in use. On a shared machine, jobs with default threads each ran up to
    20x slower."""
    import torch

    if threads is not None:
        if threads < 1:
            raise ProtoscopeError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def record_threads(store: RunStore, stage: str) -> None:
    """Keep the torch thread count a stage ran with in the manifest: {"fit": 2, "analyze": 1}."""
    import torch

    threads = dict(store.manifest.get("threads") or {})
    threads[stage] = torch.get_num_threads()
    store.update_manifest(threads=threads)


def solution_row(s, config: RunConfig, arrangement: str, method: str, encoder: str = "",
                 subspace: str = "") -> dict:
    """The solutions.parquet row of a fitted solution; `start` says where its search began
    (starts.py: the recipe's init, `warm`, or `encoder:NAME` when `encoder` names one)."""
    p = s.problem
    return {
        "text_id": p.text_id, "seed": p.seed, "length": p.length, "arrangement": arrangement,
        "share": config.share, "share_group": int(p.group or 0) if config.share != "none" else -1,
        "e_row": s.e_row, "m_row": s.m_row, "accuracy": s.accuracy, "c_tokens": s.c_tokens,
        "loss": s.loss, "steps": s.steps, "restarts": s.restarts, "seconds": s.seconds,
        "converged": s.converged, "status": s.status, "failure": s.failure,
        "init_from": p.init_from, "recipe": config.recipe.name, "method": method,
        "start": start_of(p.init_from, config.recipe.init, encoder), "subspace": subspace,
    }
