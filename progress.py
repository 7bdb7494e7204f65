"""How far along is a long command? Live progress on stderr while texts are prepared and fitted.

`Progress` supplies the callbacks `geometry.runs.fit.fit_run` takes: `on_texts` draws one bar per
text stage (texts tokenised, texts scored), `start` sizes the fit bar once the problems are
known, `on_step` and `on_group` move it, `on_groups` shows the slowest group in flight. The fit
bar is drawn only when fitting begins, so the text bars never share the screen with an empty
one. `quiet=True` draws no bar, but every `every` seconds prints one line with each group in
flight (steps, worst member's accuracy, members exact), so a long share group is never silent;
those lines go to `echo` when given (a sweep prefixes them with its job's id), else to stderr.

The analyses report through `on_analysis(stage, done, total, **detail)` (analysis/run.py hands
it to each analysis): one bar per stage ("connectivity: bezier curves", "connectivity: paths
walked", ...), its detail (current curve step, curves held) beside it; under `quiet`, the same
timed line as the groups in flight, through the same `echo`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    """A live bar: problems done, best/worst accuracy in the batch, optimiser steps per second."""

    def __init__(self, total: int | None = None, quiet: bool = False, desc: str = "fit",
                 every: float = 60.0, echo: Callable[[str], None] | None = None):
        self.total, self.quiet, self.desc, self.every = total, quiet, desc, every
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.last_line = time.perf_counter()
        self._bar = None
        self.texts, self.text_stage = None, None
        self.stage, self.stage_name, self.stage_drawn = None, None, 0.0
        self.steps, self.started = 0, time.perf_counter()

    def _new_bar(self, **kwargs):
        from tqdm.auto import tqdm

        return tqdm(disable=self.quiet, file=sys.stderr, dynamic_ncols=True, **kwargs)

    @property
    def bar(self):
        """The fit bar, drawn on first use."""
        if self._bar is None:
            self._close_texts()
            self._bar = self._new_bar(total=self.total, desc=self.desc, unit="sol")
            self.steps, self.started = 0, time.perf_counter()
        return self._bar

    def on_texts(self, stage: str, done: int, total: int) -> None:
        """`done` of `total` texts have passed `stage` ("tokenised", "scored", ...)."""
        if self.text_stage != stage:
            self._close_texts()
            self.texts = self._new_bar(total=total, desc=f"texts {stage}", unit="text")
            self.text_stage = stage
        self.texts.update(done - self.texts.n)

    def _close_texts(self) -> None:
        if self.texts is not None:
            self.texts.close()
            self.texts, self.text_stage = None, None

    def start(self, total: int) -> None:
        """Fitting begins with `total` problems to solve."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def on_step(self, acc) -> None:
        bar = self.bar
        self.steps += 1
        if self.steps % 5 == 0:
            rate = self.steps / (time.perf_counter() - self.started)
            bar.set_postfix(active=len(acc), best=f"{float(acc.max()):.2f}",
                            worst=f"{float(acc.min()):.2f}", steps_s=f"{rate:.1f}", refresh=False)
            bar.refresh()

    def on_group(self, group) -> None:
        self.bar.update(len(group.solutions))

    def on_groups(self, groups) -> None:
        """The groups in flight (`fitting.GroupProgress`), after every step."""
        if not groups:
            return
        if not self.quiet:
            slow = min(groups, key=lambda g: (g.worst, -g.steps))
            self.bar.set_postfix_str(f"groups={len(groups)} slowest: step {slow.steps}, worst "
                                     f"{slow.worst:.2f}, exact {slow.exact}/{slow.members}", refresh=False)
            return
        now = time.perf_counter()
        if now - self.last_line >= self.every:
            self.last_line = now
            shown = "; ".join(f"group {group_label(g.key)}: step {g.steps}, worst {g.worst:.2f}, "
                              f"exact {g.exact}/{g.members}" for g in groups[:8])
            more = f"; ... {len(groups) - 8} more" if len(groups) > 8 else ""
            self.echo(f"protoscope: {self.desc}: {len(groups)} groups in flight: {shown}{more}")

    def on_analysis(self, stage: str, done: int, total: int, **detail) -> None:
        """`done` of `total` of an analysis stage, with a few numbers beside (`detail`)."""
        shown = ", ".join(f"{k} {v}" for k, v in detail.items())
        if self.quiet:
            now = time.perf_counter()
            if now - self.last_line >= self.every:
                self.last_line = now
                self.echo(f"protoscope: {self.desc}: {stage} {done}/{total}"
                          + (f" ({shown})" if shown else ""))
            return
        if self.stage_name != stage:
            self._close_stage()
            self.stage = self._new_bar(total=total, desc=stage, unit="")
            self.stage_name = stage
        bar, now = self.stage, time.perf_counter()
        bar.total = total
        if shown:
            bar.set_postfix_str(shown, refresh=False)
        if done != bar.n:
            bar.update(done - bar.n)
        elif now - self.stage_drawn >= 0.2:  # a curve step moves only the detail: redraw it
            bar.refresh()
            self.stage_drawn = now

    def _close_stage(self) -> None:
        if self.stage is not None:
            self.stage.close()
            self.stage, self.stage_name = None, None

    def callbacks(self) -> dict:
        """The keyword arguments `fit_run` takes for progress."""
        return {"on_texts": self.on_texts, "on_problems": self.start,
                "on_group": self.on_group, "on_step": self.on_step, "on_groups": self.on_groups}

    def close(self) -> None:
        self._close_texts()
        self._close_stage()
        if self._bar is not None:
            self._bar.close()


def each(*callbacks: Callable | None) -> Callable | None:
    """One callback calling each given one in order (None when none is given): a bar and a
    log hearing the same events."""
    given = [c for c in callbacks if c is not None]
    if not given:
        return None

    def call(*args, **kwargs) -> None:
        for callback in given:
            callback(*args, **kwargs)
    return call


def group_label(key) -> str:
    """A share group's key as one name: its parts joined by slashes."""
    return "/".join(str(k) for k in key) if isinstance(key, tuple) else str(key)
