"""The raygen stage graph: data -> corpus -> sids -> lm -> align -> sft -> rl -> eval -> report.

Each entry names the stage, the stages it reads and the config sections that enter its
cache key (see raygen.runner). The run functions live in each stage's subpackage.
"""
from __future__ import annotations

import importlib
from typing import Callable

from raygen.runner import Stage, run_stages


def _lazy(path: str) -> Callable:
    """Import ``module:function`` only when the stage runs (keeps `raygen --help` fast)."""
    mod, fn = path.split(":")

    def run(ctx):
        return getattr(importlib.import_module(mod), fn)(ctx)

    return run


STAGES: list[Stage] = [
    Stage("data", _lazy("raygen.data.stage:run_data"), deps=(), sections=("data",)),
    Stage("corpus", _lazy("raygen.corpus.stage:run_corpus"), deps=("data",), sections=("corpus",)),
    Stage("sids", _lazy("raygen.sid.stage:run_sids"), deps=("corpus",), sections=("sids",)),
    Stage("lm", _lazy("raygen.lm.stage:run_lm_init"), deps=("sids",), sections=("lm",)),
    Stage("align", _lazy("raygen.train.stages:run_align"), deps=("lm",), sections=("align", "tasks")),
    Stage("sft", _lazy("raygen.train.stages:run_sft"), deps=("align",), sections=("sft", "tasks")),
    Stage("rl", _lazy("raygen.rl.stage:run_rl"), deps=("sft",), sections=("rl",)),
    Stage("eval", _lazy("raygen.eval.stage:run_eval"), deps=("rl",), sections=("eval", "tasks")),
    Stage("report", _lazy("raygen.report.stage:run_report"), deps=("eval",), sections=()),
]


def stage_names() -> list[str]:
    return [s.name for s in STAGES]


def run_pipeline(cfg, only: list[str] | None = None, force: list[str] | None = None) -> dict:
    from raygen.ray_utils import init_ray

    only = only or cfg.stages or None
    unknown = set(only or []) | set(force or [])
    unknown -= set(stage_names())
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {stage_names()}")
    init_ray(cfg.ray)
    return run_stages(cfg, STAGES, cfg.run_dir, only=only, force=force)
