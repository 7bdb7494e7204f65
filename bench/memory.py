"""How much memory does fitting take, and how does it grow with batch size and text length?

Each (batch, length) point runs in its own process so the peaks are separate. After the model
is loaded and has run once (its weights are memory-mapped and only become resident when first
used), the process resets its high-water mark (Linux `clear_refs` 5), so the peak reported is
that of fitting itself, not of loading; the peak resident set during fitting
(VmHWM) is reported with the resident set after loading, and their difference as the fitting's
own working memory. Where the reset is refused, getrusage's maxrss (which includes loading) is
used and the result says so.

    python -m protoscope.bench.memory --points 1x16 8x16 32x16 8x64 8x128
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

from protoscope.geometry.engine.decoder import Decoder

from . import common


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_here(batch: int, length: int, steps: int) -> dict:
    """Fit `batch` problems of `length` tokens for `steps` steps in this process; peak memory."""
    from .throughput import _problems, fixed_work_recipe

    loaded = common.model()
    chosen = _problems(batch, length)
    # The weights are memory-mapped and page in on first use (~400 MB for the default model):
    # touch them all once, so the baseline holds the whole model and the peak is fitting's own.
    zeros = torch.zeros(1, loaded.info.d_model)
    Decoder(loaded, "e*")(zeros, zeros, torch.zeros(1, 1, dtype=torch.long))
    gc.collect()
    reset = _reset_peak()
    after_load = _status_kb("VmRSS")
    common.fit("bos e m*", fixed_work_recipe(steps), chosen, batch_size=batch)
    peak = _status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"batch": batch, "length": length, "steps": steps, "rss_after_load_mb": after_load / 1024,
            "peak_rss_mb": peak / 1024, "fitting_mb": (peak - after_load) / 1024,
            "peak_source": "VmHWM after reset" if reset else "ru_maxrss (includes loading)"}


def measure(points, steps: int = 2) -> list[dict]:
    """One subprocess per (batch, length); each prints its result as the last line."""
    results = []
    for batch, length in points:
        cmd = [sys.executable, "-m", "protoscope.bench.memory", "--here",
               "--points", f"{batch}x{length}", "--steps", str(steps)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def growth(results: list[dict]) -> dict:
    """MB of fitting memory per extra problem (at the shortest length) and per extra token."""
    out = {}
    shortest = min(r["length"] for r in results)
    by_batch = sorted((r for r in results if r["length"] == shortest), key=lambda r: r["batch"])
    if len(by_batch) >= 2:
        a, b = by_batch[0], by_batch[-1]
        out[f"mb_per_problem_at_length_{shortest}"] = (b["fitting_mb"] - a["fitting_mb"]) / (b["batch"] - a["batch"])
    batch8 = sorted((r for r in results if r["batch"] == 8), key=lambda r: r["length"])
    if len(batch8) >= 2:
        a, b = batch8[0], batch8[-1]
        out["mb_per_target_token_at_batch_8"] = (b["fitting_mb"] - a["fitting_mb"]) / (b["length"] - a["length"]) / 8
    return out


def _point(text: str) -> tuple[int, int]:
    batch, length = text.lower().split("x")
    return int(batch), int(length)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", nargs="+", default=["1x16", "8x16", "32x16", "8x64", "8x128"],
                    help="BATCHxLENGTH")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--here", action="store_true", help="measure one point in this process")
    args = ap.parse_args(argv)
    points = [_point(p) for p in args.points]
    if args.here:
        print(json.dumps(measure_here(*points[0], args.steps)))
        return
    results = measure(points, args.steps)
    print(common.table(results, ["batch", "length", "rss_after_load_mb", "peak_rss_mb", "fitting_mb"]))
    print(growth(results))


if __name__ == "__main__":
    main()
