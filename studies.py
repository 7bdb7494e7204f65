"""Which of the paper's protocols did a run follow? The studies: `protoscope study NAME`.

Each study is one command that fits what its protocol needs (resuming like `fit`: an
interrupted study run again refits nothing already stored), runs its analyses, writes its
report, and records its protocol in the manifest:

    manifest["protocol"] = {"name", "settings", "paper", "differs"}

`settings` are this run's, `paper` the paper's for the same protocol (PAPER.md; None where the
paper does not say), and `differs` one sentence per setting where the two part (model, budget,
sizes), so a report can say how far its answer is from the paper's question.

- connectivity (findings 3 and 4): a few texts x several seeds, m shared by each text's seeds
  (share m, group size 1) and e per solution, straight and Bezier paths between pairs of a
  text's solutions moving e only.
- uniqueness (findings 1 and 2): C contexts x K generated continuations, one m shared by every
  text and seed, the paper's seed protocol (several seeds for the first continuation of each
  context, one for the others).
- probes: at least 200 texts (the model's own continuations of several contexts, random words,
  windows of the built-in prose) with m shared by groups of a few texts, drawn at random so a
  group says nothing about a text's source or context; linear probes of e (analysis/probes.py).
- capacity: the capacity search (geometry/capacity.py) with m shared or not.

A share group stops under the recipe's share policy (geometry/fitting.py, "Share groups"):
recorded in `settings` as `share_policy` and `group_patience`.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .analysis.bootstrap import MIN_UNITS
from .analysis.run import record_capacity, run_analyses
from .geometry.errors import ProtoscopeError
from .geometry.models import DEFAULT_MODEL, LoadedModel, load_model
from .geometry.recipes import resolve_recipe
from .geometry.runs import RunConfig, fit_run, load_text_mix, now, record_threads
from .geometry.store import RunStore

STUDIES = ("connectivity", "uniqueness", "probes", "capacity")
RECONSTRUCTED = 0.99
PAPER_MODELS = "Pythia-160M/410M/1.4B, Llama-3.2-1B/3B, Llama-3.1-8B (GPU)"
PAPER_RECIPE = "AdamW lr 0.01, N(0,1) init, up to 5000 steps"
PROBE_TEXTS = "generated:4:10+windows:20+random:20"  # 80 texts: sized for a 2-core CPU
CAPACITY_TEXTS, CAPACITY_LENGTHS = "builtin:5", (4, 8, 16, 32)

# Each study's fit budget where `--max-steps` / `--group-patience` are not given: sized so its
# default finishes on a 2-core CPU (README: measured times); a share group still short at the
# budget keeps its exact members, and its texts without a pair are left out of the paths.
STUDY_FIT = {"connectivity": {"max_steps": 500, "group_patience": 150},
             "probes": {"max_steps": 300, "group_patience": 150},
             "capacity": {"max_steps": 500}}

# What each setting is called in a sentence of `differs`.
LABELS = {
    "model": "model", "arrangement": "arrangement", "recipe": "fitting recipe",
    "texts": "texts", "contexts": "contexts", "per_context": "continuations per context",
    "seeds": "solutions per text", "length": "tokens per text", "lengths": "length grid",
    "share": "sharing", "pairs": "same-text pairs per text", "bezier_steps": "curve budget",
    "grid": "grid points along a path", "solutions": "solutions probed",
}

PAPER = {
    "connectivity": {
        "model": PAPER_MODELS, "arrangement": "e m*", "recipe": PAPER_RECIPE, "texts": 5,
        "seeds": 10, "share": "m shared by a text's seeds, e per solution", "pairs": 45,
        "bezier_steps": None, "grid": 61, "length": None,
    },
    "uniqueness": {
        "model": PAPER_MODELS, "arrangement": "e m*", "recipe": PAPER_RECIPE, "contexts": 50,
        "per_context": 10, "seeds": 10, "share": "one m shared by every text and seed",
        "length": None,
    },
    "probes": {  # the paper probes nothing; Bondarenko et al. probe per-text e and m
        "model": "Llama-3.2-1B (Bondarenko et al.)", "arrangement": "e m*",
        "recipe": PAPER_RECIPE, "share": "e and m per text", "solutions": None, "length": None,
    },
    "demo": {  # the paper's main protocol, on a few texts
        "model": PAPER_MODELS, "arrangement": "e m*", "recipe": PAPER_RECIPE,
        "share": "one m shared by every text and seed", "seeds": 10, "pairs": 45,
        "bezier_steps": None, "length": None,
    },
    "capacity": {
        "model": PAPER_MODELS, "arrangement": "e m*", "recipe": PAPER_RECIPE,
        "seeds": None, "lengths": "4, 5, 8, ... 1448 (powers of sqrt 2)",
    },
}


@dataclass(frozen=True)
class Common:
    """What every study shares: where, which model, how hard to fit, how loud."""

    out: str
    model: str = DEFAULT_MODEL
    device: str = "cpu"
    dtype: str = "float32"
    max_steps: int | None = None
    group_patience: int | None = None
    batch_size: int | None = None
    text_seed: int = 0
    generate_tokens: int = 48
    overwrite: bool = False
    quiet: bool = False
    loaded: LoadedModel | None = field(default=None, compare=False, repr=False)


@dataclass
class StudyResult:
    """A finished study: its store, the tables it prints, its report, seconds per stage."""

    store: RunStore
    summary: pd.DataFrame
    report: Path
    seconds: dict


# -- the four studies -----------------------------------------------------------------------
def connectivity(common: Common, *, texts: str = "windows:8", length: int = 12, seeds: int = 2,
                 pairs: int | None = None, bezier_steps: int | None = None,
                 samples_per_step: int | None = None, grid: int = 21,
                 cross_text_pairs: int = 2) -> StudyResult:
    """The paper's connectivity protocol at CPU sizes (all sizes are options). The curve
    budget and recipe are `analyze`'s defaults unless given (analysis/connectivity.py)."""
    bezier_steps = _default("connectivity", "bezier_steps") if bezier_steps is None else bezier_steps
    samples_per_step = (_default("connectivity", "samples_per_step") if samples_per_step is None
                        else samples_per_step)
    _positive(length=length, seeds=seeds, bezier_steps=bezier_steps, grid=grid,
              samples_per_step=samples_per_step)
    if pairs is not None and pairs < 1:
        raise ProtoscopeError(f"--pairs must be at least 1 (or omitted for all), got {pairs}")
    if seeds < 2:
        raise ProtoscopeError(f"--seeds must be at least 2: a path joins two solutions of a text, got {seeds}")
    notes = [too_few("study connectivity", _count(texts), "texts with pairs")]
    config = _config(common, texts=texts, seeds=seeds, length=length, share="m", group_size=1,
                     study="connectivity")
    options = {"connectivity": {"max_pairs": pairs, "bezier_steps": bezier_steps,
                                "samples_per_step": samples_per_step, "grid": grid,
                                "cross_text_pairs": cross_text_pairs}}
    settings = {**fit_settings(config), "texts": _count(texts), "text_spec": texts,
                "seeds": seeds, "length": length, "share": "m shared by a text's seeds, e per solution",
                "pairs": "all" if pairs is None else pairs, "bezier_steps": bezier_steps,
                "samples_per_step": samples_per_step, "grid": grid,
                "cross_text_pairs": cross_text_pairs,
                "curve_stops": "when every grid point reconstructs the text (checked every "
                               f"{_default('connectivity', 'check_every')} steps) or at the budget",
                "curve_lr": _default("connectivity", "lr")}
    settings["curve_recipe"] = (f"control lr {settings['curve_lr']}, {samples_per_step} t a step, "
                                f"t {_default('connectivity', 't_sampling')}, coarse check on "
                                f"{_default('connectivity', 'check_grid')} points")
    return _study(common, "connectivity", config, settings, ["connectivity"], options,
                  connectivity_summary, notes=notes)


def uniqueness(common: Common, *, contexts: int = 10, per_context: int = 2, seeds: int = 3,
               length: int = 8) -> StudyResult:
    """The paper's non-uniqueness protocol: C contexts x K continuations, one shared m."""
    _positive(contexts=contexts, per_context=per_context, seeds=seeds, length=length)
    texts = f"generated:{contexts}:{per_context}"
    notes = [too_few("study uniqueness", contexts if seeds > 1 else 0,
                     "texts with several seeds (one per context)"),
             too_few("study uniqueness", contexts if per_context > 1 else 0,
                     "contexts with several continuations")]
    config = _config(common, texts=texts, seeds=seeds, length=length, share="m", group_size=0,
                     protocol="first-of-context")
    settings = {**fit_settings(config), "contexts": contexts, "per_context": per_context,
                "seeds": seeds, "length": length, "share": "one m shared by every text and seed",
                "seed_protocol": f"{seeds} seeds for the first continuation of each context, "
                                 "one for the others"}
    return _study(common, "uniqueness", config, settings, ["uniqueness"], {},
                  uniqueness_summary, notes=notes)


def probes(common: Common, *, texts: str = PROBE_TEXTS, length: int = 8, seeds: int = 1,
           group_size: int = 4) -> StudyResult:
    """Fit many texts with m shared by random groups of `group_size`, then probe e."""
    _positive(length=length, seeds=seeds, group_size=group_size)
    notes = [too_few("study probes", _count(texts), "texts")]
    config = _config(common, texts=texts, seeds=seeds, length=length, share="m",
                     group_size=group_size, study="probes")
    settings = {**fit_settings(config), "text_spec": texts, "texts": _count(texts),
                "seeds": seeds, "length": length,
                "share": f"m shared by random groups of {group_size} texts, e per solution",
                "solutions": f"{_count(texts) * seeds} fitted; those reconstructed are probed",
                "probe": f"linear, {_default('probes', 'folds')} folds holding out whole texts, "
                         f"{_default('probes', 'permutations')} label permutations, 95% interval "
                         "by bootstrap over texts"}
    return _study(common, "probes", config, settings, ["probes"], {},
                  lambda store: _table(store, "probes"), shuffle=True, notes=notes)


def capacity(common: Common, *, texts: str = CAPACITY_TEXTS,
             lengths: tuple[int, ...] = CAPACITY_LENGTHS, seeds: int = 1,
             share: str = "none", method: str = "one-step", warm_start: bool = True) -> StudyResult:
    """The capacity search with m shared (by every text and seed) or not."""
    from .geometry.capacity import capacity_per_text, capacity_search

    _positive(seeds=seeds)
    if share not in ("none", "m"):
        raise ProtoscopeError(f"--share must be none or m, got {share!r}")
    methods = {"one-step": ("one-step",), "mem": ("mem",), "both": ("one-step", "mem")}.get(method)
    if methods is None:
        raise ProtoscopeError(f"--method must be one-step, mem or both, got {method!r}")
    if not lengths or min(lengths) < 1 or list(lengths) != sorted(set(lengths)):
        raise ProtoscopeError(f"--lengths must be increasing positive integers, got {list(lengths)}")
    notes = [too_few("study capacity", _count(texts), "texts")]
    config = _config(common, texts=texts, seeds=seeds, lengths=tuple(lengths), share=share,
                     group_size=0, study="capacity", kind="capacity", methods=methods, warm_start=warm_start)
    settings = {**fit_settings(config), "text_spec": texts, "seeds": seeds,
                "lengths": ", ".join(map(str, lengths)),
                "share": "m shared by every text and seed" if share == "m" else "none",
                "method": method, "warm_start": warm_start}
    paper = {**PAPER["capacity"], "share": "m shared" if share == "m" else "none"}
    started, seconds = time.perf_counter(), {}
    with RunStore(common.out).lock():
        from .geometry.runs import prepare_run

        say_notes(notes)
        store, loaded, text_list = prepare_run(common.out, config, device=common.device,
                                               overwrite=common.overwrite, loaded=common.loaded)
        _say(common, f"capacity search over {list(lengths)} into {common.out}")
        table = capacity_search(store, loaded, text_list, config, batch_size=common.batch_size)
        record_capacity(store, table)
        seconds["fit"] = time.perf_counter() - started
        report = _finish(store, "capacity", settings, paper, seconds, started)
    return StudyResult(store, capacity_per_text(table), report, seconds)


def run(name: str, common: Common, **sizes) -> StudyResult:
    """The study `name` (one of STUDIES) with its sizes as keywords."""
    studies = {"connectivity": connectivity, "uniqueness": uniqueness, "probes": probes,
               "capacity": capacity}
    if name not in studies:
        raise ProtoscopeError(f"unknown study {name!r}: allowed are {', '.join(STUDIES)}")
    return studies[name](common, **sizes)


# -- shared plumbing --------------------------------------------------------------------------
def _study(common: Common, name: str, config: RunConfig, settings: dict, analyses: list[str],
           options: dict, summarize, shuffle: bool = False, notes=()) -> StudyResult:
    """Fit (or resume), analyse, record the protocol, write the report."""
    from .progress import Progress

    started, seconds = time.perf_counter(), {}
    with RunStore(common.out).lock():
        say_notes(notes)
        loaded = common.loaded or load_model(config.model, device=common.device, dtype=config.dtype)
        texts = _shuffled_texts(common, config, loaded) if shuffle else None
        _say(common, f"[1/3] {name}: fitting {config.texts} x {config.seeds} seeds at "
                     f"{config.lengths[0]} tokens into {common.out}")
        bar = Progress(quiet=common.quiet)
        try:
            fitted = fit_run(common.out, config, device=common.device, overwrite=common.overwrite,
                             loaded=loaded, texts=texts, batch_size=common.batch_size, lock=False,
                             **bar.callbacks())
        finally:
            bar.close()
        seconds["fit"] = time.perf_counter() - started
        _say(common, f"[2/3] {name}: analyses {', '.join(analyses)}")
        for key, value in run_analyses(fitted.store, only=analyses, loaded=loaded,
                                       quiet=common.quiet, options=options).items():
            seconds[f"analysis:{key}"] = value
        record_threads(fitted.store, "analyze")
        _say(common, f"[3/3] {name}: report")
        report = _finish(fitted.store, name, settings, PAPER[name], seconds, started)
    return StudyResult(fitted.store, summarize(fitted.store), report, seconds)


def _shuffled_texts(common: Common, config: RunConfig, loaded):
    """The spec's texts in a seeded random order, so share groups (consecutive texts) mix
    sources and contexts; None when the run exists (its stored order is kept)."""
    if (Path(common.out) / "manifest.json").exists() and not common.overwrite:
        return None
    texts = load_text_mix(config, loaded)
    random.Random(common.text_seed).shuffle(texts)
    return texts


def record_protocol(store: RunStore, name: str, settings: dict, paper: dict) -> dict:
    """manifest["protocol"]: the study's name, this run's settings, the paper's, and one
    sentence per difference."""
    protocol = {"name": name, "settings": settings, "paper": paper,
                "differs": differences(settings, paper)}
    store.update_manifest(protocol=protocol, updated=now())
    return protocol


def _finish(store: RunStore, name: str, settings: dict, paper: dict, seconds: dict,
            started: float) -> Path:
    from .reports.report import build_report

    record_protocol(store, name, settings, paper)
    report = build_report(store.path)
    seconds["total"] = time.perf_counter() - started
    store.update_manifest(study_seconds={k: None if v is None else round(v, 1)
                                         for k, v in seconds.items()})
    return report


def differences(settings: dict, paper: dict) -> list[str]:
    """One sentence per setting the paper states (or leaves unstated) that this run sets
    differently."""
    out = []
    for key, theirs in paper.items():
        ours = settings.get(key)
        label = LABELS.get(key, key.replace("_", " "))
        if theirs is None:
            out.append(f"{label}: {ours} here; the paper does not state it.")
        elif str(ours) != str(theirs):
            out.append(f"{label}: {ours} here, {theirs} in the paper.")
    return out


def _config(common: Common, *, texts: str, seeds: int, length: int | None = None,
            lengths: tuple[int, ...] | None = None, share: str, group_size: int,
            study: str = "", **fields) -> RunConfig:
    overrides = {**STUDY_FIT.get(study, {}),
                 **{k: v for k, v in (("max_steps", common.max_steps),
                                      ("group_patience", common.group_patience)) if v is not None}}
    return RunConfig(model=common.model, texts=texts, seeds=seeds,
                     lengths=lengths or (length,), share=share, group_size=group_size,
                     recipe=resolve_recipe("default", **overrides), text_seed=common.text_seed,
                     generate_tokens=common.generate_tokens, dtype=common.dtype, **fields)


def fit_settings(config: RunConfig) -> dict:
    r = config.recipe
    recipe = (f"{r.name}: {r.optimizer} lr {r.lr}, {r.init} init, up to {r.max_steps} steps, "
              f"restart after {r.patience} without gain")
    return {"model": config.model, "arrangement": config.arrangement, "recipe": recipe,
            "share_policy": getattr(r, "share_policy", None),
            "group_patience": getattr(r, "group_patience", None), "text_seed": config.text_seed}


def _count(spec: str) -> int:
    """How many texts a spec names, without loading them (a file counts as its paragraphs)."""
    from .geometry.texts import parse_text_spec, read_text_file

    total = 0
    for part in spec.split("+"):
        head, _, count = part.strip().partition(":")
        if head == "builtin":
            from .geometry.builtin_texts import PARAGRAPHS

            total += int(count) if count.isdigit() else len(PARAGRAPHS)
            continue
        source, params = parse_text_spec(part)
        if source in ("random", "windows"):
            total += params["count"]
        elif source == "generated":
            total += params["contexts"] * params["per_context"]
        else:
            total += len(read_text_file(params["path"]))
    return total


def _default(analysis: str, option: str):
    """An analysis's default budget, as recorded beside the study's own settings."""
    import importlib
    import inspect

    module = importlib.import_module(f"{__package__}.analysis.{analysis}")
    return inspect.signature(module.analyze).parameters[option].default


def _positive(**values) -> None:
    for key, value in values.items():
        if value is None or value < 1:
            raise ProtoscopeError(f"--{key.replace('_', '-')} must be at least 1, got {value}")


def too_few(what: str, units: int, unit: str) -> str | None:
    """The line saying, before anything is fitted, that the findings will have no interval:
    they resample texts and need at least MIN_UNITS of them (analysis/bootstrap.py); None when
    there are enough. `say_notes` prints it once the run folder is known to be usable."""
    if units >= MIN_UNITS:
        return None
    return (f"{what}: {units} {unit}; the findings need at least {MIN_UNITS} for an interval, "
            f"so they will be inconclusive at this n (fitting anyway)")


def say_notes(notes) -> None:
    """Print the too-few lines, even under --quiet: they change what the run can answer."""
    for note in filter(None, notes):
        print(note, file=sys.stderr, flush=True)


def _say(common: Common, message: str) -> None:
    if not common.quiet:
        print(message, file=sys.stderr, flush=True)


def _table(store: RunStore, name: str) -> pd.DataFrame:
    table = store.analysis(name)
    return table if table is not None else pd.DataFrame()


def connectivity_summary(store: RunStore) -> pd.DataFrame:
    """Per path kind over same-text pairs: how many held the text at every grid point, and the
    medians of the worst accuracy, barrier and length ratio."""
    pairs = store.analysis("connectivity_pairs")
    if pairs is None or pairs.empty:
        return pd.DataFrame()
    same = pairs[pairs["same_text"].astype(bool)]
    held = (same["held"].astype(bool) if "held" in same.columns
            else same["min_accuracy"] >= RECONSTRUCTED)
    out = same.assign(held=held).groupby("path", sort=False).agg(
        pairs=("pair_id", "size"), held=("held", "sum"), min_accuracy=("min_accuracy", "median"),
        barrier=("barrier", "median"), length_ratio=("length_ratio", "median")).reset_index()
    out["held_share"] = out["held"] / out["pairs"]
    return out


def uniqueness_summary(store: RunStore) -> pd.DataFrame:
    """The uniqueness AUCs with a 95% interval beside each (bootstrap over texts: pairs share
    them; none under 5 texts)."""
    from .analysis.uniqueness import COMPARISONS, auc_interval, auc_test

    pairs = store.analysis("uniqueness")
    if pairs is None or pairs.empty:
        return pd.DataFrame()
    out = []
    for vector, group in pairs.groupby("vector", sort=False):
        for comparison, (near, far) in COMPARISONS.items():
            a = group.loc[group["pair_kind"].isin(near), "cosine_distance"].to_numpy()
            b = group.loc[group["pair_kind"].isin(far), "cosine_distance"].to_numpy()
            auc, p = auc_test(a, b)
            _, low, high, _ = auc_interval(group, near, far)
            out.append({"vector": vector, "comparison": comparison, "auc": auc, "low": low,
                        "high": high, "p_value": p, "n_closer": len(a), "n_farther": len(b)})
    return pd.DataFrame(out)
