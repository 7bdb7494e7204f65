"""Which of the paper's protocols did a run follow? The studies: `protoscope study NAME`.

Each study is one declaration (`Study`): its options (sizes, fit budget) with their defaults,
the analyses it runs and the protocol values it gives them where they differ from `analyze`'s
(overrides, shown in `--help`), the paper's settings, and a `plan` turning resolved options
into the run's config. `run(name, out, **options)` is the one runner: it fits what the
protocol needs (resuming like `fit`: a study run again refits nothing already stored), runs
its analyses (pipeline.fit_and_analyze, or the capacity search), writes its report (and, for
the demo, a compare page) and records its protocol in the manifest:

    manifest["protocol"] = {"name", "settings", "paper", "differs"}

`settings` are this run's, `paper` the paper's for the same protocol (PAPER.md; None where the
paper does not say), and `differs` one sentence per setting where the two part.

- connectivity (findings 3 and 4): a few texts x several seeds, m shared by each text's seeds,
  e per solution, straight and Bezier paths between a text's solutions moving e only.
- uniqueness (findings 1 and 2): C contexts x K generated continuations, one m shared by every
  text and seed, the paper's seed protocol (several seeds for the first continuation of each
  context, one for the others).
- probes: many texts (the model's own continuations, random words, windows of the built-in
  prose) with m shared by random groups of a few texts; linear probes of e.
- capacity: the capacity search with m shared or not.
- dimension: fits in K-dimensional random (or PCA) subspaces of [e; m] for a grid of K, and
  per text the smallest K that reconstructs it (an upper bound on its intrinsic dimension).
- demo: the main job end to end on a few mixed texts (m per text, two seeds), every analysis,
  the report and one compare page; sized to finish in under 8 minutes on a 2-core CPU.

A share group stops under the recipe's share policy (geometry/engine/fitting.py): recorded in
`settings` as `share_policy` and `group_patience`.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..analysis.bootstrap import MIN_UNITS
from ..analysis.registry import ANALYSES
from ..geometry.models.loading import load_model
from ..geometry.runs.fit import RunConfig, load_text_mix, now
from ..geometry.store.builtin_texts import PARAGRAPHS
from ..geometry.errors import ProtoscopeError
from ..geometry.store.runstore import RunStore
from ..geometry.store.texts import parse_text_spec, read_text_file
from ..geometry.tables import RECONSTRUCTED, capacity_per_text
from ..options import ALL, resolve, spell
from ..reports.compare import build_compare
from ..reports.report import build_report
from . import pipeline, settings
from .protocols import STUDIES

# What each setting is called in a sentence of `differs`.
LABELS = {
    "model": "model", "arrangement": "arrangement", "recipe": "fitting recipe",
    "texts": "texts", "contexts": "contexts", "per_context": "continuations per context",
    "seeds": "solutions per text", "length": "tokens per text", "lengths": "length grid",
    "share": "sharing", "pairs": "same-text pairs per text", "bezier_steps": "curve budget",
    "grid": "grid points along a path", "solutions": "solutions probed",
}


@dataclass(frozen=True)
class Plan:
    """What a study's options make: the run's config, its protocol settings, the lines that
    say before fitting that the findings will have no interval, and whether the texts are
    shuffled (share groups of consecutive texts then mix sources)."""

    config: RunConfig
    settings: dict
    notes: tuple = ()
    shuffle: bool = False


@dataclass
class StudyResult:
    """A finished study: its store, the table it prints, its pages, seconds per stage."""

    store: RunStore
    summary: pd.DataFrame
    report: Path
    seconds: dict
    pages: dict = field(default_factory=dict)


# -- the runner -------------------------------------------------------------------------------
def run(name: str, out, *, options: dict | None = None, loaded=None, **values) -> StudyResult:
    """The study `name` (one of STUDIES) into `out`: `values` its options (`protoscope options
    NAME` lists them with their defaults), `options` the analyses' ({analysis: {keyword:
    value}}, over the study's overrides), `loaded` a model already loaded."""
    if name not in STUDIES:
        raise ProtoscopeError(f"unknown study {name!r}: allowed are {', '.join(STUDIES)}")
    study = STUDIES[name]
    opts = resolve(study.every_option, values, f"study {name}")
    options = options or {}
    unknown = sorted(set(options) - set(study.analyses))
    if unknown:
        raise ProtoscopeError(f"study {name} runs no analysis {unknown[0]!r} (it runs "
                              f"{', '.join(study.analyses)})")
    analysis_options = {a: resolve(ANALYSES[a].options, options.get(a), a, study.overrides.get(a))
                        for a in study.analyses}
    plan = PLANS[name](opts, analysis_options)
    pipeline.use_threads(opts["threads"])
    say = (lambda line: None) if opts["quiet"] else (
        lambda line: print(f"{name}: {line}", file=sys.stderr, flush=True))
    started = time.perf_counter()
    with RunStore(out).lock():
        say_notes(plan.notes)
        loaded = loaded or load_model(plan.config.model, device=opts["device"],
                                      dtype=plan.config.dtype)
        texts = _shuffled_texts(out, plan.config, loaded, opts) if plan.shuffle else None
        say(f"fitting {plan.config.texts} x {plan.config.seeds} seeds at "
            f"{', '.join(map(str, plan.config.lengths))} tokens into {out}")
        fitted = pipeline.fit_and_analyze(
            out, plan.config, analyses=study.analyses if plan.config.kind == "fit" else (),
            options=analysis_options, device=opts["device"], overwrite=opts["overwrite"],
            loaded=loaded, texts=texts, batch_size=opts["batch_size"], quiet=opts["quiet"],
            lock=False, say=say)
        seconds = dict(fitted.seconds)
        record_protocol(fitted.store, name, plan.settings, study.paper)
        say("report")
        pages_started = time.perf_counter()
        report = build_report(fitted.store.path)
        pages = {"report": report}
        if "compare" in study.pages and fitted.texts:
            pages["compare"] = build_compare(fitted.store.path, fitted.texts[0].text_id)
        seconds["pages"] = time.perf_counter() - pages_started
        seconds["total"] = time.perf_counter() - started
        fitted.store.update_manifest(study_seconds={k: None if v is None else round(v, 1)
                                                    for k, v in seconds.items()})
    return StudyResult(fitted.store, SUMMARIES[name](fitted.store), report, seconds, pages)


def _shuffled_texts(out, config: RunConfig, loaded, opts: dict):
    """The spec's texts in a seeded random order, so share groups (consecutive texts) mix
    sources and contexts; None when the run exists (its stored order is kept)."""
    if (Path(out) / "manifest.json").exists() and not opts["overwrite"]:
        return None
    texts = load_text_mix(config, loaded)
    random.Random(config.text_seed).shuffle(texts)
    return texts


def record_protocol(store: RunStore, name: str, settings_: dict, paper: dict) -> dict:
    """manifest["protocol"]: the study's name, this run's settings, the paper's, and one
    sentence per difference."""
    protocol = {"name": name, "settings": settings_, "paper": paper,
                "differs": differences(settings_, paper)}
    store.update_manifest(protocol=protocol, updated=now())
    return protocol


def differences(settings_: dict, paper: dict) -> list[str]:
    """One sentence per setting the paper states (or leaves unstated) that this run sets
    differently."""
    out = []
    for key, theirs in paper.items():
        ours = settings_.get(key)
        label = LABELS.get(key, key.replace("_", " "))
        if theirs is None:
            out.append(f"{label}: {ours} here; the paper does not state it.")
        elif str(ours) != str(theirs):
            out.append(f"{label}: {ours} here, {theirs} in the paper.")
    return out


# -- what the plans share ---------------------------------------------------------------------
def _config(opts: dict, **fields) -> RunConfig:
    """The run config of a study's options: the fit options' defaults, the study's values."""
    given = {k: opts[k] for k in ("model", "dtype", "text_seed", "generate_tokens", "max_steps",
                                  "group_patience", "seeds", "texts") if k in opts}
    given.update({k: fields.pop(k) for k in ("texts", "share", "group_size", "seeds") if k in fields})
    return pipeline.run_config(pipeline.fit_options(given, "study"), **fields)


def fit_settings(config: RunConfig) -> dict:
    r = config.recipe
    recipe = (f"{r.name}: {r.optimizer} lr {r.lr}, {r.init} init, up to {r.max_steps} steps, "
              f"restart after {r.patience} without gain")
    return {"model": config.model, "arrangement": config.arrangement, "recipe": recipe,
            "share_policy": getattr(r, "share_policy", None),
            "group_patience": getattr(r, "group_patience", None), "text_seed": config.text_seed}


def _curve_settings(conn: dict) -> dict:
    return {"pairs": spell(conn["max_pairs"]) if conn["max_pairs"] == ALL else conn["max_pairs"],
            "bezier_steps": conn["bezier_steps"], "samples_per_step": conn["samples_per_step"],
            "grid": conn["grid"], "cross_text_pairs": conn["cross_text_pairs"],
            "curve_stops": "when every grid point reconstructs the text (checked every "
                           f"{conn['check_every']} steps) or at the budget",
            "curve_lr": conn["lr"],
            "curve_recipe": f"control lr {conn['lr']}, {conn['samples_per_step']} t a step, t "
                            f"{conn['t_sampling']}, coarse check on {conn['check_grid']} points"}


def count_texts(spec: str) -> int:
    """How many texts a spec names, without loading them (a file counts as its paragraphs)."""
    total = 0
    for part in spec.split("+"):
        head, _, count = part.strip().partition(":")
        if head == "builtin":
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


def too_few(what: str, units: int, unit: str) -> str | None:
    """The line saying, before anything is fitted, that the findings will have no interval:
    they resample texts and need at least MIN_UNITS of them (analysis/bootstrap.py); None when
    there are enough. `say_notes` prints it once the run folder is known to be usable."""
    if units >= MIN_UNITS:
        return None
    return (f"{what}: {units} {unit}; the findings need at least {MIN_UNITS} for an interval, "
            f"so they will be inconclusive at this n (fitting anyway)")


def say_notes(notes) -> None:
    """Print the too-few lines, even under quiet: they change what the run can answer."""
    for note in filter(None, notes):
        print(note, file=sys.stderr, flush=True)


# -- the plans --------------------------------------------------------------------------------
def _connectivity(opts: dict, analysis: dict) -> Plan:
    config = _config(opts, share="m", group_size=1, lengths=(opts["length"],))
    texts = count_texts(opts["texts"])
    return Plan(config, {**fit_settings(config), "texts": texts, "text_spec": opts["texts"],
                         "seeds": opts["seeds"], "length": opts["length"],
                         "share": "m shared by a text's seeds, e per solution",
                         **_curve_settings(analysis["connectivity"])},
                (too_few("study connectivity", texts, "texts with pairs"),))


def _uniqueness(opts: dict, analysis: dict) -> Plan:
    contexts, per_context, seeds = opts["contexts"], opts["per_context"], opts["seeds"]
    config = _config(opts, texts=f"generated:{contexts}:{per_context}", share="m", group_size=0,
                     lengths=(opts["length"],), protocol="first-of-context")
    notes = (too_few("study uniqueness", contexts if seeds > 1 else 0,
                     "texts with several seeds (one per context)"),
             too_few("study uniqueness", contexts if per_context > 1 else 0,
                     "contexts with several continuations"))
    return Plan(config, {**fit_settings(config), "contexts": contexts, "per_context": per_context,
                         "seeds": seeds, "length": opts["length"],
                         "share": "one m shared by every text and seed",
                         "seed_protocol": f"{seeds} seeds for the first continuation of each "
                                          "context, one for the others"}, notes)


def _probes(opts: dict, analysis: dict) -> Plan:
    group = opts["group_size"]
    config = _config(opts, share="m", group_size=group, lengths=(opts["length"],))
    texts, probe = count_texts(opts["texts"]), analysis["probes"]
    return Plan(config, {**fit_settings(config), "text_spec": opts["texts"], "texts": texts,
                         "seeds": opts["seeds"], "length": opts["length"],
                         "share": f"m shared by random groups of {group} texts, e per solution",
                         "solutions": f"{texts * opts['seeds']} fitted; those reconstructed are probed",
                         "probe": f"linear, {probe['folds']} folds holding out whole texts, "
                                  f"{probe['permutations']} label permutations, 95% interval by "
                                  "bootstrap over texts"},
                (too_few("study probes", texts, "texts"),), shuffle=True)


def _capacity(opts: dict, analysis: dict) -> Plan:
    lengths = settings.check_lengths(opts["lengths"])
    config = _config(opts, share=opts["share"], group_size=0, lengths=lengths, kind="capacity",
                     methods=settings.METHODS[opts["method"]])
    return Plan(config, {**fit_settings(config), "text_spec": opts["texts"], "seeds": opts["seeds"],
                         "lengths": ", ".join(map(str, lengths)),
                         "share": "m shared by every text and seed" if opts["share"] == "m" else "none",
                         "method": opts["method"], "warm_start": True},
                (too_few("study capacity", count_texts(opts["texts"]), "texts"),))


def _dimension(opts: dict, analysis: dict) -> Plan:
    dims = sorted(set(opts["dims"]))
    config = _config(opts, share="none", group_size=0, lengths=(opts["length"],),
                     subspace=f"{','.join(map(str, dims))}:{opts['kind']}")
    texts = count_texts(opts["texts"])
    return Plan(config, {**fit_settings(config), "text_spec": opts["texts"], "texts": texts,
                         "seeds": opts["seeds"], "length": opts["length"], "kind": opts["kind"],
                         "dims": ", ".join(map(str, dims)),
                         "search": "each K fitted from the recipe's start (no warm start along "
                                   "K), no restarts; d_int is the smallest K reconstructed "
                                   "within the budget, an upper bound"},
                (too_few("study dimension", texts, "texts"),))


def dimension_summary(store: RunStore) -> pd.DataFrame:
    """Per source and kind: texts, texts reconstructed at some K, median d_int of those."""
    table = store.analysis("intrinsic_dimension")
    if table is None or table.empty:
        return pd.DataFrame()
    return (table.groupby(["source", "kind"], as_index=False)
            .agg(texts=("text_id", "size"), found=("found", "sum"),
                 median_d_int=("d_int", "median"), largest_tried=("largest_tried", "max")))


def _demo(opts: dict, analysis: dict) -> Plan:
    config = _config(opts, share="m", group_size=1, lengths=(opts["length"],))
    conn = analysis["connectivity"]
    return Plan(config, {**fit_settings(config), "texts": opts["texts"], "seeds": opts["seeds"],
                         "length": opts["length"],
                         "share": "m shared by a text's seeds, e per solution",
                         "bezier_steps": conn["bezier_steps"], "pairs": conn["max_pairs"]},
                (too_few("demo", count_texts(opts["texts"]), "texts"),))


# -- the summaries ----------------------------------------------------------------------------
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


def findings_summary(*names: str) -> Callable[[RunStore], pd.DataFrame]:
    """The findings rows whose names start with one of `names` (estimate, interval, n,
    verdict): the study's answer, as analysis/findings.py computed it."""
    def summary(store: RunStore) -> pd.DataFrame:
        table = store.analysis("findings")
        if table is None or table.empty:
            return pd.DataFrame()
        keep = table["finding"].astype(str).str.startswith(names)
        return table.loc[keep, ["finding", "estimate", "low", "high", "n", "verdict"]].reset_index(drop=True)
    return summary


def _table(name: str) -> Callable[[RunStore], pd.DataFrame]:
    def summary(store: RunStore) -> pd.DataFrame:
        table = store.analysis(name)
        return table if table is not None else pd.DataFrame()
    return summary


def capacity_summary(store: RunStore) -> pd.DataFrame:
    table = store.analysis("capacity")
    return capacity_per_text(table) if table is not None else pd.DataFrame()


# -- what each study does with its options, by name (its declaration: workflows/protocols.py) -----
PLANS: dict[str, Callable[[dict, dict], Plan]] = {
    "connectivity": _connectivity, "uniqueness": _uniqueness, "probes": _probes,
    "capacity": _capacity, "dimension": _dimension, "demo": _demo}
SUMMARIES: dict[str, Callable[[RunStore], pd.DataFrame]] = {
    "connectivity": connectivity_summary,
    "uniqueness": findings_summary("same-text", "same-context"),
    "probes": _table("probes"), "capacity": capacity_summary, "dimension": dimension_summary,
    "demo": findings_summary("straight path", "curve")}


def demo(out="runs/demo", **values) -> StudyResult:
    """`protoscope demo`: the demo study (its options: `protoscope options demo`)."""
    return run("demo", out, **values)
