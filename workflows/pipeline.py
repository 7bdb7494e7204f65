"""How does a question become a finished run? The pipeline: every workflow's steps, once.

This is the Python API (`import protoscope as ps` re-exports it) and the only layer the
command line, the studies, the demo and every sweep job call:

    run = ps.fit("runs/x", 16, texts="builtin:3", seeds=2)    # a Run
    ps.analyze(run, only=["connectivity"], options={"connectivity": {"bezier_steps": 50}})
    run.findings                                              # the run's answers
    ps.report(run)                                            # RUN/report.html

Each sequence exists here alone: options -> RunConfig (`run_config`), fit (`fit`), fit then
analyse then record (`fit_and_analyze`: studies, the demo, sweep jobs), the capacity search
(`capacity_run`: the command, the study, sweep jobs), analyse under the run's lock
(`analyze`), the pages (`report`, `compare`), learned starts (`train_encoder`,
`train_universal_m`). Options are declared in workflows/settings.py and analysis/registry.py;
bad values end in one-line ProtoscopeErrors.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from ..analysis.findings import write as write_findings
from ..analysis.registry import ANALYSES
from ..analysis.run import run_analyses
from ..geometry.engine.arrangements import parse_arrangement
from ..geometry.engine.decoder import Decoder
from ..geometry.engine.recipes import resolve_recipe
from ..geometry.errors import ProtoscopeError, StoreError
from ..geometry.models.loading import DEFAULT_MODEL, LoadedModel, load_model
from ..geometry.runs.capacity import capacity_search, length_grid
from ..geometry.runs.fit import (FittedRun, RunConfig, check_prefixes, check_text_spec, fit_run,
                                 load_text_mix, prepare_run, record_threads, use_threads)
from ..geometry.starts import universal
from ..geometry.starts.encoder import KINDS, check_model, load_encoder, shipped_encoder
from ..geometry.starts.end_to_end import checkpoint_path
from ..geometry.starts.train import train_encoder as train
from ..geometry.store.runstore import RunStore
from ..geometry.store.texts import Text, records_of, texts_label, to_texts
from ..geometry.tables import reconstructed
from ..options import describe, resolve
from ..progress import Progress, each
from ..reports.compare import build_compare
from ..reports.figures_encoder import write_training_page
from ..reports.figures_export import figure_name
from ..reports.page import figures_of
from ..reports.report import build_report, report_sections
from ..reports.sweep_report import build_sweep_report, is_sweep
from . import settings
from .event_log import EventLog
from .protocols import STUDIES

RunLike = "str | Path | Run | RunStore"


@dataclass
class Run:
    """A run directory, read: its solutions, texts, vectors, tables and findings. Each read
    is of the folder as it is now, so a Run stays true after a later fit or analyze."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path)
        self.store  # a missing or damaged run fails here, in one line

    @property
    def store(self) -> RunStore:
        return RunStore.open(self.path)

    @property
    def manifest(self) -> dict:
        return self.store.manifest

    @property
    def solutions(self) -> pd.DataFrame:
        """One row per solution (solutions.parquet and any appended parts)."""
        return self.store.solutions()

    @property
    def texts(self) -> list[Text]:
        return self.store.texts()

    def vectors(self, solution_ids=None):
        """(rows, e [n, d], m [n, d]) of the given solutions (default: all), rows aligned."""
        return self.store.solution_vectors(solution_ids)

    def table(self, name: str) -> pd.DataFrame | None:
        """An analysis table (RUN/analysis/NAME.parquet; docs/tables.md), None when absent."""
        return self.store.analysis(name)

    @property
    def findings(self) -> pd.DataFrame:
        """The findings table: one row per question the run's tables answer."""
        table = self.store.analysis("findings")
        return table if table is not None else pd.DataFrame()

    def figures(self) -> dict[str, go.Figure]:
        """Every figure of the report that has data, by name (section-NN-title, the names
        `report --static` gives its files), in page order."""
        sections = report_sections(self.store)
        return {figure_name(name, fig): fig for name, fig in figures_of(sections)}

    def figure(self, name: str) -> go.Figure:
        """One figure of the report, the plotly Figure the page draws (shown inline in
        Jupyter): by its full name or a prefix only it has, e.g. "connectivity-01"."""
        figures = self.figures()
        matches = [n for n in figures if n == name] or [n for n in figures if n.startswith(name)]
        if len(matches) != 1:
            known = ", ".join(figures) or "none (run analyze first)"
            what = "names several figures" if matches else "names no figure"
            raise ProtoscopeError(f"{name!r} {what} of {self.path}; its figures: {known}")
        return figures[matches[0]]

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}: {len(self.solutions)} solutions)"


def open_run(path: RunLike) -> Run:
    """The run at `path` (a StoreError, one line, when it is none or is damaged)."""
    return path if isinstance(path, Run) else Run(_path(path))


def _path(run: RunLike) -> Path:
    if isinstance(run, Run):
        return run.path
    if isinstance(run, RunStore):
        return run.path
    return Path(run)


# -- options -> a run's config ------------------------------------------------------------------
def run_config(opts: Mapping, **fields) -> RunConfig:
    """The RunConfig of resolved fit options (settings.FIT) and the run's own fields
    (lengths, kind, methods, ...): the one place options become a config."""
    recipe_init, start = settings.split_init(opts.get("init"))
    spread = opts.get("init_spread")
    if spread is not None and not start:
        raise ProtoscopeError("--init-spread applies to encoder starts: give --init encoder or encoder:ENC")
    recipe = resolve_recipe(opts["recipe"], init=recipe_init,
                            curriculum=True if opts.get("curriculum") else None,
                            **{k: opts.get(k) for k in settings.RECIPE_FIELDS})
    given = dict(model=opts["model"], texts=opts["texts"], seeds=opts["seeds"],
                 arrangement=opts["arrangement"], share=opts["share"],
                 group_size=opts["group_size"], recipe=recipe, text_seed=opts["text_seed"],
                 generate_tokens=opts["generate_tokens"], dtype=opts["dtype"],
                 m_from=opts.get("m_from") or "", start=start,
                 trajectory_every=opts.get("trajectory_every") or 0,
                 subspace=opts.get("subspace") or "",
                 **({} if spread is None else {"start_spread": spread}))
    return RunConfig(**{**given, **fields})  # the run's own fields decide


def fit_options(values: Mapping | None = None, where: str = "fit") -> dict:
    """Every fit option: the declared defaults updated with `values`, checked."""
    return resolve(settings.FIT, values, where)


# -- fit -----------------------------------------------------------------------------------------
def fit(out, length: int, *, loaded: LoadedModel | None = None, **options) -> Run:
    """Fit (or resume) `seeds` solutions of every text at `length` tokens into `out`.

    Interrupted, it keeps every finished solution; called again, it fits only what is missing.
    `texts` is a text SPEC or the texts themselves: a list of strings, a pandas Series (ids
    from its index), a DataFrame or `datasets.Dataset` (its "text" column) or a dataset column
    (`geometry.store.texts.records_of`); given texts are labelled in the config by their count
    and digest, so resuming with other texts is refused. `log_dir`: TensorBoard event files of
    the fit (workflows/event_log.py). `loaded`: a model already loaded (else `model` is
    loaded). Options (settings.FIT):
    """
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise ProtoscopeError(f"--length must be at least 1, got {length!r}")
    texts = options.get("texts")
    records = None if texts is None or isinstance(texts, str) else records_of(texts)
    if records is not None:
        options = {**options, "texts": texts_label(records)}
    opts = fit_options(options)
    config = run_config(opts, lengths=(length,))
    if config.start.partition(":")[2]:  # a missing or damaged encoder fails before the model loads
        load_encoder(config.start.partition(":")[2])
    if records is None:
        _check_new_texts(out, config, opts["overwrite"])
    log = EventLog(opts["log_dir"]) if opts["log_dir"] else None
    use_threads(opts["threads"])
    if records is not None:
        loaded = loaded or load_model(config.model, device=opts["device"], dtype=config.dtype)
    bar = Progress(quiet=opts["quiet"], every=opts["progress_seconds"])
    callbacks = bar.callbacks()
    if log is not None:
        callbacks["on_groups"] = each(callbacks["on_groups"], log.on_groups)
    try:
        fitted = fit_run(out, config, device=opts["device"], overwrite=opts["overwrite"],
                         batch_size=opts["batch_size"], loaded=loaded,
                         texts=None if records is None else to_texts(loaded, records, "file"),
                         checkpoint_every=(opts["checkpoint_steps"], opts["checkpoint_seconds"]),
                         **callbacks)
    finally:
        bar.close()
        if log is not None:
            log.close()
    if log is not None:
        _record_log(fitted.store, "fit", log.path)
    return Run(fitted.store.path)


def _check_new_texts(out, config: RunConfig, overwrite: bool) -> None:
    """A new run's text spec, checked before the run folder (its lock) or a model exists."""
    if overwrite or not (Path(out) / "manifest.json").exists():
        check_text_spec(config.texts)


def _record_log(store: RunStore, what: str, path: Path) -> None:
    """The run folder says where its TensorBoard events went (manifest `logs`)."""
    store.update_manifest(logs={**store.manifest.get("logs", {}), what: str(path.resolve())})


@dataclass
class Fitted:
    """What `fit_and_analyze` leaves: the store, the model and texts it used, seconds."""

    store: RunStore
    loaded: LoadedModel
    texts: list[Text]
    seconds: dict = field(default_factory=dict)


def fit_and_analyze(out, config: RunConfig, *, analyses: Sequence[str] = (),
                    options: Mapping | None = None, device: str = "cpu",
                    overwrite: bool = False, loaded: LoadedModel | None = None,
                    texts: Sequence[Text] | None = None, batch_size: int | None = None,
                    quiet: bool = False, lock: bool = True, progress: Progress | None = None,
                    on_group: Callable | None = None, analysis_progress: Callable | None = None,
                    checkpoint_every: tuple[int, float] = (50, 60.0),
                    say: Callable[[str], None] | None = None) -> Fitted:
    """Fit (or resume) `config` into `out`, then run `analyses` with `options` ({analysis:
    {keyword: value}}), recording the threads used: the sequence every study, the demo and a
    sweep job share (a capacity config runs `capacity_run` instead of the fit). `progress`
    (default: a bar, or lines under `quiet`) hears the fit; `on_group` too, as each group is
    stored; `analysis_progress` the analyses."""
    say = say or (lambda line: None)
    started, seconds = time.perf_counter(), {}
    store = RunStore(out)
    with store.lock() if lock else contextlib.nullcontext():
        bar = progress or Progress(quiet=quiet)
        callbacks = bar.callbacks()
        if on_group is not None:
            callbacks["on_group"] = each(callbacks.get("on_group"), on_group)
        try:
            if config.kind == "capacity":
                store, table = capacity_run(out, config, device=device, overwrite=overwrite,
                                            loaded=loaded, batch_size=batch_size, lock=False,
                                            progress=callbacks["on_group"],
                                            on_groups=callbacks.get("on_groups"),
                                            on_length=_length_line(say))
                loaded, texts = loaded or load_model(config.model, device=device,
                                                     dtype=config.dtype), store.texts()
            else:
                fitted: FittedRun = fit_run(out, config, device=device, overwrite=overwrite,
                                            loaded=loaded, texts=texts, batch_size=batch_size,
                                            lock=False, checkpoint_every=checkpoint_every,
                                            **callbacks)
                store, loaded, texts = fitted.store, fitted.loaded, fitted.texts
        finally:
            if progress is None:
                bar.close()
        seconds["fit"] = time.perf_counter() - started
        if analyses:
            say(f"analyses {', '.join(analyses)}")
            timings = run_analyses(store, only=list(analyses), loaded=loaded, quiet=quiet,
                                   options=dict(options or {}), progress=analysis_progress)
            seconds.update({f"analysis:{k}": v for k, v in timings.items()})
            record_threads(store, "analyze")
    return Fitted(store, loaded, list(texts), seconds)


# -- the capacity search ----------------------------------------------------------------------------
def capacity(out, *, loaded: LoadedModel | None = None, **options) -> Run:
    """The longest prefix each text's solutions reconstruct, over a grid of lengths (a lower
    bound: the search stops at the grid's top and after two failed lengths). Options
    (settings.CAPACITY):
    """
    opts = resolve(settings.CAPACITY, options, "capacity")
    lengths = settings.check_lengths(opts["lengths"] or tuple(length_grid(256)))
    config = run_config(opts, lengths=lengths, kind="capacity",
                        methods=settings.METHODS[opts["method"]], warm_start=opts["warm_start"])
    _check_new_texts(out, config, opts["overwrite"])
    use_threads(opts["threads"])
    bar = Progress(None, opts["quiet"], desc="capacity")
    try:
        store, _ = capacity_run(out, config, device=opts["device"], overwrite=opts["overwrite"],
                                loaded=loaded, batch_size=opts["batch_size"],
                                progress=bar.on_group, on_texts=bar.on_texts,
                                on_length=_length_line(bar.bar.write))
    finally:
        bar.close()
    return Run(store.path)


def capacity_run(out, config: RunConfig, *, device: str = "cpu", overwrite: bool = False,
                 loaded: LoadedModel | None = None, batch_size: int | None = None,
                 lock: bool = True, progress: Callable | None = None,
                 on_groups: Callable | None = None, on_length: Callable | None = None,
                 on_texts: Callable | None = None) -> tuple[RunStore, pd.DataFrame]:
    """The capacity sequence: prepare the run, climb the grid, write the table and the
    findings that read it (a lower bound said with its grid), mark the run complete."""
    with RunStore(out).lock() if lock else contextlib.nullcontext():
        store, loaded, texts = prepare_run(out, config, device=device, overwrite=overwrite,
                                           loaded=loaded, on_texts=on_texts)
        table = capacity_search(store, loaded, texts, config, batch_size=batch_size,
                                progress=progress, on_groups=on_groups, on_length=on_length,
                                on_texts=on_texts)
        record_threads(store, "capacity")
        store.write_analysis("capacity", table)
        write_findings(store)
        store.update_manifest(status="complete")
    return store, table


def _length_line(echo: Callable[[str], None] | None) -> Callable | None:
    """`on_length` of the capacity search: one line per length climbed, to `echo`."""
    if echo is None:
        return None

    def on_length(method, length, rows) -> None:
        ok = sum(bool(reconstructed(acc)) for acc in rows.values())
        echo(f"{method} length {length}: {ok}/{len(rows)} reconstructed")
    return on_length


# -- analyses and pages ---------------------------------------------------------------------------
def analyze(run: RunLike, only: Sequence[str] | None = None, *, options: Mapping | None = None,
            force: bool = False, device: str = "cpu", threads: int | None = None,
            quiet: bool = False, allow_learned_starts: bool = False,
            loaded: LoadedModel | None = None, progress: Callable | None = None,
            log_dir: str | Path | None = None) -> dict:
    """Run the analyses `only` names (default: all) on a run, under its lock, recomputing a
    table only when its solutions, options or code version changed; returns seconds per
    analysis (None: up to date). `options`: {analysis: {keyword: value}} (analysis/registry.py;
    `protoscope options analyze` lists them). `allow_learned_starts` is recorded: findings and
    later reports give learned-start runs ordinary verdicts only when it is set. `log_dir`:
    TensorBoard event files of the curves' training (workflows/event_log.py)."""
    store = RunStore.open(_path(run))
    log = EventLog(log_dir) if log_dir else None
    use_threads(threads)
    with store.lock():
        store.update_manifest(allow_learned_starts=bool(allow_learned_starts))
        try:
            timings = run_analyses(store, only=list(only) if only else None, device=device,
                                   force=force, quiet=quiet, loaded=loaded,
                                   options=dict(options or {}), progress=progress,
                                   listen=log.on_analysis if log else None)
        finally:
            if log is not None:
                log.close()
        record_threads(store, "analyze")
        if log is not None:
            _record_log(store, "analyze", log.path)
    return timings


def report(run: RunLike, *, static: str | None = None,
           allow_learned_starts: bool | None = None) -> Path:
    """Write RUN/report.html (for a sweep directory, DIR/report.html linking every job's);
    `static` (png | svg | pdf) also exports every figure."""
    path = _path(run)
    if is_sweep(path):
        return build_sweep_report(path)
    return build_report(path, static=static, allow_learned_starts=allow_learned_starts)


def compare(run: RunLike, text: str) -> Path:
    """Write RUN/compare-TEXT.html: every solution of one text side by side."""
    return build_compare(_path(run), text)


# -- learned starts ---------------------------------------------------------------------------------
def train_encoder(out, run: RunLike | None = None, *, kind: str = "ridge", seed: int = 0,
                  options=None, texts: str | None = None, text_seed: int = 0,
                  generate_tokens: int = 128, start_from: str | None = None,
                  lengths: Sequence[int] = (), resume: bool = False, device: str = "cpu",
                  threads: int | None = None, log: Callable[[str], None] | None = None):
    """Fit an encoder text -> (e, m) on a run's solutions (or, end-to-end, on `texts` alone,
    from `start_from`: an encoder or "shipped"); writes OUT.safetensors + OUT.json (and for
    end-to-end OUT.html, its training curve). Returns the Encoder."""

    if kind not in KINDS:
        raise ProtoscopeError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "end-to-end" and (start_from or lengths or resume):
        raise ProtoscopeError(f"--from, --lengths and --resume train the end-to-end kind only, not {kind}")
    if texts and kind != "end-to-end":
        raise ProtoscopeError(f"--texts trains the end-to-end kind only, not {kind}")
    if run is None and not start_from:
        raise ProtoscopeError("encoder train needs RUN (its solutions), or --kind end-to-end --from ENC --texts SPEC")
    if run is None and not texts:
        raise ProtoscopeError("without RUN, --texts names the training texts")
    if texts:
        check_text_spec(texts)
    shipped = start_from == "shipped"
    base = load_encoder(start_from) if start_from and not shipped else None
    store = RunStore.open(_path(run)) if run is not None else None
    use_threads(threads)
    if store is not None:
        model = store.manifest.get("config", {}).get("model") or store.manifest.get("model", {}).get("name")
        dtype = store.manifest.get("dtype", "float32")
    else:
        model, dtype = base.model["name"] if base else DEFAULT_MODEL, "float32"
    loaded = load_model(model, device=device, dtype=dtype)
    if start_from:  # the shipped one is picked by the model; any is checked against it
        base = shipped_encoder(loaded) if shipped else base
        check_model(base, loaded)
    extra = []
    if texts:
        extra = load_text_mix(RunConfig(model=loaded.info.name, texts=texts, text_seed=text_seed,
                                        generate_tokens=generate_tokens), loaded)
    checkpoint = checkpoint_path(out) if kind == "end-to-end" else None
    enc = train(store, loaded, kind=kind, seed=seed, options=options, log=log, extra_texts=extra,
                extra_spec=texts or "", base=base, lengths=tuple(lengths), checkpoint=checkpoint,
                resume=resume, extra_about={"text_seed": text_seed,
                                            "generate_tokens": generate_tokens} if texts else None)
    path = enc.save(out)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)  # the encoder's JSON holds the whole history
        write_training_page(enc.meta, path.with_suffix(".html"))
    return enc


def train_universal_m(out, config, *, texts_spec: str, model: str = DEFAULT_MODEL, text_seed: int = 0,
                      device: str = "cpu", dtype: str = "float32", overwrite: bool = False,
                      threads: int | None = None, loaded: LoadedModel | None = None,
                      on_epoch: Callable[[dict], None] | None = None,
                      on_step: Callable[[int], None] | None = None):
    """`protoscope encoder universal-m`: load the texts and the model, train one m under
    `config` (geometry/starts/universal.UniversalConfig), resuming the epoch checkpoint beside
    `out` when there is one, save `out`, drop the checkpoint.

    Returns the result and whether it was trained now (False: `out` already held this
    training's result, which is read back, not retrained)."""
    out = Path(out)
    use_threads(threads)
    if out.suffix != ".safetensors":
        raise ProtoscopeError(f"--out {out}: a universal m is written to a .safetensors file")
    if out.exists() and not out.is_file():
        raise ProtoscopeError(f"--out {out} is not a file")
    check_text_spec(texts_spec)  # a bad spec fails before a slow model load
    ckpt = universal.checkpoint_path(out)
    if overwrite:
        ckpt.unlink(missing_ok=True)
    loaded = loaded or load_model(model, device=device, dtype=dtype)
    n = parse_arrangement(config.arrangement).input_length(config.length)
    if n > loaded.info.n_ctx:
        raise ProtoscopeError(f"length {config.length} needs {n} input positions, more than the "
                              f"context of {loaded.info.name} ({loaded.info.n_ctx})")
    run = RunConfig(model=model, texts=texts_spec, seeds=1, lengths=(config.length,),
                    arrangement=config.arrangement, text_seed=text_seed, dtype=dtype)
    texts = load_text_mix(run, loaded)
    check_prefixes(texts, run)
    if out.exists() and not overwrite:
        m, meta = universal.read_universal_m(out)
        same = (meta.get("model", {}).get("weights_sha256") == loaded.info.weights_sha256
                and meta.get("texts_sha256") == universal.texts_sha256(texts, config.length)
                and {k: meta.get("settings", {}).get(k) for k in config.trajectory()} == config.trajectory())
        if not same:
            raise StoreError(f"{out} holds a universal m of another model, texts or settings; use "
                             f"another --out or --overwrite")
        return universal.UniversalM(m, meta), False
    result = universal.train_universal_m(Decoder(loaded, config.arrangement), texts, config,
                                         checkpoint=ckpt, on_epoch=on_epoch, on_step=on_step)
    result.meta.update(texts_spec=texts_spec, text_seed=text_seed, dtype=dtype,
                       threads=use_threads(None))
    universal.save_universal_m(out, result, texts)
    ckpt.unlink(missing_ok=True)
    return result, True


def options_text(which: str) -> str:
    """`protoscope options WHICH`: every option of a step, its default from its declaration."""
    if which == "fit":
        return "\n".join(describe(settings.FIT))
    if which == "capacity":
        return "\n".join(describe(settings.CAPACITY))
    if which == "analyze":
        return "\n".join(f"[{a.name}] {a.question}\n" + "\n".join("  " + line for line in describe(a.options))
                         for a in ANALYSES.values())
    if which in STUDIES:
        return STUDIES[which].describe()
    raise ProtoscopeError(f"options of what? fit, capacity, analyze or a study "
                          f"({', '.join(STUDIES)}), got {which!r}")


def say(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)
