"""Experiment tracking: TensorBoard event files of the training metrics, through Ray's own hooks.

Ray Train V2 (Ray >= 2.43) has no logger callbacks of its own (those are Ray Tune's), but it
calls a :class:`ray.train.UserCallback` on the Train controller after every ``ray.train.report``
of the workers. :func:`tensorboard_callback` returns one that writes rank 0's reported scalars
(loss, lr, tokens/s, tokens) with ``torch.utils.tensorboard``, step = the reported optimizer step,
so a run is visible live with ``tensorboard --logdir <run_dir>/tensorboard``. The controller runs on
the driver's node, so a local ``logdir`` works without a shared file system. (torch's writer, not
tensorboardX: its ``flush()`` waits until queued events are on disk, and the controller process
may end without closing anything.)

Sweeps add Ray Tune's own logger callbacks on top (see :mod:`raygen.tune.sweep`).
"""
from __future__ import annotations

import importlib.util
import logging
import numbers
from pathlib import Path

from ray.train import UserCallback

log = logging.getLogger("raygen")


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def scalars(metrics: dict) -> dict[str, float]:
    """The numeric entries of a metrics dict (bools and non-numbers dropped), as floats."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool)}


class TensorBoardCallback(UserCallback):
    """Writes rank 0's reported scalars as ``<prefix>/<metric>`` at step = the reported ``step``.

    Pickled to the Train controller; it opens its writer there, on the first report.
    """

    def __init__(self, logdir: str | Path, prefix: str = "train"):
        self.logdir, self.prefix, self._writer = str(Path(logdir).resolve()), prefix, None

    def __getstate__(self):  # the writer (a thread, file handles) stays in the process that opened it
        return {**self.__dict__, "_writer": None}

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if not metrics:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            Path(self.logdir).mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(self.logdir)
        values = scalars(metrics[0])  # every rank reports the same, already reduced, values
        step = int(values.pop("step", 0))
        for k, v in values.items():
            self._writer.add_scalar(f"{self.prefix}/{k}", v, step)
        self._writer.flush()

    def after_exception(self, run_context, worker_exceptions) -> None:
        if self._writer is not None:
            self._writer.flush()


def tensorboard_callback(logdir: str | Path, prefix: str = "train") -> TensorBoardCallback | None:
    """A :class:`TensorBoardCallback` into ``logdir``, or None (with a log line) without tensorboard."""
    if not tensorboard_available():
        log.info("tensorboard is not installed: no TensorBoard files for %s", logdir)
        return None
    return TensorBoardCallback(logdir, prefix)


def event_files(logdir: str | Path) -> list[Path]:
    """TensorBoard event files under ``logdir`` (recursively)."""
    return sorted(Path(logdir).rglob("events.out.tfevents.*"))
