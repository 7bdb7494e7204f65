"""How far along is a long command? Live progress on stderr while texts are prepared and fitted.

`Progress` supplies the callbacks `geometry.runs.fit_run` takes: `on_texts` draws one bar per
text stage (texts tokenised, texts scored), `start` sizes the fit bar once the problems are
known, `on_step` and `on_group` move it. The fit bar is drawn only when fitting begins, so the
text bars never share the screen with an empty one. `quiet=True` draws nothing.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """A live bar: problems done, best/worst accuracy in the batch, optimiser steps per second."""

    def __init__(self, total: int | None = None, quiet: bool = False, desc: str = "fit"):
        self.total, self.quiet, self.desc = total, quiet, desc
        self._bar = None
        self.texts, self.text_stage = None, None
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

    def callbacks(self) -> dict:
        """The keyword arguments `fit_run` takes for progress."""
        return {"on_texts": self.on_texts, "on_problems": self.start,
                "on_group": self.on_group, "on_step": self.on_step}

    def close(self) -> None:
        self._close_texts()
        if self._bar is not None:
            self._bar.close()
