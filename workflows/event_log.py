"""Where can a researcher watch a fit or a curve train? TensorBoard event files.

`fit --log-dir DIR` (the API's `log_dir=`) writes, per share group and per optimiser step, the
group's mean loss and its worst and mean accuracy (`fit/loss/GROUP`, `fit/worst_accuracy/GROUP`,
`fit/mean_accuracy/GROUP`; the step is the group's own); `analyze --log-dir DIR` writes each
curve family's training loss and the share of its curves held so far
(`analyze/connectivity: bezier curves/loss`, `.../held_share`, one point per curve step).
`tensorboard --logdir DIR` shows them. The run's manifest records the folder under `logs`.

TensorBoard is an optional extra (`pip install 'protoscope[tensorboard]'`); asking for a log
without it is one line, before any model loads. The logger only listens: it takes the same
callbacks as the progress bar (`progress.Progress`) and never changes what a run computes.
"""

from __future__ import annotations

from pathlib import Path

from ..geometry.errors import ProtoscopeError
from ..progress import group_label

EXTRA = "pip install 'protoscope[tensorboard]'"


def _writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package
        raise ProtoscopeError(f"--log-dir needs TensorBoard: {EXTRA}") from None
    return SummaryWriter


def check_log_dir(log_dir) -> Path:
    """The folder, checked (TensorBoard installed; not an existing file) before a model loads."""
    _writer_class()
    path = Path(log_dir)
    if path.exists() and not path.is_dir():
        raise ProtoscopeError(f"--log-dir {path} exists and is not a folder")
    return path


class EventLog:
    """A TensorBoard writer fed by the fit's `on_groups` and the analyses' `on_analysis`."""

    def __init__(self, log_dir):
        self.path = check_log_dir(log_dir)
        self.writer = _writer_class()(log_dir=str(self.path))
        self.curve_steps: dict[str, int] = {}

    def on_groups(self, groups) -> None:
        """After every fit step: each group in flight (`fitting.GroupProgress`)."""
        for g in groups:
            name = group_label(g.key)
            self.writer.add_scalar(f"fit/loss/{name}", g.loss, g.steps)
            self.writer.add_scalar(f"fit/worst_accuracy/{name}", g.worst, g.steps)
            self.writer.add_scalar(f"fit/mean_accuracy/{name}", g.mean, g.steps)

    def on_analysis(self, stage: str, done: int, total: int, **detail) -> None:
        """An analysis stage moved; a curve step (detail with `loss`) becomes two points."""
        if "loss" not in detail or not total:
            return
        step = self.curve_steps[stage] = self.curve_steps.get(stage, 0) + 1
        self.writer.add_scalar(f"analyze/{stage}/loss", float(detail["loss"]), step)
        self.writer.add_scalar(f"analyze/{stage}/held_share", detail.get("held", 0) / total, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
