"""How does a grid of models x texts x lengths x seeds become one table? `protoscope sweep`.

A sweep file (TOML) names models, text specs, lengths (or a capacity grid), seeds, share modes,
recipe fields and the analyses to run per job. `plan_sweep` expands it into jobs, one model x a
batch of problems (one text spec, one share mode, every length and seed), each an ordinary run
store under `DIR/jobs/`. `run_sweep` runs the jobs that are not finished, in this process
(`local`) or on a Ray cluster (`ray`, the optional extra `protoscope[ray]`), and keeps
`DIR/sweep.json` (the plan, each job's status) and `DIR/results.parquet` (one row per solution
across jobs) up to date. A job is resumed through its run store, so a sweep started again, or a
Ray task retried after its worker died, fits only what is not stored yet.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import re
import signal
import sys
import time
import tomllib
from collections.abc import Callable, Iterator

import pandas as pd

from ..analysis.run import ANALYSES
from ..geometry.engine.arrangements import DEFAULT_ARRANGEMENT
from ..geometry.engine.recipes import resolve_recipe
from ..geometry.errors import ProtoscopeError
from ..geometry.models.loading import check_model_name
from ..geometry.runs.fit import RunConfig, check_text_spec, now
from ..geometry.store.runstore import RunStore, atomic_write, write_json
from . import backends
from . import settings
from .jobs import stored

KEYS = ("name", "models", "texts", "lengths", "capacity", "capacity_method", "seeds", "share",
        "group_size", "arrangement", "recipe", "analyses", "dtype", "text_seed", "random_words",
        "generate_tokens", "batch_size", "threads", "checkpoint_steps", "checkpoint_seconds")
RESULT_COLUMNS = ["model", "text_id", "source", "seed", "length", "share", "accuracy", "c_tokens",
                  "steps", "seconds", "converged", "run", "job", "kind", "arrangement", "status",
                  "h_lm_nats", "h_lm_bits"]
BACKENDS = backends.NAMES


# -- the plan --------------------------------------------------------------------------------

def read_sweep_file(path) -> dict:
    """The sweep file's table; a missing, unreadable or malformed file is one clear error."""
    path = pathlib.Path(path)
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ProtoscopeError(f"cannot read sweep file {path}: {err.__class__.__name__}") from None
    except tomllib.TOMLDecodeError as err:
        raise ProtoscopeError(f"sweep file {path} is not valid TOML: {err}") from None
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise ProtoscopeError(f"sweep file {path}: unknown key {unknown[0]!r} (allowed: "
                              f"{', '.join(KEYS)})")
    return spec


def plan_sweep(spec: dict, check_models: bool = True) -> list[dict]:
    """The jobs of a sweep, in a stable order (by model, so a worker reuses a loaded model)."""

    models = _list(spec, "models", str)
    texts = _list(spec, "texts", str)
    shares = _list(spec, "share", str, default=["none"])
    if ("lengths" in spec) == ("capacity" in spec):
        raise ProtoscopeError("sweep file: give exactly one of 'lengths' (fit) and 'capacity' "
                              "(a capacity grid)")
    kind = "capacity" if "capacity" in spec else "fit"
    lengths = tuple(_list(spec, kind if kind == "capacity" else "lengths", int))
    if kind == "capacity" and list(lengths) != sorted(set(lengths)):
        raise ProtoscopeError(f"sweep file: 'capacity' must be increasing lengths, got {list(lengths)}")
    methods = settings.METHODS
    method = spec.get("capacity_method", "one-step")
    if method not in methods:
        raise ProtoscopeError(f"sweep file: capacity_method must be one of {', '.join(methods)}")
    analyses = _list(spec, "analyses", str, default=[], allow_empty=True)

    bad = [a for a in analyses if a not in ANALYSES]
    if bad:
        raise ProtoscopeError(f"sweep file: unknown analysis {bad[0]!r} (allowed: {', '.join(ANALYSES)})")
    recipe = _recipe(spec.get("recipe", "default"))
    for text_spec in texts:
        check_text_spec(text_spec)
    if check_models:
        for model in models:
            check_model_name(model)
    batch_size = spec.get("batch_size")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ProtoscopeError(f"sweep file: batch_size must be a positive integer, got {batch_size!r}")
    run_options = {"batch_size": batch_size,
                   "threads": _int(spec, "threads", 0, 0) or None,
                   "checkpoint_every": [_int(spec, "checkpoint_steps", 50, 1),
                                        _number(spec, "checkpoint_seconds", 60.0)]}
    jobs = []
    for model in models:
        for text_spec in texts:
            for share in shares:
                config = RunConfig(
                    model=model, texts=text_spec, seeds=_int(spec, "seeds", 2, 1), lengths=lengths,
                    arrangement=spec.get("arrangement", DEFAULT_ARRANGEMENT), share=share,
                    group_size=_int(spec, "group_size", 0, 0), recipe=recipe,
                    text_seed=_int(spec, "text_seed", 0, 0),
                    random_words=_int(spec, "random_words", 400, 1),
                    generate_tokens=_int(spec, "generate_tokens", 128, 1),
                    dtype=str(spec.get("dtype", "float32")), kind=kind,
                    methods=methods[method] if kind == "capacity" else ("one-step",))
                job_id = f"{len(jobs):03d}-{_slug(model)}-{_slug(text_spec)}-share-{share}"
                jobs.append({"id": job_id, "run": f"jobs/{job_id}", "model": model,
                             "texts": text_spec, "share": share, "config": config.to_dict(),
                             "analyses": analyses, **run_options})
    return jobs


def _list(spec, key, kind, default=None, allow_empty=False) -> list:
    if key not in spec:
        if default is None:
            raise ProtoscopeError(f"sweep file: '{key}' is required")
        return list(default)
    value = spec[key]
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise ProtoscopeError(f"sweep file: '{key}' must be a {kind.__name__} or a list of them, "
                              f"got {value!r}")
    if not values and not allow_empty:
        raise ProtoscopeError(f"sweep file: '{key}' is empty, so the grid has no jobs")
    if kind is int and min(values, default=1) < 1:
        raise ProtoscopeError(f"sweep file: '{key}' must be positive, got {value!r}")
    return values


def _int(spec, key, default, least) -> int:
    value = spec.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ProtoscopeError(f"sweep file: '{key}' must be an integer >= {least}, got {value!r}")
    return value


def _number(spec, key, default) -> float:
    value = spec.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ProtoscopeError(f"sweep file: '{key}' must be a positive number, got {value!r}")
    return float(value)


def _recipe(value):
    if isinstance(value, str):
        return resolve_recipe(value)
    if not isinstance(value, dict):
        raise ProtoscopeError(f"sweep file: 'recipe' must be a name or a table, got {value!r}")
    fields = dict(value)
    return resolve_recipe(fields.pop("name", "default"), **fields)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", pathlib.Path(text).name if os.sep in text else text)[:40]


# -- the sweep -------------------------------------------------------------------------------

def open_sweep(spec: dict, out, source: str | None = None) -> dict:
    """DIR/sweep.json for this plan: created, or resumed when DIR holds the same plan."""
    out = pathlib.Path(out)
    jobs = plan_sweep(spec)
    state_path = out / "sweep.json"
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            raise ProtoscopeError(f"{state_path} is unreadable; use another --out") from None
        old = [{k: j.get(k) for k in jobs[0]} for j in state.get("jobs", [])]
        if old != jobs:
            raise ProtoscopeError(f"{out} holds another sweep (its plan differs from this file's); "
                                  f"use another --out")
        return state
    out.mkdir(parents=True, exist_ok=True)
    state = {"sweep": spec, "file": source, "created": _now(),
             "jobs": [{**j, "status": "pending"} for j in jobs]}
    write_json(state_path, state)
    return state


def run_sweep(spec: dict, out, backend: str = "local", address: str | None = None,
              workers: int | None = None, device: str | None = None, source: str | None = None,
              echo: Callable[[str], None] | None = None,
              progress_seconds: float | None = 60.0) -> dict:
    """Run every unfinished job of the sweep; returns the final sweep.json content.

    `echo` takes the sweep's progress lines (default: stderr); `progress_seconds` is how often
    a job in flight reports its groups (`run_job`; None: never): through `echo` locally, on the
    worker's stderr under Ray."""
    if backend not in BACKENDS:
        raise ProtoscopeError(f"unknown backend {backend!r} (allowed: {', '.join(BACKENDS)})")
    if workers is not None and workers < 1:
        raise ProtoscopeError(f"--workers must be at least 1, got {workers}")
    if progress_seconds is not None and progress_seconds < 0:
        raise ProtoscopeError(f"--progress-seconds must be >= 0, got {progress_seconds:g}")
    if address and backend != "ray":
        raise ProtoscopeError("--address needs --backend ray")
    out = pathlib.Path(out)
    state = open_sweep(spec, out, source)
    todo = [j for j in state["jobs"] if j["status"] != "done"]
    tracker = Tracker(state, out, echo or (lambda line: print(line, file=sys.stderr, flush=True)))
    tracker.say(f"sweep: {len(state['jobs'])} jobs, {len(state['jobs']) - len(todo)} already done, "
                f"backend {backend}")
    try:
        with _sigterm_interrupts():
            backends.load(backend).run(todo, out, tracker, device=device,
                                       progress_seconds=progress_seconds, address=address,
                                       workers=workers)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (a scheduler's stop): the jobs in flight
        tracker.stopped()      # are marked stopped, not left `running`; their stores resume
        write_results(out, state)  # what they stored counts (the capacity table marks it partial)
        raise
    write_results(out, state)
    tracker.say(tracker.line("finished"))
    return state


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt here, as Ctrl-C does: without it the driver ended on
    the spot and sweep.json kept its jobs in flight as `running`. (Signals reach the main
    thread only; elsewhere this changes nothing.)"""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Tracker:
    """Keeps sweep.json's statuses and prints progress: jobs done / running / failed, and the
    solutions per hour this invocation fitted."""

    def __init__(self, state: dict, out: pathlib.Path, echo: Callable[[str], None]):
        self.state, self.out, self.say = state, out, echo
        self.by_id = {j["id"]: j for j in state["jobs"]}
        self.started_at, self.new = time.perf_counter(), 0
        self.running: set[str] = set()

    def started(self, job_id: str) -> None:
        self.running.add(job_id)
        self.by_id[job_id].update(status="running", started=_now())
        self._save()

    def finished(self, summary: dict) -> None:
        job = self.by_id[summary["id"]]
        self.running.discard(job["id"])
        job.update(summary, finished=_now(), error=None)
        self.new += summary.get("new", 0)
        self._save()
        write_results(self.out, self.state)
        self.say(self.line(f"{job['id']} done ({summary['new']} new solutions, "
                           f"{summary['seconds']:.1f} s, worker {summary['worker']})"))

    def failed(self, job_id: str, message: str) -> None:
        self.running.discard(job_id)
        first = (message.strip().splitlines() or ["failed"])[0]
        self.by_id[job_id].update(status="failed", error=first, finished=_now())
        self._save()
        self.say(self.line(f"{job_id} FAILED: {first}"))

    def stopped(self) -> None:
        """The sweep was interrupted: each job in flight is `stopped` (its run store keeps
        every solution stored, and the next sweep resumes it)."""
        for job_id in sorted(self.running):
            job = self.by_id[job_id]
            job.update(status="stopped", finished=_now(), error="stopped before it finished")
            try:
                job["solutions"] = stored(self.out / job["run"])
            except ProtoscopeError:
                pass
        self.running.clear()
        self._save()
        self.say(self.line("stopped"))

    def line(self, what: str) -> str:
        counts = {s: sum(j["status"] == s for j in self.state["jobs"]) for s in ("done", "failed")}
        hours = (time.perf_counter() - self.started_at) / 3600
        rate = self.new / hours if hours > 0 else 0.0
        return (f"sweep: {counts['done']}/{len(self.state['jobs'])} jobs done, "
                f"{len(self.running)} running, {counts['failed']} failed, {self.new} new solutions "
                f"({rate:.0f}/hour): {what}")

    def _save(self) -> None:
        self.state["updated"] = _now()
        write_json(self.out / "sweep.json", self.state)


def write_results(out, state: dict) -> pd.DataFrame:
    """DIR/results.parquet: one row per stored solution across every job of the sweep."""

    out, frames = pathlib.Path(out), []
    for job in state["jobs"]:
        path = out / job["run"]
        if not (path / "manifest.json").exists():
            continue
        store = RunStore.open(path)
        rows = store.solutions()
        if not len(rows):
            continue
        texts = {t.text_id: t for t in store.texts()}
        h_lm = [_h_lm(texts[t], int(n)) for t, n in zip(rows["text_id"], rows["length"])]
        rows = rows.assign(model=job["model"], source=rows["text_id"].map(
                               {t: text.source for t, text in texts.items()}),
                           run=job["run"], job=job["id"], kind=job["config"]["kind"],
                           h_lm_nats=h_lm, h_lm_bits=[h / math.log(2) for h in h_lm])
        frames.append(rows)
    table = (pd.concat(frames, ignore_index=True) if frames
             else pd.DataFrame({c: [] for c in RESULT_COLUMNS}))
    extra = [c for c in table.columns if c not in RESULT_COLUMNS]
    table = table[[c for c in RESULT_COLUMNS if c in table.columns] + extra]
    atomic_write(out / "results.parquet", lambda path: table.to_parquet(path, index=False))
    return table


def _h_lm(text, length: int) -> float:
    """H_LM (nats) of a text's first `length` tokens, NaN while the text is unscored: a job's
    fit scores its texts once it ends (geometry/scoring.ensure_scored), so only a job stopped
    before that leaves NaN here, and running the sweep again scores them."""
    if text.token_nll is None or len(text.token_nll) < length:
        return math.nan
    return text.h_lm(length)


def _now() -> str:
    return now()


def sweep(file, out, **options) -> dict:
    """`protoscope sweep FILE --out DIR` from Python: `file` a sweep TOML (or its table, read
    already); `options` those of `run_sweep` (backend, workers, device, ...)."""
    if isinstance(file, dict):
        return run_sweep(file, out, **options)
    return run_sweep(read_sweep_file(file), out, **{"source": str(file), **options})
