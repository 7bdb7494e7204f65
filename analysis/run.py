"""Which analyses are up to date, and running the rest: the `analyze` command's engine.

A table is up to date when it was computed from the solutions the store holds now (the
manifest records, per analysis, the solution count and the time of the rows it saw).
"""

from __future__ import annotations

import importlib
import sys
import time

from ..geometry.errors import ProtoscopeError, StoreError
from ..geometry.models import load_model
from ..geometry.runs import now
from ..geometry.store import RunStore

ANALYSES = ("uniqueness", "connectivity", "neighbourhoods", "information", "probes")


def solutions_stamp(store: RunStore) -> dict:
    rows = store.solutions()
    return {"solutions": int(len(rows)),
            "last_solution": int(rows["solution_id"].max()) if len(rows) else -1}


def run_analyses(store: RunStore, only=None, device: str = "cpu", force: bool = False,
                 quiet: bool = False, loaded=None, options: dict | None = None) -> dict:
    """Run the selected analyses; returns seconds per analysis (None: already up to date)."""
    names = list(only or ANALYSES)
    unknown = [n for n in names if n not in ANALYSES]
    if unknown:
        raise ProtoscopeError(f"unknown analysis {unknown[0]!r}: allowed are {', '.join(ANALYSES)}")
    if not len(store.solutions()):
        raise ProtoscopeError(f"{store.path} holds no solutions yet: run `protoscope fit` first")
    stamp, done = solutions_stamp(store), store.manifest.get("analyses", {})
    todo = [n for n in names if force or done.get(n) != stamp]
    timings: dict[str, float | None] = {n: None for n in names}
    if not todo:
        return timings
    if loaded is None:
        manifest = store.manifest
        model = manifest.get("config", {}).get("model")
        if not model:
            raise StoreError(f"{store.path / 'manifest.json'} names no model in its config")
        loaded = load_model(model, device=device, dtype=manifest.get("dtype", "float32"))
    for name in todo:
        started = time.perf_counter()
        module = importlib.import_module(f"{__package__}.{name}")
        if not quiet:
            print(f"analysis: {name} ...", file=sys.stderr, flush=True)
        tables = module.analyze(store, loaded, **(options or {}).get(name, {}))
        for table, frame in tables.items():
            store.write_analysis(table, frame)
        timings[name] = time.perf_counter() - started
        store.update_manifest(analyses={**store.manifest.get("analyses", {}), name: stamp}, updated=now())
    return timings
