"""How do the report's figures become PNG / SVG / PDF files for a paper or a slide?

Static images go through kaleido 1.x, which drives an installed Chromium. It finds the
browser on PATH (`chromium`, `google-chrome`, ...) or at the BROWSER_PATH environment
variable. One browser session renders all figures: starting Chromium costs seconds, a figure
costs a fraction of that.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import plotly.graph_objects as go

from ..geometry.errors import ProtoscopeError

FORMATS = ("png", "svg", "pdf")
_NO_BROWSER = ("static figures need a Chromium browser: install it (Debian/Ubuntu: "
               "apt-get install chromium) or set BROWSER_PATH to its executable")
_WIDTH = 1100


def check_format(static: str | None) -> None:
    if static is not None and static not in FORMATS:
        raise ProtoscopeError(f"static must be one of {', '.join(FORMATS)}, not {static!r}")


def find_browser() -> str:
    """The Chromium kaleido will use; ProtoscopeError with one line when there is none."""
    try:
        from choreographer.browsers.chromium import Chromium
    except ImportError:
        raise ProtoscopeError("static figures need kaleido: pip install 'protoscope[static]'") \
            from None
    # BROWSER_PATH wins in choreographer too; a path that is not an executable file would
    # only fail later, inside kaleido's thread, with a longer message.
    path = os.environ.get("BROWSER_PATH") or Chromium.find_browser(skip_local=False)
    if not path or not Path(path).is_file() or not os.access(path, os.X_OK):
        raise ProtoscopeError(_NO_BROWSER)
    return path


def figure_name(name: str, fig: go.Figure) -> str:
    """A figure's name: its place on the page (section-NN) and its title, slugged."""
    title = re.sub(r"<[^>]*>|&[a-z#0-9]+;", "", fig.layout.title.text or "")
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60]
    return f"{name}-{slug}" if slug else name


def export_figures(figures: list[tuple[str, go.Figure]], folder: Path | str,
                   fmt: str = "png") -> list[Path]:
    """Write each (name, figure) as folder/NAME-TITLE.FMT; returns the paths written."""
    check_format(fmt)
    find_browser()
    import kaleido
    from choreographer.errors import ChromeNotFoundError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for name, fig in figures:
        path = folder / f"{figure_name(name, fig)}.{fmt}"
        height = fig.layout.height or 450
        jobs.append({"fig": fig, "path": path,
                     "opts": {"format": fmt, "width": _WIDTH, "height": height}})
    if not jobs:
        return []
    try:
        # mathjax=False: kaleido would otherwise load MathJax from a CDN, and these machines
        # (and many users' laptops on a train) have no network.
        kaleido.write_fig_from_object_sync(jobs, kopts={"mathjax": False},
                                           cancel_on_error=True)
    except ChromeNotFoundError:
        raise ProtoscopeError(_NO_BROWSER) from None
    return [job["path"] for job in jobs]
