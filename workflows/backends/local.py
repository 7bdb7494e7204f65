"""How do a sweep's jobs run on this machine alone? One after another, in this process."""

from __future__ import annotations

from ...geometry.errors import ProtoscopeError
from ..jobs import run_job


def run(jobs, out, tracker, *, device=None, progress_seconds=None, address=None,
        workers=None) -> None:
    """Each job in turn (`address` and `workers` are a cluster's; here they mean nothing);
    a job that fails in one line is marked failed and the next one runs."""
    for job in jobs:
        tracker.started(job["id"])
        try:
            tracker.finished(run_job(job, out, device, progress_seconds, tracker.say))
        except ProtoscopeError as err:
            tracker.failed(job["id"], str(err))
