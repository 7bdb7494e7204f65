"""How do the stages' costs grow with the size of a run?

`store`: append throughput of the run store at sizes N (synthetic vectors of the default
model's width, no model): the store is first filled to N solutions in one bulk append (and
written back to disk: `os.sync`), then `appends` single-solution appends are timed (a fit appends each finished group, one solution
per group without sharing), and the rate is solutions/s at that size. A store whose append
rewrites everything slows down as N grows; an append-only one stays flat.

`stages`: fit (one optimiser step per text), analyze (uniqueness by default: the pair
analysis, the one that grew with n^2) and report on the default model at 1,000 and 10,000
texts (seeds 1, length 4): wall time and peak memory (ru_maxrss of a fresh process per stage),
the fit's solutions/s over its first and last 1,000 solutions (its parts index read every 2 s),
the report's size and its load time in headless Chromium, and the growth exponent of each
stage between sizes (log(t2 / t1) / log(n2 / n1): 1 is linear, 2 quadratic).

    OMP_NUM_THREADS=1 nice -n 10 python -m protoscope.bench.scale store --sizes 1000 10000 100000 --save NAME
    OMP_NUM_THREADS=1 nice -n 10 python -m protoscope.bench.scale stages --sizes 1000 10000 --save NAME
    OMP_NUM_THREADS=1 nice -n 10 python -m protoscope.bench.scale report --sizes 1000 10000 --save NAME

`report`: the report alone, on a synthetic run of N solutions (random vectors, no model;
uniqueness and PCA maps computed): build seconds, size, load time in headless Chromium.
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
    from protoscope.geometry.store.runstore import RunStore
    from protoscope.geometry.store.texts import Text

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


def _stage(argv: list[str], env: dict, watch: Path | None = None, on_trace=None) -> dict:
    """One stage in a fresh process: wall seconds and that process's peak resident memory.

    With `watch` (a run folder being fitted), its parts index is read every 2 s: how many
    solutions were stored when, for the fit's solutions/s at its start and at its end."""
    script = ("import resource, sys, time; from protoscope.cli import main; t = time.perf_counter(); "
              "rc = main(sys.argv[1:]); print('STAGE', time.perf_counter() - t, "
              "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr); sys.exit(rc)")
    started = time.perf_counter()
    # to files, not pipes: a fit's progress lines fill a pipe nobody reads until it ends
    out_file, err_file = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-c", script, *argv], env=env, stdout=out_file,
                            stderr=err_file, text=True)
    trace = []
    if watch is not None:
        index = watch / "parts" / "index.json"
        while proc.poll() is None:
            time.sleep(2)
            try:
                trace.append((round(time.perf_counter() - started, 1), _stored(watch, index)))
            except (OSError, ValueError, KeyError):
                continue
            if on_trace is not None and len(trace) % 15 == 0:  # every 30 s
                on_trace({"stored_over_time": trace, **_rates(trace)})
    proc.wait()
    wall = time.perf_counter() - started
    err_file.seek(0)
    stderr = err_file.read()
    out_file.close()
    err_file.close()
    if proc.returncode:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {stderr[-2000:]}")
    line = [ln for ln in stderr.splitlines() if ln.startswith("STAGE ")][-1].split()
    out = {"seconds": round(float(line[1]), 1), "process_seconds": round(wall, 1),
           "peak_mb": round(float(line[2]), 0), "stderr_tail": stderr[-600:]}
    if trace:
        out["stored_over_time"] = trace
        out.update(_rates(trace))
    return out


def _stored(run: Path, index: Path) -> int:
    """Solutions stored so far: from the parts index, or (a store that rewrites one file, as
    before parts) from solutions.parquet's footer."""
    if index.exists():
        return json.loads(index.read_text())["next_solution_id"]
    import pyarrow.parquet as pq

    return pq.read_metadata(run / "solutions.parquet").num_rows


def _rates(trace: list[tuple[float, int]], window: int = 1000) -> dict:
    """Solutions/s over the first and the last `window` solutions stored (from the trace)."""
    # the first time each count was seen: a plateau (H_LM scoring after the last step, or the
    # final compaction) is not the fit's rate
    trace = [(t, n) for i, (t, n) in enumerate(trace) if n > 0 and (i == 0 or n != trace[i - 1][1])]
    if len(trace) < 2:
        return {}
    total = trace[-1][1]
    window = min(window, max(1, total // 4))

    def rate(points):
        (t0, n0), (t1, n1) = points[0], points[-1]
        return round((n1 - n0) / (t1 - t0), 1) if t1 > t0 else None
    first = [p for p in trace if p[1] <= trace[0][1] + window] or trace[:2]
    last = [p for p in trace if p[1] >= total - window] or trace[-2:]
    return {"solutions_per_second_start": rate(first if len(first) > 1 else trace[:2]),
            "solutions_per_second_end": rate(last if len(last) > 1 else trace[-2:]),
            "rate_window": window}


def open_in_chromium(page: Path) -> dict | None:
    """Seconds from starting headless Chromium to the page's load event (its scripts run, every
    figure drawn), or None without Chromium."""
    import re
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return None
    probe = ('<script>window.addEventListener("load", function () { document.documentElement.'
             'setAttribute("data-loaded-ms", String(performance.now())); });</script>')
    copy = page.with_name("timed-" + page.name)
    copy.write_text(page.read_text().replace("</body>", probe + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with tempfile.TemporaryDirectory() as profile:
        started = time.perf_counter()
        done = subprocess.run([browser, *flags, f"--user-data-dir={profile}", "--dump-dom",
                               copy.resolve().as_uri()], capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - started
    copy.unlink()
    loaded = re.search(r'data-loaded-ms="([0-9.]+)"', done.stdout)
    return {"chromium_seconds": round(wall, 2),
            "load_event_seconds": round(float(loaded.group(1)) / 1000, 2) if loaded else None}


def bench_stages(sizes: list[int], folder: Path, only: str, model: str | None = None,
                 partial: Path | None = None) -> dict:
    """The stages at each size; with `partial`, the rows so far are written there after every
    stage (a long run stopped early keeps what it measured)."""
    from .prepare_texts import write_texts

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = []

    def keep(row):
        if partial is not None:
            partial.write_text(json.dumps({"rows": rows + [row]}, indent=1) + "\n")
    for size in sizes:
        texts = write_texts(folder / f"texts-{size}.jsonl", count=size)
        run = folder / f"run-{size}"
        row = {"solutions": size}
        keep(row)
        row["fit"] = _stage(["fit", "--texts", str(texts), "--length", "4", "--seeds", "1",
                             "--max-steps", "1", "--out", str(run), "--quiet", "--threads", "1",
                             *(["--model", model] if model else [])],
                            env, watch=run, on_trace=lambda t: keep({**row, "fit_so_far": t}))
        keep(row)
        row["analyze"] = _stage(["analyze", str(run), "--only", only, "--quiet"], env)
        keep(row)
        row["report"] = _stage(["report", str(run)], env)
        row["report_mb"] = round((run / "report.html").stat().st_size / 2**20, 2)
        row["report_open"] = open_in_chromium(run / "report.html")
        rows.append(row)
        keep({"solutions": None})
        print(json.dumps(row), flush=True)
    growth = {}
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        for stage in ("fit", "analyze", "report"):
            growth[stage] = round(math.log(b[stage]["seconds"] / max(a[stage]["seconds"], 1e-3))
                                  / math.log(b["solutions"] / a["solutions"]), 2)
    return {"rows": rows, "growth_exponent": growth, "analyses": only}


def synthetic_run(folder: Path, size: int, d: int = 64) -> Path:
    """A run of `size` solutions of `size` texts with random vectors, no model: its uniqueness
    tables (TF-IDF only) and PCA maps computed, for the report's cost alone."""
    import numpy as np

    from protoscope.analysis import neighbourhoods, uniqueness
    from protoscope.geometry.store.runstore import RunStore
    from protoscope.geometry.store.texts import Text

    rng = np.random.default_rng(0)
    texts = [Text(f"line-{i:05d}", "file", None, f"text number {i} word{i % 97} other{i % 13}",
                  tuple(int(x) for x in rng.integers(5, 500, 4))) for i in range(size)]
    store = RunStore.create(folder, {"model": {"name": "synthetic", "d_model": d},
                                     "config": {"lengths": [4], "seeds": 1}}, texts)
    rows = [{**_row(i), "text_id": t.text_id, "e_row": i, "m_row": i,
             "accuracy": float(rng.random() > 0.5)} for i, t in enumerate(texts)]
    with store.lock():
        store.append(rows, torch.randn(size, d), torch.randn(size, d))
    store.update_manifest(status="complete")
    for name, table in uniqueness.analyze(store, None, semantic=False).items():
        store.write_analysis(name, table)
    r, e, m = store.solution_vectors()
    store.write_analysis("maps", neighbourhoods.map_table(r, e, m, {t.text_id: "file" for t in texts},
                                                          umap=False))
    return folder


def bench_report(sizes: list[int], folder: Path) -> dict:
    from protoscope.reports.report import build_report

    rows = []
    for size in sizes:
        run = synthetic_run(folder / f"synthetic-{size}", size)
        started = time.perf_counter()
        page = build_report(run)
        row = {"solutions": size, "build_seconds": round(time.perf_counter() - started, 1),
               "report_mb": round(page.stat().st_size / 2**20, 2), **(open_in_chromium(page) or {})}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["store", "stages", "report"])
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds of appends at most per size (store)")
    parser.add_argument("--only", default="uniqueness",
                        help="analyses for the stages benchmark (the others run the model on "
                             "every solution: linear, and hours at 10,000 on one CPU thread)")
    parser.add_argument("--keep", default=None, help="folder for the stages' runs (kept)")
    parser.add_argument("--model", default=None, help="stages: another model than the default")
    parser.add_argument("--save", default=None, help="write bench/results/NAME.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.what == "store":
        result = bench_store(args.sizes or [1000, 10_000, 100_000], args.appends, args.budget)
    elif args.what == "report":
        with tempfile.TemporaryDirectory(prefix="protoscope-scale-") as tmp:
            result = bench_report(args.sizes or [1000, 10_000], Path(tmp))
    else:
        if args.keep:
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            partial = RESULTS / f"{args.save}.partial.json" if args.save else None
            result = bench_stages(args.sizes or [1000, 10_000], Path(args.keep), args.only, args.model,
                                  partial)
        else:
            with tempfile.TemporaryDirectory(prefix="protoscope-scale-") as tmp:
                result = bench_stages(args.sizes or [1000, 10_000], Path(tmp), args.only, args.model)
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
