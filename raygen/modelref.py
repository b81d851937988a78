"""Which model folder a model-producing stage (lm, align, sft, rl) hands downstream.

A stage that trains writes ``<stage>/model`` (``save_pretrained``); a stage that is disabled
writes ``<stage>/model_ref.json`` pointing at its upstream's model instead of copying it. The
reference is stored relative to the run folder when the model lies inside it, so a finished run
folder can be moved or copied as a whole.
"""
from __future__ import annotations

import os
from pathlib import Path

from raygen.io import read_json, write_json


def model_dir(stage_dir: str | Path) -> Path:
    stage_dir = Path(stage_dir)
    ref = stage_dir / "model_ref.json"
    if ref.exists():
        return stage_dir.parent / read_json(ref)["model_dir"]  # absolute paths stay absolute
    if (stage_dir / "model" / "config.json").exists():
        return stage_dir / "model"
    raise FileNotFoundError(f"{stage_dir} holds neither model/ nor model_ref.json")


def pass_through(out: str | Path, upstream_stage_dir: str | Path, reason: str) -> dict:
    """Record that this stage hands on its upstream's model unchanged."""
    target = model_dir(upstream_stage_dir)
    write_ref(out, target, reason)
    return {"skipped_training": reason, "model_dir": str(target)}


def write_ref(out: str | Path, target: str | Path, reason: str) -> None:
    """Write ``out/model_ref.json`` pointing at ``target``; ``out`` is (a temp folder beside) the stage
    folder, so its parent is the run folder."""
    run_dir, target = Path(out).absolute().parent, Path(target).absolute()
    rel = os.path.relpath(target, run_dir)
    ref = target if rel.startswith("..") else Path(rel)
    write_json(Path(out) / "model_ref.json", {"model_dir": str(ref), "reason": reason})


def model_location(ctx, stage: str) -> tuple[str, str | None]:
    """``(location, key)`` of the model the finished ``stage`` hands on, for Ray workers (and a driver that
    does not hold it): ``<stage>/model``, or the target of its ``model_ref.json`` (relative to the run, or
    absolute), under the run's location (:meth:`raygen.runner.StageContext.location`: its URI, or the
    absolute local run folder). ``key`` is the cache key of the stage that wrote the model (None when the
    runner did not set the keys), for :func:`raygen.storage.materialize`."""
    local = Path(ctx.input(stage))
    ref = local / "model_ref.json"
    if ref.exists():
        target = Path(read_json(ref)["model_dir"])
        if target.is_absolute():  # a model outside the run (e.g. a pinned one): as the reference stores it
            return str(target), None
        parts = target.parts
    else:
        parts = (stage, "model")
    return ctx.location(*parts), (getattr(ctx, "keys", None) or {}).get(parts[0])
