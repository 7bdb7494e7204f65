"""Where do a sweep's jobs run? One module per backend, behind one small interface.

A backend is a module of this package with

    def run(jobs: list[dict], out: pathlib.Path, tracker, *, device: str | None,
            progress_seconds: float | None, address: str | None, workers: int | None) -> None

that runs every job of `jobs` through `workflows.jobs.run_job(job, out, device,
progress_seconds, echo)` and tells `tracker` (workflows/sweep.Tracker) of each:
`tracker.started(job_id)` before it starts, `tracker.finished(summary)` with run_job's summary,
`tracker.failed(job_id, message)` when it raised (message: one line) or its worker was lost;
`tracker.say(line)` prints a progress line. An interrupted backend lets KeyboardInterrupt pass:
the sweep marks the jobs in flight stopped, and their run stores resume. A job's run store is
its own resume point, so a backend may retry a job whose worker died.

Adding one: a module here with `run`, its name in NAMES, an optional extra in pyproject.toml
if it needs a package (import it inside `run`, with a one-line error when it is missing).
"""

from __future__ import annotations

import importlib

from ...geometry.errors import ProtoscopeError

NAMES = ("local", "ray")


def load(name: str):
    """The backend module `name` (a one-line error naming the ones there are)."""
    if name not in NAMES:
        raise ProtoscopeError(f"unknown backend {name!r} (allowed: {', '.join(NAMES)})")
    return importlib.import_module(f"{__name__}.{name}")
