"""How do the stages' costs grow with the size of a run?

`store`: append throughput of the run store at sizes N (synthetic vectors of the default
model's width, no model): the store is first filled to N solutions in one bulk append (and
written back to disk: `os.sync`), then `appends` single-solution appends are timed (a fit appends each finished group, one solution
per group without sharing), and the rate is solutions/s at that size. A store whose append
rewrites everything slows down as N grows; an append-only one stays flat.

`stages`: fit (one optimiser step per text), analyze and report on the default model at
1,000 and 10,000 texts (seeds 1, length 4): wall time and peak memory (VmHWM of a fresh
process per stage), and the growth exponent of each stage between sizes
(log(t2 / t1) / log(n2 / n1): 1 is linear, 2 quadratic).

    OMP_NUM_THREADS=1 nice -n 10 python -m protoscope.bench.scale store --sizes 1000 10000 100000 --save NAME
    OMP_NUM_THREADS=1 nice -n 10 python -m protoscope.bench.scale stages --sizes 1000 10000 --save NAME
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
D_MODEL = 576  # the default model's width: the size of a real run's vectors


def _row(i: int) -> dict:
    return {"text_id": f"line-{i:06d}", "seed": 0, "length": 4, "arrangement": "bos e m*",
            "share": "none", "share_group": -1, "e_row": 0, "m_row": 0, "accuracy": 1.0,
            "c_tokens": 4, "loss": 0.1, "steps": 1, "restarts": 0, "seconds": 0.5,
            "converged": False, "status": "budget", "failure": None, "init_from": -1,
            "recipe": "default", "method": "one-step"}


def _bulk(rows: list[dict]) -> list[dict]:
    return [{**r, "e_row": i, "m_row": i} for i, r in enumerate(rows)]


def store_throughput(size: int, appends: int, folder: Path) -> dict:
    """Fill a store to `size` solutions, then time `appends` single-solution appends."""
    from protoscope.geometry.store import RunStore
    from protoscope.geometry.texts import Text

    g = torch.Generator().manual_seed(size)
    store = RunStore.create(folder / f"store-{size}", {"model": {"name": "synthetic", "d_model": D_MODEL}},
                            [Text("line-000000", "file", None, "a text", (1, 2, 3, 4))])
    with store.lock():
        started = time.perf_counter()
        if size:
            store.append(_bulk([_row(i) for i in range(size)]),
                         torch.randn(size, D_MODEL, generator=g), torch.randn(size, D_MODEL, generator=g))
        fill = time.perf_counter() - started
        os.sync()  # the fill's hundreds of MB would otherwise be written back during the timing
        times = []
        for i in range(appends):
            e, m = torch.randn(1, D_MODEL, generator=g), torch.randn(1, D_MODEL, generator=g)
            t0 = time.perf_counter()
            store.append([_row(size + i)], e, m)
            times.append(time.perf_counter() - t0)
    started = time.perf_counter()
    n = len(RunStore.open(store.path).solutions())
    read = time.perf_counter() - started
    assert n == size + appends, (n, size, appends)
    total = sum(times)
    return {"size": size, "appends": appends, "solutions_per_second": round(appends / total, 1),
            "median_append_ms": round(1000 * sorted(times)[len(times) // 2], 2),
            "max_append_ms": round(1000 * max(times), 2), "fill_seconds": round(fill, 2),
            "open_seconds": round(read, 2)}


def bench_store(sizes: list[int], appends: int, budget: float) -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="protoscope-scale-") as tmp:
        for size in sizes:
            # An append that rewrites everything gets slow at large sizes: fewer appends there,
            # within `budget` seconds (estimated from the size before).
            count = appends
            if rows and rows[-1]["median_append_ms"] * appends / 1000 * size / rows[-1]["size"] > budget:
                per = rows[-1]["median_append_ms"] / 1000 * size / rows[-1]["size"]
                count = max(5, int(budget / per))
            rows.append(store_throughput(size, count, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    rates = [r["solutions_per_second"] for r in rows]
    return {"rows": rows, "flat_within_2x": max(rates) / min(rates) <= 2,
            "largest_over_smallest_rate": round(rates[-1] / rates[0], 3)}


# ------------------------------------------------------------------------------ real stages

def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _stage(argv: list[str], env: dict) -> dict:
    """One stage in a fresh process: wall seconds and that process's peak resident memory."""
    script = ("import resource, sys, time; from protoscope.cli import main; t = time.perf_counter(); "
              "rc = main(sys.argv[1:]); print('STAGE', time.perf_counter() - t, "
              "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr); sys.exit(rc)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *argv], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("STAGE ")][-1].split()
    return {"seconds": round(float(line[1]), 1), "process_seconds": round(wall, 1),
            "peak_mb": round(float(line[2]), 0), "stderr_tail": done.stderr[-600:]}


def bench_stages(sizes: list[int], folder: Path, only: str) -> dict:
    from .prepare_texts import write_texts

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = []
    for size in sizes:
        texts = write_texts(folder / f"texts-{size}.jsonl", count=size)
        run = folder / f"run-{size}"
        row = {"solutions": size}
        row["fit"] = _stage(["fit", "--texts", str(texts), "--length", "4", "--seeds", "1",
                             "--max-steps", "1", "--out", str(run), "--quiet", "--threads", "1"], env)
        row["analyze"] = _stage(["analyze", str(run), "--only", only, "--quiet"], env)
        row["report"] = _stage(["report", str(run)], env)
        row["report_mb"] = round((run / "report.html").stat().st_size / 2**20, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    growth = {}
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        for stage in ("fit", "analyze", "report"):
            growth[stage] = round(math.log(b[stage]["seconds"] / max(a[stage]["seconds"], 1e-3))
                                  / math.log(b["solutions"] / a["solutions"]), 2)
    return {"rows": rows, "growth_exponent": growth, "analyses": only}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["store", "stages"])
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds of appends at most per size (store)")
    parser.add_argument("--only", default="uniqueness,neighbourhoods,information",
                        help="analyses for the stages benchmark")
    parser.add_argument("--keep", default=None, help="folder for the stages' runs (kept)")
    parser.add_argument("--save", default=None, help="write bench/results/NAME.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.what == "store":
        result = bench_store(args.sizes or [1000, 10_000, 100_000], args.appends, args.budget)
    else:
        if args.keep:
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            result = bench_stages(args.sizes or [1000, 10_000], Path(args.keep), args.only)
        else:
            with tempfile.TemporaryDirectory(prefix="protoscope-scale-") as tmp:
                result = bench_stages(args.sizes or [1000, 10_000], Path(tmp), args.only)
    result = {"command": " ".join(["python -m protoscope.bench.scale", *(argv or sys.argv[1:])]),
              "machine": platform.platform(), "cpus": os.cpu_count(),
              "threads": torch.get_num_threads(), "d_model": D_MODEL, **result}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.save}.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
