"""TensorBoard files of training metrics: the Ray Train UserCallback, exercised without Ray."""
from __future__ import annotations

import pickle

import pytest


def test_tensorboard_callback_writes_numeric_scalars_at_the_reported_step(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from raygen.tracking import TensorBoardCallback, event_files, scalars

    assert scalars({"step": 3, "loss": 1, "ok": True, "name": "x", "nan": float("nan")}).keys() == {"step", "loss",
                                                                                                     "nan"}
    cb = TensorBoardCallback(tmp_path / "tb", prefix="sft")
    cb.after_report(None, [], None)  # nothing reported: no writer, no file
    assert event_files(tmp_path) == []
    remote = pickle.loads(pickle.dumps(cb))  # what the Train controller receives
    for step, loss in ((1, 2.0), (2, 1.5)):
        remote.after_report(None, [{"step": step, "loss": loss, "lr": 1e-3, "ok": True, "note": "x"},
                                   {"step": step, "loss": 99.0}], None)
    remote.after_exception(None, {})
    assert pickle.loads(pickle.dumps(remote))._writer is None  # the open writer never travels
    (path,) = event_files(tmp_path / "tb")
    acc = EventAccumulator(str(path.parent))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["sft/loss", "sft/lr"]
    assert [(e.step, e.value) for e in acc.Scalars("sft/loss")] == [(1, 2.0), (2, 1.5)]  # rank 0's values
