"""Which analyses are up to date, and running the rest: the `analyze` command's engine.

A table is up to date when it was computed from the solutions the store holds now, under
the options asked for now AND by the analysis's code as it is now: the manifest records, per
analysis, the solution count, the last solution it saw, the analysis module's `VERSION` and
every option of its analyze() call (resolved from its declaration in analysis/registry.py),
so a table computed under another
budget, or before a fix that changed its numbers, is recomputed, not reused. Bump an analysis's
`VERSION` when a change alters its numbers: the next `analyze` recomputes that analysis alone.
A stamp without a version (a manifest older than versions) is out of date. The findings
table is rebuilt from the tables at the end of every call (it runs no model). A run whose fit
was interrupted before its texts were scored gets their H_LM here, once, whichever analyses
run (geometry/store/scoring.py).

Progress: each analysis reports how far it is through one callable (analysis/progress.py),
handed to its analyze() as the positional-or-keyword `progress` argument, never as a
keyword-only option, so it is no part of the stamp; its stage names start with the analysis's
name. By default it is the fit's `Progress.on_analysis`: bars on stderr, or under `quiet` a
line every minute.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from ..geometry.errors import ProtoscopeError, StoreError
from ..geometry.models.loading import load_model
from ..geometry.runs.fit import now
from ..geometry.store.scoring import ensure_scored, unscored
from ..geometry.store.runstore import RunStore
from ..progress import Progress, each
from ..options import resolve, stamp_value
from . import findings
from .progress import named
from .registry import ANALYSES as REGISTRY, DEFAULT

ANALYSES = tuple(REGISTRY)  # every analysis, in the order `analyze` runs them


def solutions_stamp(store: RunStore) -> dict:
    rows = store.solutions()
    return {"solutions": int(len(rows)),
            "last_solution": int(rows["solution_id"].max()) if len(rows) else -1}


def run_analyses(store: RunStore, only=None, device: str = "cpu", force: bool = False,
                 quiet: bool = False, loaded=None, options: dict | None = None,
                 progress: Callable[..., None] | None = None,
                 listen: Callable[..., None] | None = None) -> dict:
    """Run the selected analyses; returns seconds per analysis (None: already up to date).

    `progress(stage, done, total, **detail)` hears each analysis's progress (default: a
    `Progress` of its own, bars or, under `quiet`, a line a minute on stderr); `listen`, when
    given, hears the same calls beside it (a TensorBoard log)."""
    names = list(only or DEFAULT)
    unknown = [n for n in names if n not in ANALYSES]
    if unknown:
        raise ProtoscopeError(f"unknown analysis {unknown[0]!r}: allowed are {', '.join(ANALYSES)}")
    if not len(store.solutions()):
        raise ProtoscopeError(f"{store.path} holds no solutions yet: run `protoscope fit` first")
    options = options or {}
    unknown = sorted(set(options) - set(ANALYSES))
    if unknown:
        raise ProtoscopeError(f"options for unknown analysis {unknown[0]!r}")
    modules = {n: REGISTRY[n].module for n in names}
    solutions, done = solutions_stamp(store), store.manifest.get("analyses", {})
    resolved = {n: resolve(REGISTRY[n].options, options.get(n), n) for n in names}
    stamps = {n: {**solutions, "version": REGISTRY[n].version,
                  "options": stamp_value(resolved[n])} for n in names}
    todo = [n for n in names if force or done.get(n) != stamps[n]]
    timings: dict[str, float | None] = {n: None for n in names}
    if not todo:
        findings.write(store)
        return timings
    if loaded is None:
        manifest = store.manifest
        model = manifest.get("config", {}).get("model")
        if not model:
            raise StoreError(f"{store.path / 'manifest.json'} names no model in its config")
        loaded = load_model(model, device=device, dtype=manifest.get("dtype", "float32"))
    _score(store, loaded, quiet)
    bars = Progress(quiet=quiet, desc="analyze") if progress is None else None
    progress = bars.on_analysis if bars else progress
    progress = each(progress, listen)
    try:
        for name in todo:
            started = time.perf_counter()
            if not quiet:
                print(f"analysis: {name} ...", file=sys.stderr, flush=True)
            try:
                tables = modules[name].analyze(store, loaded, progress=named(progress, name),
                                               **resolved[name])
            except ValueError as err:  # a bad option value: one line, not a traceback
                raise ProtoscopeError(f"{name}: {err}") from None
            undeclared = sorted(set(tables) - {*REGISTRY[name].tables, *REGISTRY[name].tensors})
            if undeclared:  # the registry says what each analysis writes; reports rely on it
                raise RuntimeError(f"analysis {name} wrote {undeclared[0]!r}, which "
                                   f"analysis/registry.py does not declare for it")
            for table, frame in tables.items():
                store.write_analysis(table, frame)
            timings[name] = time.perf_counter() - started
            store.update_manifest(analyses={**store.manifest.get("analyses", {}),
                                            name: stamps[name]}, updated=now())
            if bars:  # end this analysis's last bar before the next one's first line
                bars.close()
    finally:
        if bars:
            bars.close()
    findings.write(store)
    return timings


def _score(store: RunStore, loaded, quiet: bool) -> None:
    """Fill in the H_LM of texts a fit left unscored (a fit interrupted before its end)."""
    missing = len(unscored(store.texts()))
    if missing:
        if not quiet:
            print(f"analysis: scoring {missing} texts (H_LM) ...", file=sys.stderr, flush=True)
        ensure_scored(store, loaded)
