"""Render a page in headless Debian Chromium and read back what a user would see.

`dump_dom` returns the DOM after the page's scripts ran (and Chromium's log, where uncaught
errors show up); `screenshot` writes a PNG; `png_pixels` decodes a PNG with the standard
library and numpy (Pillow is not a dependency), so a test can tell a blank page from a
rendered one. `with_probe` appends a script that reports `window.__pwned` into the DOM.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Virtual time lets Plotly's deferred drawing and the probe's timer finish without waiting
# for them in real time.
BUDGET_MS = 5000
TIMEOUT_S = 60

PROBE = ('<script>setTimeout(function () { document.documentElement.setAttribute('
         '"data-pwned", String(window.__pwned === 1)); }, 1000);</script>')


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _command(page: Path, *extra: str) -> tuple[list[str], tempfile.TemporaryDirectory]:
    profile = tempfile.TemporaryDirectory(prefix="protoscope-chromium-")
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile.name}",
           f"--virtual-time-budget={BUDGET_MS}", *extra, Path(page).resolve().as_uri()]
    return cmd, profile


def start_dump_dom(page: Path) -> tuple[subprocess.Popen, tempfile.TemporaryDirectory]:
    """Start Chromium dumping the DOM of `page`; finish with `finish`. Runs beside others."""
    cmd, profile = _command(page, "--enable-logging=stderr", "--v=0", "--dump-dom")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, profile


def start_screenshot(page: Path, png: Path, size: tuple[int, int] = (1400, 2400)):
    cmd, profile = _command(page, f"--window-size={size[0]},{size[1]}",
                            f"--screenshot={Path(png).resolve()}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, profile


def finish(started) -> tuple[str, str]:
    """(stdout, stderr) of a started Chromium; kills it past TIMEOUT_S."""
    proc, profile = started
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"chromium did not finish within {TIMEOUT_S} s") from None
    finally:
        profile.cleanup()
    return out, err


def dump_dom(page: Path) -> tuple[str, str]:
    return finish(start_dump_dom(page))


def with_probe(page: Path, out: Path) -> Path:
    """A copy of `page` that writes data-pwned="true|false" on <html> once scripts ran."""
    text = Path(page).read_text(encoding="utf-8")
    out.write_text(text.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
    return out


def rendered_figures(dom: str) -> tuple[int, int]:
    """(figure containers, containers holding a drawn Plotly SVG root) in a dumped DOM."""
    parts = dom.split('<div class="plot" data-figure=')[1:]
    return len(parts), sum('class="main-svg"' in p for p in parts)


def js_errors(dom: str, log: str) -> list[str]:
    """Errors the page recorded in data-js-errors plus uncaught ones in Chromium's log."""
    found = re.findall(r'data-js-errors="([^"]*)"', dom)
    return found + [line for line in log.splitlines() if "Uncaught" in line]


def png_pixels(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) into an [H, W, C] array."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color_type, _, _, interlace = header
    assert depth == 8 and color_type in (2, 6) and interlace == 0, "unsupported PNG layout"
    channels = 3 if color_type == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, -1)
    return _unfilter(raw, channels).reshape(height, width, channels)


def _jit(func):
    # numba (a dependency of umap-learn) turns the byte loop from seconds into milliseconds;
    # without it the same function runs as plain Python, only slower.
    try:
        import numba
    except ImportError:
        return func
    return numba.njit(cache=False)(func)


@_jit
def _unfilter(raw: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG's per-row filters (0 none, 1 sub, 2 up, 3 average, 4 Paeth)."""
    height, stride = raw.shape[0], raw.shape[1] - 1
    out = np.zeros((height, stride), np.uint8)
    for y in range(height):
        kind = raw[y, 0]
        for x in range(stride):
            a = np.int64(out[y, x - bpp]) if x >= bpp else np.int64(0)
            b = np.int64(out[y - 1, x]) if y > 0 else np.int64(0)
            c = np.int64(out[y - 1, x - bpp]) if x >= bpp and y > 0 else np.int64(0)
            if kind == 0:
                pred = np.int64(0)
            elif kind == 1:
                pred = a
            elif kind == 2:
                pred = b
            elif kind == 3:
                pred = (a + b) >> 1
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            out[y, x] = (np.int64(raw[y, x + 1]) + pred) & 0xFF
    return out
