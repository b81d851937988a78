"""Which model folder a model-producing stage (lm, align, sft, rl) hands downstream.

A stage that trains writes ``<stage>/model`` (``save_pretrained``); a stage that is disabled
writes ``<stage>/model_ref.json`` pointing at its upstream's model instead of copying it.
"""
from __future__ import annotations

from pathlib import Path

from raygen.io import read_json, write_json


def model_dir(stage_dir: str | Path) -> Path:
    stage_dir = Path(stage_dir)
    ref = stage_dir / "model_ref.json"
    if ref.exists():
        return Path(read_json(ref)["model_dir"])
    if (stage_dir / "model" / "config.json").exists():
        return stage_dir / "model"
    raise FileNotFoundError(f"{stage_dir} holds neither model/ nor model_ref.json")


def pass_through(out: str | Path, upstream_stage_dir: str | Path, reason: str) -> dict:
    """Record that this stage hands on its upstream's model unchanged."""
    target = model_dir(upstream_stage_dir).resolve()
    write_json(Path(out) / "model_ref.json", {"model_dir": str(target), "reason": reason})
    return {"skipped_training": reason, "model_dir": str(target)}
