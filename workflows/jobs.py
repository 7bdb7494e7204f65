"""What does one job of a sweep do, wherever it runs? Fit (or climb), analyse, report back.

`run_job(job, out)` is the one job sequence every backend calls (workflows/backends/): the
job's run store under `out` is fitted or resumed through `pipeline.fit_and_analyze` (a capacity
grid through the capacity search), its analyses run, and a summary dict comes back. A worker
keeps the models it loaded (`_MODEL_CACHE_SIZE`), so a model loads once per worker.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import time
from collections import OrderedDict
from collections.abc import Callable

import torch

from ..analysis.progress import silent
from ..geometry.engine.recipes import Recipe
from ..geometry.models.loading import load_model
from ..geometry.runs.fit import RunConfig, use_threads
from ..geometry.store.runstore import RunStore
from ..progress import Progress
from . import pipeline

FAULT_ENV = "PROTOSCOPE_SWEEP_FAULT"  # tests: "JOB_ID:MARKER" kills that job's worker once
_MODEL_CACHE_SIZE = 2  # models a worker keeps loaded between jobs
_MODELS: OrderedDict = OrderedDict()


def job_config(job: dict) -> RunConfig:
    fields = dict(job["config"])
    fields.update(lengths=tuple(fields["lengths"]), methods=tuple(fields["methods"]),
                  recipe=Recipe(**fields["recipe"]))
    return RunConfig(**fields)


def _model(name: str, dtype: str, device: str):
    """The worker's loaded copy of a model (loaded once, reused by its later jobs)."""
    key = (name, dtype, device)
    if key not in _MODELS:
        while len(_MODELS) >= _MODEL_CACHE_SIZE:
            _MODELS.popitem(last=False)
        _MODELS[key] = load_model(name, device=device, dtype=dtype)
    _MODELS.move_to_end(key)
    return _MODELS[key]


def worker_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_job(job: dict, out, device: str | None = None, progress_seconds: float | None = None,
            echo: Callable[[str], None] | None = None) -> dict:
    """Fit (or resume) one job's run store under `out`, then its analyses; returns its summary.

    With `progress_seconds`, every that many seconds one line per job with its groups in
    flight (steps, worst member's accuracy, members exact), then with its analyses' progress
    (curves trained, paths walked, ...), and for a capacity grid one line per length climbed,
    each naming the job: to `echo`, else to this process's stderr (a Ray worker's, which Ray
    forwards to the driver)."""
    use_threads(job.get("threads"))
    device = device or worker_device()
    config, path = job_config(job), pathlib.Path(out) / job["run"]
    started = time.perf_counter()
    before = stored(path)
    loaded = _model(job["model"], config.dtype, device)
    progress = (Progress(quiet=True, desc=f"job {job['id']}", every=progress_seconds, echo=echo)
                if progress_seconds is not None else Progress(quiet=True, every=float("inf"),
                                                              echo=lambda line: None))
    say = (lambda line: progress.echo(f"protoscope: job {job['id']}: {line}")) \
        if progress_seconds is not None else None
    pipeline.fit_and_analyze(
        path, config, analyses=job.get("analyses") or (), device=device, loaded=loaded,
        batch_size=job.get("batch_size"), quiet=True, progress=progress,
        on_group=_fault(job["id"]), say=say,
        analysis_progress=progress.on_analysis if progress_seconds is not None else silent,
        checkpoint_every=tuple(job.get("checkpoint_every") or (50, 60.0)))
    total = stored(path)
    return {"id": job["id"], "status": "done", "solutions": total, "new": total - before,
            "seconds": round(time.perf_counter() - started, 2),
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


def stored(path: pathlib.Path) -> int:
    """Solutions a job's run store holds (0 before it exists)."""
    if not (path / "manifest.json").exists():
        return 0
    return len(RunStore.open(path).solutions())


def _fault(job_id: str) -> Callable | None:
    """Fault injection for the retry tests: with PROTOSCOPE_SWEEP_FAULT="JOB_ID:MARKER", the
    worker running JOB_ID kills itself (SIGKILL, as an OOM killer or a lost node would) right
    after its first group is stored, once: the marker file records that it happened."""
    target, _, marker = os.environ.get(FAULT_ENV, "").partition(":")
    if target != job_id or not marker or os.path.exists(marker):
        return None

    def kill(group) -> None:
        pathlib.Path(marker).write_text(f"killed {job_id} in {os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
    return kill
