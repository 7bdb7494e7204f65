"""How far along is an analysis? The one callback every analysis reports its progress through.

`progress(stage, done, total, **detail)`: `done` of `total` units of a named stage of the
analysis ("bezier curves", "paths walked", "solutions", ...), `done` never decreasing within a
stage and reaching `total` when the stage ends; `detail` holds a few short values worth showing
beside it (the current curve step, curves held so far). An analysis takes it as the
positional-or-keyword argument `progress` of its analyze(), not as a keyword-only option:
options are the budget stamped into the manifest (analysis/registry.py), and how a table's
progress was shown must never make it look out of date. `analysis/run.py` hands each analysis
one with its name in front of the stage; the terminal side is `protoscope.progress.Progress`.
"""

from __future__ import annotations

from collections.abc import Callable

Report = Callable[..., None]


def silent(stage: str, done: int, total: int, **detail) -> None:
    """The default: nobody is listening."""


def reporter(progress: Report | None) -> Report:
    """The callback to call: the one given, or `silent`."""
    return silent if progress is None else progress


def named(progress: Report, name: str) -> Report:
    """The callback one analysis gets: its stages, prefixed with its name."""
    def report(stage: str, done: int, total: int, **detail) -> None:
        progress(f"{name}: {stage}", done, total, **detail)
    return report
