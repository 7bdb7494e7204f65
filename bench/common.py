"""What every benchmark needs: the model, the texts, fitting a list of problems, and results.

Convergence numbers (steps, success) do not depend on timing, so those jobs may run side by
side in worker processes (`run_jobs`); anything timed runs alone in the calling process and is
compared only with numbers measured in the same run, because the machine may be shared.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import torch

from protoscope.geometry.engine.decoder import Decoder
from protoscope.geometry.engine.fitting import Fitter, Problem, Solution
from protoscope.geometry.models.loading import DEFAULT_MODEL, load_model
from protoscope.geometry.engine.recipes import resolve_recipe
from protoscope.geometry.store.texts import load_texts

RESULTS = Path(__file__).resolve().parent / "results"


_CURRENT = {"model": DEFAULT_MODEL}


def use_model(name: str) -> None:
    """Make `name` the model that `model()`, `texts()` and `fit()` use in this process."""
    _CURRENT["model"] = name


def model(name: str | None = None):
    """The frozen model (by default the one `use_model` chose), loaded once per process."""
    return _load(name or _CURRENT["model"])


@functools.lru_cache(maxsize=2)
def _load(name: str):
    return load_model(name)


def texts(spec: str = "builtin", count: int = 4, offset: int = 0, with_nll: bool = False,
          **kwargs) -> list:
    """`count` texts of a spec from position `offset` (held-out checks use other texts)."""
    return load_texts(spec, model(), with_nll=with_nll, **kwargs)[offset:offset + count]


def problems(chosen: Sequence, seeds: int, length: int) -> list[Problem]:
    """One problem per (text, seed): the same list for every recipe compared."""
    return [Problem(t.text_id, s, t.prefix(length)) for t in chosen for s in range(seeds)]


def fit(arrangement: str, recipe, chosen: Sequence[Problem], batch_size: int | None = None,
        on_step: Callable | None = None, label: str | None = None) -> list[Solution]:
    """Solve `chosen` with the batched engine; solutions in the order of `chosen`.

    With a `label`, each finished problem is logged to stderr (long runs can be followed).
    """
    progress = functools.partial(_log_group, label) if label else None
    fitter = Fitter(Decoder(model(), arrangement), recipe, batch_size=batch_size,
                    on_step=on_step, progress=progress)
    found = {(s.problem.text_id, s.problem.seed, s.problem.length): s
             for group in fitter.fit(chosen) for s in group.solutions}
    return [found[(p.text_id, p.seed, p.length)] for p in chosen]


def _log_group(label: str, group) -> None:
    for s in group.solutions:
        print(f"[{time.strftime('%H:%M:%S')}] {label}: {s.problem.text_id} seed {s.problem.seed} "
              f"n={s.problem.length} {s.status} steps={s.steps} restarts={s.restarts} "
              f"acc={s.accuracy:.3f}", file=sys.stderr, flush=True)


def recipe(name: str, **overrides):
    return resolve_recipe(name, **overrides)


def outcome(s: Solution, budget: int) -> dict:
    """One problem's result; a problem that did not converge counts as the whole budget (or the
    steps it spent, where a length curriculum's earlier stages took it past the budget)."""
    return {"text_id": s.problem.text_id, "seed": s.problem.seed, "length": s.problem.length,
            "converged": s.converged, "status": s.status, "steps": s.steps,
            "steps_counted": s.steps if s.converged else max(s.steps, budget), "restarts": s.restarts,
            "accuracy": round(s.accuracy, 4)}


def summary(rows: Sequence[dict]) -> dict:
    """Median steps to exact (budget for failures), success rate and mean best accuracy."""
    if not rows:
        return {"median_steps": None, "success_rate": None, "mean_accuracy": None, "problems": 0}
    return {
        "median_steps": statistics.median(r["steps_counted"] for r in rows),
        "success_rate": sum(r["converged"] for r in rows) / len(rows),
        "mean_accuracy": round(statistics.fmean(r["accuracy"] for r in rows), 4),
        "problems": len(rows),
    }


# ---------------------------------------------------------------- worker processes


def _worker_init(threads: int) -> None:
    # Several single-thread workers keep both cores busy even when one job is down to a
    # last straggling problem (a batch of one uses a core poorly).
    torch.set_num_threads(threads)


def run_jobs(jobs: Sequence[tuple[Callable, dict]], workers: int | None = None,
             threads: int = 1, on_result: Callable | None = None) -> list:
    """Run (function, kwargs) jobs in spawned worker processes; results in job order.
    `on_result(value)` is called in this process as each job finishes (in finishing order)."""
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        results = []
        for fn, kw in jobs:
            results.append(fn(**kw))
            if on_result:
                on_result(results[-1])
        return results
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                             initializer=_worker_init, initargs=(threads,)) as pool:
        futures = [pool.submit(fn, **kw) for fn, kw in jobs]
        if on_result:
            for f in as_completed(futures):
                on_result(f.result())
        return [f.result() for f in futures]


# ---------------------------------------------------------------- results


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "processor": _cpu_name(),
            "load_average_at_start": os.getloadavg()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_result(name: str, data: dict) -> Path:
    """bench/results/<name>.json, written atomically so a killed run leaves the old file."""
    path = RESULTS / f"{name}.json"
    write_atomic(path, data)
    return path


class Checkpoint:
    """The finished parts of a long run, kept in `<results>/<name>.partial.json` after each part,
    so an interrupted run started again with the same settings resumes where it stopped and
    loses nothing it finished. Each part's wall and CPU seconds (this process and its reaped
    children) are kept with it; `path=None` keeps parts in memory only (smoke runs)."""

    def __init__(self, path: Path | None, settings: dict):
        self.path, self.settings = path, _json(settings)
        self.parts: dict = {}
        self.costs: dict = {}
        if path is not None and path.exists():
            saved = json.loads(path.read_text())
            if saved.get("settings") == self.settings:
                self.parts, self.costs = saved["parts"], saved["costs"]
        self.reused = sorted(self.parts)

    def part(self, key: str, compute: Callable[[], object]):
        """`compute()`'s value, or the one a previous run with these settings kept (as JSON)."""
        if key in self.parts:
            print(f"{key}: kept from an interrupted run, not measured again", file=sys.stderr, flush=True)
            return self.parts[key]
        wall0, cpu0 = time.perf_counter(), _cpu_seconds()
        value = _json(compute())
        self.parts[key] = value
        self.costs[key] = {"seconds": time.perf_counter() - wall0, "cpu_seconds": _cpu_seconds() - cpu0}
        if self.path is not None:
            write_atomic(self.path, {"settings": self.settings, "parts": self.parts, "costs": self.costs})
        return value

    def finish(self) -> None:
        """The whole run is written: the partial file has served."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _json(x):
    """`x` as it reads back from JSON (tuples as lists, keys as strings): a resumed run and a
    fresh one then hand the same values to the code after them."""
    return json.loads(json.dumps(x, default=_plain))


def write_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_plain) + "\n")
    os.replace(tmp, path)


def _plain(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return str(x)


def problem_arguments(parser, name: str):
    """The options every convergence-style benchmark shares: which problems, what budget cap,
    which result file."""
    parser.add_argument("--texts", type=int, default=4, help="built-in texts (default 4)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--cap", type=int, default=None, help="cap on every recipe's budget")
    parser.add_argument("--name", default=name, help=f"result file name (default {name})")
    return parser


def command_line() -> str:
    """The command that reproduces this run, as `python -m protoscope.bench.NAME ARGS`."""
    if not sys.argv:
        return ""
    module = f"protoscope.bench.{Path(sys.argv[0]).stem}"
    return " ".join(["python", "-m", module, *sys.argv[1:]])


def table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A plain fixed-width table of `columns` (floats to 3 significant decimals)."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "-" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


class Clock:
    """Wall and process CPU seconds of a block (CPU/wall near the thread count: not starved)."""

    def __enter__(self):
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0
