"""Where should a new problem start? The paper recipe, the default, a frozen universal m and
encoder starts, side by side on held-out texts.

Every configuration fits the same problems: held-out texts x seeds at one length (16 tokens,
8 texts x 2 seeds). The held-out texts share no text, paragraph or context with any training
run this project makes: four sentences written for this benchmark (topics found in no built-in
paragraph) and four strings of random words drawn with a seed no run uses (RANDOM_SEED). The
check is made against the training run too (`disjoint`), and its answer is kept.

For each configuration: the accuracy of the start itself with zero optimiser steps (the random
start's for the recipes), median steps to exact (a problem not exact within the budget counts
as the budget), success rate, and wall seconds including the encoder's own cost (its forward
pass over the texts; training it is reported apart, once, with `end-to-end`'s zero-step
accuracy on its own training texts and held-out slice). Encoders are either given
(`--encoder PATH`) or trained here from a run's solutions (`--train-run RUN --kinds ...`,
saved under `--encoder-dir`). A frozen universal m needs an m artefact (`--m-from FILE`: one
`protoscope encoder universal-m` trained, or a run whose solutions share one m) whose training
texts, as the file or run records them, are disjoint from the held-out texts; otherwise the row
says why it was not run.

best = the fastest configuration (median steps) whose success rate is at least the paper
recipe's; `steps_ratio_paper_over_best` = the paper's median over the best's.

    python -m protoscope.bench.starts --train-run RUN [--kinds nearest ridge mlp end-to-end]
    python -m protoscope.bench.starts --smoke        # a tiny model, seconds; numbers mean nothing
"""

from __future__ import annotations

import argparse
import inspect
import json
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch

from . import common

LENGTH, TEXTS, SEEDS, CAP = 16, 8, 2, 1000
RANDOM_SEED = 9001  # the random-word texts of training runs use small seeds (0, 11, ...)
PROSE = (  # written for this benchmark; no built-in paragraph is about any of this. The second
    # sentence of each came later, for the 32-token comparison, and the third for the 64-token one:
    # the earlier lengths' tokens are unchanged (tests/test_bench_starts.py checks it).
    "The library van parks beside the school gate every second Tuesday, and the children "
    "queue with their cards long before the doors open. The driver keeps a box of picture "
    "books for the smallest ones and a list of requests pinned above the wheel. In winter the heater breaks at least once a "
    "month, so the older readers bring flasks of tea and wait their turn in coats and scarves.",
    "Glaciers in the northern valley retreated nearly forty metres last summer, leaving a "
    "field of grey gravel where the ice once stood. Survey teams now walk the new ground each "
    "spring with poles and cameras to mark how far the edge has moved. The measurements go into a shared spreadsheet that the "
    "regional office publishes each autumn, with photographs taken from the same rock every year.",
    "To reset the router, hold the small button on its back for ten seconds until the green "
    "light blinks twice, then wait a full minute. If the light stays orange, unplug the cable, "
    "count to thirty and plug it back in before calling the help line. Most faults clear after the second restart, but "
    "an old cable or a loose splitter in the wall socket can make the connection drop again.",
    "My grandmother kept bees behind the orchard wall, and every August the whole house "
    "smelled of wax, smoke and warm honey. She sold the jars at the Saturday market and gave "
    "the cracked ones to the neighbours who helped with the frames. In winter she wrapped the hives in old "
    "blankets and straw, and pressed her ear to the wood to hear whether the colony still hummed.",
)
RECIPES = (("paper", "paper", {}), ("default", "default", {}),
           ("curriculum", "default", {"curriculum": True}))
SETTINGS = {"length": LENGTH, "texts": TEXTS, "seeds": SEEDS, "cap": CAP}
SMOKE = {"length": 4, "texts": 2, "seeds": 2, "cap": 20}
KINDS = ("nearest", "ridge", "mlp", "end-to-end")  # the encoders trained when a run is given


def held_out_texts(loaded, count: int) -> list:
    """`count` texts: the prose sentences first, then random words (about half of each)."""
    from protoscope.geometry.store.texts import Text, random_texts, tokenize

    n_prose = min(len(PROSE), (count + 1) // 2)
    records = [(f"heldout-prose-{i}", "file", s) for i, s in enumerate(PROSE[:n_prose])]
    records += [(f"heldout-random-{i}", "random", s)
                for i, (_, s) in enumerate(random_texts(count - n_prose, RANDOM_SEED, 40))]
    return [Text(i, src, None, s, tokenize(loaded, s)) for i, src, s in records]


def disjoint(held_out, train, length: int, name: str) -> dict:
    """Do the held-out texts share a text, a prefix, a paragraph or a context with the training
    texts `train` (of a run, or those a universal m file records), named `name`?"""
    from protoscope.geometry.store.builtin_texts import PARAGRAPHS

    strings = {t.text for t in train}
    prefixes = {t.token_ids[:length] for t in train}
    shared_text = [t.text_id for t in held_out if t.text in strings]
    shared_prefix = [t.text_id for t in held_out if t.token_ids[:length] in prefixes]
    # A shared paragraph or context shows as a shared run of SHINGLE words with a built-in
    # paragraph (the source of windows, builtin texts and generation contexts) or a training text.
    sources = [p for _, p in PARAGRAPHS] + [t.text for t in train]
    seen = set().union(*(_shingles(x) for x in sources))
    inside_paragraph = [t.text_id for t in held_out if _shingles(t.text) & seen]
    return {"training_run": name, "training_texts": len(train),
            "training_sources": sorted({t.source for t in train}),
            "training_contexts": sorted({t.context_id for t in train if t.context_id}),
            "held_out_sources": sorted({t.source for t in held_out}),
            "shared_text": shared_text, "shared_prefix": shared_prefix,
            "shares_a_word_run_with_training_or_paragraphs": inside_paragraph,
            "ok": not (shared_text or shared_prefix or inside_paragraph)}


SHINGLE = 6


def _shingles(text: str) -> set:
    words = text.lower().split()
    return {tuple(words[i:i + SHINGLE]) for i in range(max(0, len(words) - SHINGLE + 1))}


def _problems(texts, seeds: int, length: int):
    from protoscope.geometry.engine.fitting import Problem

    return [Problem(t.text_id, s, t.prefix(length)) for t in texts for s in range(seeds)]


def job(label: str, s: dict, recipe: str = "default", encoder: str | None = None,
        m_from: str | None = None, loaded=None, overrides: dict | None = None,
        spread: float | None = None) -> dict:
    """Fit one configuration on the held-out problems: zero-step accuracy, steps, success, time."""
    from protoscope.geometry.engine.decoder import Decoder
    from protoscope.geometry.starts.encoder import (PERTURBATION, encoder_starts, load_encoder,
                                             recipe_starts, zero_step_accuracy)
    from protoscope.geometry.engine.fitting import Fitter

    loaded = loaded or common.model()
    base = common.recipe(recipe)
    budget = min(base.max_steps, s["cap"])
    rec = common.recipe(recipe, max_steps=budget, **(overrides or {}))
    problems = _problems(held_out_texts(loaded, s["texts"]), s["seeds"], s["length"])
    decoder = Decoder(loaded, "bos e m*")
    extra, frozen = {}, None
    with common.Clock() as start_clock:
        if encoder:
            enc = load_encoder(encoder)
            problems = encoder_starts(enc, loaded, problems,
                                      PERTURBATION if spread is None else spread)
            extra["encoder"] = {"name": pathlib.Path(encoder).name, "kind": enc.kind,
                                **enc.meta.get("trained_on", {})}
            if spread is not None:
                extra["spread"] = spread
    if encoder:
        e0, m0 = (torch.stack([getattr(p, f"init_{n}") for p in problems]) for n in ("e", "m"))
    else:
        e0, m0 = recipe_starts(problems, rec, loaded.info)
    if m_from:
        from protoscope.geometry.starts.frozen import load_frozen_m

        frozen = load_frozen_m(m_from)
        m0 = frozen.expand(len(problems), -1)
        extra["m_from"] = pathlib.Path(m_from).name
        if pathlib.Path(m_from).is_file():  # what the universal m file says of its training
            from protoscope.geometry.starts.universal import read_universal_m

            meta = read_universal_m(m_from)[1]
            extra["universal_m"] = {k: meta[k] for k in ("n_texts", "length", "epochs", "steps",
                                                         "share_exact", "seconds")}
    zero = zero_step_accuracy(decoder, e0, m0, problems)
    kwargs = {"frozen_m": frozen} if frozen is not None else {}
    from protoscope.progress import Progress

    progress = Progress(quiet=True, desc=f"starts {label}", every=120.0)  # a line every 2 min
    fitter = Fitter(decoder, rec, on_groups=progress.on_groups, **kwargs)
    with common.Clock() as fit_clock:
        groups = fitter.fit(problems)
    found = {(x.problem.text_id, x.problem.seed): x for g in groups for x in g.solutions}
    rows = [{**common.outcome(found[(p.text_id, p.seed)], budget), "zero_step_accuracy": float(z)}
            for p, z in zip(problems, zero)]
    extra["seed_spread"] = seed_spread(groups)
    return {"label": label, "recipe": rec.to_dict(), "budget": budget, "rows": rows,
            "zero_step_accuracy": float(np.mean(zero)),
            "encoder_seconds": round(start_clock.wall, 2),
            "seconds": round(fit_clock.wall + start_clock.wall, 1),
            "cpu_seconds": round(fit_clock.cpu + start_clock.cpu, 1), **extra, **common.summary(rows)}


def seed_spread(groups) -> dict:
    """How far apart a text's solutions from different seeds end: the median cosine distance
    between the converged solutions of one text (e, and m), over all such pairs. A start that
    puts every seed near one point (an encoder's seed s > 0 is its prediction moved 5%) finds
    solutions closer together than random starts do, which changes what the non-uniqueness
    and connectivity analyses see."""
    from protoscope.analysis.vectors import cosine_distances

    by_text: dict = {}
    for g in groups:
        for x in g.solutions:
            if x.converged:
                by_text.setdefault(x.problem.text_id, []).append((g.e[x.e_row], g.m[x.m_row]))
    out = {}
    for i, name in enumerate(("e", "m")):
        d = []
        for vs in by_text.values():
            dist = cosine_distances(torch.stack([v[i] for v in vs]).double().numpy())
            d += dist[np.triu_indices(len(vs), 1)].tolist()
        out[f"median_cosine_distance_{name}"] = float(np.median(d)) if d else None
    out["pairs"] = sum(len(vs) * (len(vs) - 1) // 2 for vs in by_text.values())
    return out


def train(run: str, kinds, out_dir, loaded=None) -> dict:
    """Train each kind of encoder on `run`; {kind: {"path", "seconds"}}."""
    from protoscope.geometry.starts.train import train_encoder
    from protoscope.geometry.store.runstore import RunStore

    loaded = loaded or common.model()
    store = RunStore.open(run)
    out = {}
    for kind in kinds:
        with common.Clock() as clock:
            enc = train_encoder(store, loaded, kind)
        path = enc.save(pathlib.Path(out_dir) / f"{kind}")
        out[kind] = {"path": str(path.with_suffix("")), "seconds": round(clock.wall, 1),
                     "solutions": enc.meta["trained_on"]["solutions"]}
        if "zero_step_accuracy" in enc.meta:  # end-to-end: on its training texts and held-out slice
            out[kind]["zero_step_accuracy"] = enc.meta["zero_step_accuracy"]
    return out


def frozen_m_available() -> str | None:
    """Why a frozen m cannot run here (None: it can)."""
    from protoscope.geometry.engine.fitting import Fitter

    if "frozen_m" not in inspect.signature(Fitter).parameters:
        return "this engine cannot keep m frozen"
    return None


def check_universal_m(m_from: str, loaded, s: dict) -> tuple[dict | None, str | None]:
    """Is a frozen m fit to run on the held-out texts? (the disjointness record, why not)

    The fitting loop's own checks come first (frozen.py: a readable m of the model's width,
    trained on these weights when the file says). Then its training texts (those a `protoscope
    encoder universal-m` file records, or a run's) must be disjoint from the held-out texts by
    text, prefix and word run, as the encoders' training run must be; a file that records none
    cannot be checked and is not run."""
    from protoscope.geometry.engine.arrangements import parse_arrangement
    from protoscope.geometry.errors import ProtoscopeError
    from protoscope.geometry.starts.frozen import check_frozen_m, load_frozen_m
    from protoscope.geometry.store.runstore import RunStore
    from protoscope.geometry.starts.universal import read_universal_m, recorded_texts

    path = pathlib.Path(m_from)
    try:
        check_frozen_m(load_frozen_m(m_from), m_from, loaded.info.d_model, loaded.info.name,
                       parse_arrangement("bos e m*"), loaded.info.weights_sha256)
        if path.is_dir():
            train = RunStore.open(path).texts()
        else:
            try:
                train = recorded_texts(read_universal_m(path)[1])
            except ProtoscopeError:
                return None, (f"{path.name} records no training texts, so its disjointness from "
                              f"the held-out texts cannot be checked (train it with `protoscope "
                              f"encoder universal-m`)")
    except ProtoscopeError as err:
        return None, str(err)
    record = disjoint(held_out_texts(loaded, s["texts"]), train, s["length"], path.name)
    if not record["ok"]:
        return record, (f"its training texts are not disjoint from the held-out texts (shared "
                        f"text {record['shared_text']}, prefix {record['shared_prefix']}, word run "
                        f"{record['shares_a_word_run_with_training_or_paragraphs']})")
    return record, None


def solver_label(solver: dict) -> str:
    """The label suffix of an encoder row fitted with recipe overrides: `/lr=0.02,patience=0`."""
    return "/" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in sorted(solver.items())) if solver else ""


def parse_solver(pairs) -> dict:
    """KEY=VALUE recipe overrides (numbers, true/false) checked against the recipe's fields."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            _refuse(f"--solver takes KEY=VALUE, got {pair!r}")
        low = value.lower()
        out[key] = (low == "true") if low in ("true", "false") else (
            int(value) if value.lstrip("-").isdigit() else float(value) if _number(value) else value)
    from protoscope.geometry.errors import ProtoscopeError

    try:  # unknown fields: one line here, not a traceback in a worker
        common.recipe("default", **out)
    except ProtoscopeError as err:
        _refuse(f"--solver: {err}")
    return out


def _refuse(line: str) -> None:
    print(f"protoscope: {line}", file=sys.stderr)
    sys.exit(2)


def _number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def compare(s: dict, encoders: dict[str, str], m_from: str | None = None, loaded=None,
            workers: int | None = None, m_skip: str | None = None, only=None,
            keep: dict | None = None, on_result=None, spreads=(), solver: dict | None = None) -> dict:
    """Every configuration (those named in `only`, when given), one single-thread worker each
    (each encoder also at every seed spread of `spreads`: `encoder_NAME@S`; with `solver`,
    recipe overrides for the encoder rows, labelled `encoder_NAME/KEY=VALUE,...`)
    (in-process when `loaded` is given). Configurations in `keep` (label -> result of an earlier
    invocation on the same problems) are not fitted again; `on_result(result)` is called as each
    configuration finishes, so an interrupted comparison keeps what it finished."""
    jobs = [(job, dict(label=label, s=s, recipe=name, overrides=over)) for label, name, over in RECIPES]
    skipped = {}
    why = m_skip or ("no universal m artefact was given (--m-from FILE)" if not m_from
                     else frozen_m_available())
    if why:
        if not only or "frozen_m" in only:
            skipped["frozen_m"] = why
    else:
        jobs.append((job, dict(label="frozen_m", s=s, m_from=m_from)))
    tag, over = solver_label(solver or {}), dict(solver or {})
    jobs += [(job, dict(label=f"encoder_{name}{tag}", s=s, encoder=path, overrides=over))
             for name, path in encoders.items()]
    jobs += [(job, dict(label=f"encoder_{name}@{x:g}{tag}", s=s, encoder=path, spread=x, overrides=over))
             for name, path in encoders.items() for x in spreads]
    if only:
        jobs = [j for j in jobs if j[1]["label"] in only]
    keep = dict(keep or {})
    jobs = [j for j in jobs if j[1]["label"] not in keep]
    if loaded is not None:  # in this process, one after another
        jobs, workers = [(fn, {**kw, "loaded": loaded}) for fn, kw in jobs], 1
    results = common.run_jobs(jobs, workers or len(jobs), on_result=on_result)
    return {"configs": {**keep, **{r["label"]: r for r in results}}, "skipped": skipped}


def headline(configs: dict) -> dict:
    """The keys bench-quick promises (empty when the paper recipe was not among the configs,
    e.g. a spread-only comparison: there is nothing to take a ratio against)."""
    if "paper" not in configs:
        return {}
    paper = configs["paper"]
    reliable = [r for r in configs.values() if r["success_rate"] >= paper["success_rate"]]
    best = min(reliable, key=lambda r: (r["median_steps"], r["label"] != "paper"))
    return {"steps_ratio_paper_over_best": paper["median_steps"] / max(best["median_steps"], 1),
            "best_start": best["label"], "success_rate_best": best["success_rate"],
            "success_rate_paper": paper["success_rate"],
            # bench-quick's own success_rate_paper is on built-in texts: this one is held out
            "success_rate_paper_held_out": paper["success_rate"],
            "median_steps_best": best["median_steps"], "median_steps_paper_held_out": paper["median_steps"],
            "zero_step_accuracy": {k: r["zero_step_accuracy"] for k, r in configs.items()}}


def table_rows(configs: dict) -> list[dict]:
    return [{"start": k, "zero_step_acc": r["zero_step_accuracy"], "median_steps": r["median_steps"],
             "success": r["success_rate"], "mean_acc": r["mean_accuracy"], "seconds": r["seconds"],
             "encoder_s": r["encoder_seconds"],
             "seed_cos_e": _rounded((r.get("seed_spread") or {}).get("median_cosine_distance_e")),
             "steps": " ".join(str(x["steps"]) if x["converged"] else "-" for x in r["rows"])}
            for k, r in configs.items()]


def _rounded(x):
    return "" if x is None else round(x, 3)


def report(result: dict) -> list[str]:
    h = result["headline"]
    lines = [f"starts on held-out texts ({result['settings']['texts']} texts x "
             f"{result['settings']['seeds']} seeds, {result['settings']['length']} tokens, budget "
             f"{result['settings']['cap']}; - = not exact within the budget)",
             common.table(table_rows(result["configs"]),
                          ["start", "zero_step_acc", "median_steps", "success", "mean_acc",
                           "seconds", "encoder_s", "seed_cos_e", "steps"]),
             "(seed_cos_e: median cosine distance between the e of one text's solutions from "
             "different seeds)"]
    for k, why in result["skipped"].items():
        lines.append(f"{k}: not run: {why}")
    for k, t in result.get("trained", {}).items():
        zero = "".join(f", zero-step accuracy {part} {v:.3f}" for part, v in
                       t.get("zero_step_accuracy", {}).items() if v is not None)
        lines.append(f"encoder {k}: trained in {t['seconds']} s on {t['solutions']} solutions{zero}")
    if result.get("disjoint_m"):
        d = result["disjoint_m"]
        lines.append(f"held out vs the universal m's {d['training_texts']} training texts: "
                     f"disjoint {d['ok']} (sources {d['training_sources']})")
    for name, d in result.get("disjoint_encoders", {}).items():
        lines.append(f"held out vs encoder {name}'s training texts: disjoint {d['ok']} "
                     f"({d['training_texts']} texts, sources {d['training_sources']})")
    if "disjoint" in result:
        d = result["disjoint"]
        lines.append(f"held out vs training run: disjoint {d['ok']} (training sources "
                     f"{d['training_sources']}, contexts {d['training_contexts']})")
    if not h:
        return lines
    lines.append(f"best {h['best_start']}: median {h['median_steps_best']} steps, success "
                 f"{h['success_rate_best']}; paper median {h['median_steps_paper_held_out']}, success "
                 f"{h['success_rate_paper']}; ratio paper/best {h['steps_ratio_paper_over_best']:.3g}")
    return lines


def measured(settings: dict | None = None, train_run: str | None = None, kinds=KINDS,
             encoders: dict | None = None, encoder_dir=None, m_from: str | None = None,
             loaded=None, only=None, workers: int | None = None, keep: dict | None = None,
             on_result=None, spreads=(), solver: dict | None = None) -> dict:
    """The whole comparison; the entry point bench/run.py calls as an extra. `only`, `workers`,
    `keep` and `on_result` as in `compare`."""
    from protoscope.geometry.starts.encoder import SHIPPED

    s = {**SETTINGS, **(settings or {})}
    started = time.perf_counter()
    encoders = dict(encoders or {})
    result: dict = {"settings": s}
    if train_run:
        encoder_dir = encoder_dir or tempfile.mkdtemp(prefix="protoscope-encoders-")
        result["trained"] = train(train_run, kinds, encoder_dir, loaded=loaded)
        encoders.update({k: v["path"] for k, v in result["trained"].items()})
        from protoscope.geometry.store.runstore import RunStore

        result["disjoint"] = disjoint(held_out_texts(loaded or common.model(), s["texts"]),
                                      RunStore.open(train_run).texts(), s["length"],
                                      pathlib.Path(train_run).name)
    elif not encoders and loaded is None:  # the shipped encoder, if the package has one
        shipped = sorted(SHIPPED.glob("*.json")) if SHIPPED.is_dir() else []
        encoders.update({"shipped": str(p.with_suffix("")) for p in shipped[:1]})
    given = disjoint_encoders({k: v for k, v in encoders.items() if k not in result.get("trained", {})},
                              loaded, s)
    if given:
        result["disjoint_encoders"] = given
    m_skip = None
    if m_from:
        result["disjoint_m"], m_skip = check_universal_m(m_from, loaded or common.model(), s)
    result.update(compare(s, encoders, m_from=None if m_skip else m_from, loaded=loaded,
                          m_skip=m_skip, only=only, workers=workers, keep=keep, on_result=on_result,
                          spreads=spreads, solver=solver))
    result["headline"] = headline(result["configs"])
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def disjoint_encoders(encoders: dict[str, str], loaded, s: dict) -> dict:
    """For each given encoder that saved its training texts (ENC.texts.jsonl.gz): are the
    held-out texts disjoint from them (`disjoint`)? Encoders that saved none are not listed."""
    from protoscope.geometry.starts.encoder import load_encoder, training_texts

    out = {}
    for name, path in encoders.items():
        texts = training_texts(load_encoder(path))
        if texts:
            out[name] = disjoint(held_out_texts(loaded or common.model(), s["texts"]), texts,
                                 s["length"], pathlib.Path(path).name)
    return out


def _smoke() -> dict:
    """A tiny model, a tiny training run, two held-out texts: every code path in seconds."""
    from protoscope.geometry.models.loading import tiny_model
    from protoscope.geometry.engine.recipes import resolve_recipe
    from protoscope.geometry.runs.fit import RunConfig, fit_run
    from protoscope.geometry.engine.decoder import Decoder
    from protoscope.geometry.store.texts import Text, tokenize
    from protoscope.geometry.starts.universal import UniversalConfig, save_universal_m, train_universal_m

    loaded = tiny_model("llama", seed=0, initializer_range=0.3)
    words = ["the old man walked to the city in the morning", "money and power are not what we need",
             "she went to the river in the evening light"]
    texts = [Text(f"train-{i}", "random", None, w, tokenize(loaded, w)) for i, w in enumerate(words)]
    config = RunConfig(model=loaded.info.name, texts="smoke", seeds=1, lengths=(SMOKE["length"],),
                       recipe=resolve_recipe("default", max_steps=60))
    with tempfile.TemporaryDirectory(prefix="protoscope-starts-smoke-") as tmp:
        folder = pathlib.Path(tmp)
        fit_run(folder / "run", config, loaded=loaded, texts=texts)
        universal = train_universal_m(Decoder(loaded, "bos e m*"), texts,
                                      UniversalConfig(length=SMOKE["length"], epochs=3, batch_texts=2))
        m_file = save_universal_m(folder / "universal-m.safetensors", universal, texts)
        return measured(SMOKE, train_run=str(folder / "run"), encoder_dir=folder / "encoders",
                        m_from=str(m_file), loaded=loaded, spreads=(0.0, 0.3))


def kept_configs(name: str, settings: dict, add: bool) -> dict:
    """Configurations not to fit again: those an interrupted invocation with these settings
    finished (`NAME.partial.json`) and, with `add`, those already in `NAME.json`. Each keeps the
    command that measured it. A result file of other settings is one line and exit 2."""
    keep = {}
    sources = [common.RESULTS / f"{name}.json"] if add else []
    sources.append(common.RESULTS / f"{name}.partial.json")
    for path in sources:
        if not path.exists():
            continue
        saved = json.loads(path.read_text())
        if saved["settings"] != settings:
            if path.name == f"{name}.json":
                print(f"protoscope: --add: {path.name} was measured with {saved['settings']}, "
                      f"not {settings}", file=sys.stderr)
                sys.exit(2)
            continue
        for label, config in saved["configs"].items():
            keep[label] = {**config, "measured_by": config.get("measured_by", saved.get("command", ""))}
    for label in keep:
        print(f"{label}: kept from {name}, not fitted again", file=sys.stderr, flush=True)
    return keep


def with_earlier(result: dict, path: pathlib.Path) -> dict:
    """`result` with what the earlier file says of the rows it keeps: the encoders it trained,
    its disjointness records, its skipped configurations and its command (as `earlier`)."""
    if not path.exists():
        return result
    earlier = json.loads(path.read_text())
    out = dict(result)
    out["trained"] = {**earlier.get("trained", {}), **result.get("trained", {})}
    for key in ("disjoint", "disjoint_m", "disjoint_encoders"):
        if key in earlier and key not in result:
            out[key] = earlier[key]
    out["skipped"] = {k: v for k, v in {**earlier.get("skipped", {}), **result["skipped"]}.items()
                      if k not in result["configs"]}
    out["earlier"] = [*earlier.get("earlier", []), {"command": earlier.get("command"),
                                                   "seconds": earlier.get("seconds")}]
    return {k: out[k] for k in out if out[k] or k in result}


def _command() -> str:
    """The command line with path options shortened to their last part."""
    args, out = sys.argv[1:], []
    for i, a in enumerate(args):
        after_path = i and args[i - 1] in ("--train-run", "--encoder-dir", "--encoder", "--m-from")
        out.append(pathlib.Path(a).name if after_path else a)
    return " ".join(["python", "-m", "protoscope.bench.starts", *out])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-run", default=None, help="train encoders on this run's solutions")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS))
    ap.add_argument("--encoder-dir", default=None, help="where trained encoders are kept")
    ap.add_argument("--encoder", action="append", default=[], metavar="PATH",
                    help="an encoder already trained (repeatable)")
    ap.add_argument("--m-from", default=None, help="a universal m (.safetensors) kept frozen")
    ap.add_argument("--texts", type=int, default=TEXTS)
    ap.add_argument("--seeds", type=int, default=SEEDS)
    ap.add_argument("--length", type=int, default=LENGTH)
    ap.add_argument("--cap", type=int, default=CAP)
    ap.add_argument("--name", default=None, help="result file (default starts_LENGTH)")
    ap.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                    help="run only these configurations (paper, default, curriculum, frozen_m, "
                         "encoder_NAME)")
    ap.add_argument("--add", action="store_true",
                    help="keep the configurations already in the result file (same length, texts, "
                         "seeds and cap) and add the ones run now beside them")
    ap.add_argument("--workers", type=int, default=None,
                    help="configurations fitted at once, one thread each (default: all)")
    ap.add_argument("--spreads", nargs="+", type=float, default=[], metavar="S",
                    help="each encoder also at these seed spreads (fit --init-spread): the "
                         "steps-vs-spread curve, rows encoder_NAME@S")
    ap.add_argument("--solver", nargs="+", default=[], metavar="KEY=VALUE",
                    help="recipe overrides for the encoder rows (e.g. lr=0.02 max_restarts=0): a "
                         "solver tuned for learned starts, rows encoder_NAME/KEY=VALUE,...")
    ap.add_argument("--smoke", action="store_true", help="tiny model; checks the script only")
    args = ap.parse_args(argv)
    if args.smoke:
        result = _smoke()
    else:
        solver = parse_solver(args.solver)
        settings = {"length": args.length, "texts": args.texts, "seeds": args.seeds, "cap": args.cap}
        encoders = {pathlib.Path(p).stem: p for p in args.encoder}
        name = args.name or f"starts_{args.length}"
        keep = kept_configs(name, {**SETTINGS, **settings}, args.add)
        partial = common.RESULTS / f"{name}.partial.json"

        def save(config: dict) -> None:  # a finished configuration outlives an interrupted run
            keep[config["label"]] = {**config, "measured_by": _command()}
            common.write_atomic(partial, {"settings": {**SETTINGS, **settings}, "configs": keep})

        result = measured(settings, train_run=args.train_run, kinds=args.kinds, encoders=encoders,
                          encoder_dir=args.encoder_dir, m_from=args.m_from, only=args.only,
                          workers=args.workers, keep=dict(keep), on_result=save,
                          spreads=args.spreads, solver=solver)
        if args.add:
            result = with_earlier(result, common.RESULTS / f"{name}.json")
    result = {"command": _command(), "machine": common.machine(), **result}
    for t in result.get("trained", {}).values():  # names, not machine paths, in the result file
        t["path"] = pathlib.Path(t["path"]).name
    result["printed_table"] = report(result)
    print("\n".join(result["printed_table"]))
    if not args.smoke:
        print(f"written: {common.write_result(name, result)}", file=sys.stderr)
        partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
