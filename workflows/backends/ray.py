"""How do a sweep's jobs run past one process? The Ray backend of `protoscope sweep`.

One Ray task per job (`jobs.run_job`), at most one per worker slot in flight: a CPU each, or a
GPU each when the cluster has GPUs. Ray reuses worker processes, and `run_job` keeps the models
a worker loaded, so a model loads once per worker, not once per job. A task whose worker dies
(killed, out of memory, node lost) is retried by Ray (`max_retries`); the retry opens the same
run store, which resumes, so nothing is fitted twice and no stored solution is lost. The run
directory must be on storage every worker sees (one machine, or a shared filesystem).
"""

from __future__ import annotations

import time

from ...geometry.errors import ProtoscopeError
from ..jobs import run_job

MAX_RETRIES = 3  # a job whose worker dies more often than this is marked failed
PROGRESS_EVERY_S = 30.0


def _ray():
    try:
        import ray
    except ImportError:
        raise ProtoscopeError("--backend ray needs Ray: pip install 'protoscope[ray]'") from None
    return ray


def _remote_job(job: dict, out: str, device: str | None, progress_seconds: float | None) -> dict:
    return run_job(job, out, device, progress_seconds)  # progress lines on the worker's stderr


def run(jobs: list[dict], out, tracker, *, address: str | None = None,
        workers: int | None = None, device: str | None = None,
        progress_seconds: float | None = None) -> None:
    """Run `jobs` on the cluster at `address` (or a local one with `workers` CPUs). With
    `progress_seconds`, each job's group lines are printed by its worker, and a Ray started here
    forwards worker output to this process (each line prefixed by Ray with the worker's pid)."""
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        options = {"include_dashboard": False, "log_to_driver": progress_seconds is not None}
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=workers, **options)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        slots = gpus or max(1, int(resources.get("CPU", 1)))
        remote = ray.remote(_remote_job).options(
            num_cpus=1, num_gpus=1 if gpus else 0, max_retries=MAX_RETRIES,
            retry_exceptions=[MemoryError, OSError])
        tracker.say(f"sweep: Ray cluster with {int(resources.get('CPU', 0))} CPUs, {gpus} GPUs: "
                    f"{slots} jobs at a time")
        _drive(ray, remote, list(jobs), str(out), device, slots, tracker, progress_seconds)
    finally:
        if started_here:
            ray.shutdown()


def _drive(ray, remote, queue, out, device, slots, tracker, progress_seconds=None) -> None:
    in_flight: dict = {}
    last_line = time.perf_counter()
    while queue or in_flight:
        while queue and len(in_flight) < slots:
            job = queue.pop(0)
            tracker.started(job["id"])
            in_flight[remote.remote(job, out, device, progress_seconds)] = job["id"]
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=PROGRESS_EVERY_S)
        for ref in ready:
            job_id = in_flight.pop(ref)
            try:
                tracker.finished(ray.get(ref))
            except ray.exceptions.RayTaskError as err:  # the job itself raised
                cause = getattr(err, "cause", None)
                tracker.failed(job_id, str(cause) if cause is not None else str(err))
            except ray.exceptions.RayError as err:  # the worker died more than MAX_RETRIES times
                tracker.failed(job_id, f"{type(err).__name__}: {str(err).strip().splitlines()[0]}")
        if not ready or time.perf_counter() - last_line > PROGRESS_EVERY_S:
            tracker.say(tracker.line("working"))
            last_line = time.perf_counter()
