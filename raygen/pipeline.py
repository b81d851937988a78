"""The raygen stage graph: data -> corpus -> sids -> lm -> align -> sft -> rl -> eval -> report.

Each entry names the stage, the stage it follows (``deps``), the other upstream stages whose folders
it reads (``reads``) and the config sections it reads, which are also what enters its cache key (see
raygen.runner: the runner hands a stage only what it declares here). The run functions live in each stage's subpackage.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Callable

from raygen.runner import Stage, run_stages

CONFIG_FILE = "config.yaml"
"""The resolved config of the latest ``run_pipeline`` call, in the run folder (read by ``raygen recommend``)."""


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
    Stage("align", _lazy("raygen.train.stages:run_align"), deps=("lm",), sections=("align", "tasks"),
          reads=("data", "sids")),
    Stage("sft", _lazy("raygen.train.stages:run_sft"), deps=("align",), sections=("sft", "tasks"),
          reads=("data", "sids", "lm", "corpus")),  # corpus: the search task's queries
    # rl reads eval (keep-best validation: beam, ks, SID-only head) and tasks (prompts)
    Stage("rl", _lazy("raygen.rl.stage:run_rl"), deps=("sft",), sections=("rl", "eval", "tasks"),
          reads=("data", "sids", "corpus")),
    Stage("eval", _lazy("raygen.eval.stage:run_eval"), deps=("rl",), sections=("eval", "tasks"),
          reads=("data", "sids", "corpus")),  # corpus: the search queries
    # the report summarises every stage's metrics.json (and no config section)
    Stage("report", _lazy("raygen.report.stage:run_report"), deps=("eval",), sections=(),
          reads=("data", "corpus", "sids", "lm", "align", "sft", "rl")),
]


def stage_names() -> list[str]:
    return [s.name for s in STAGES]


def stage(name: str) -> Stage:
    """The pipeline's definition of stage ``name`` (the one stage graph: no module defines its own)."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages are {stage_names()}")


def save_config(cfg, run_dir: str | Path) -> Path:
    """Write the resolved config (every field, defaults included) to ``<run_dir>/config.yaml``, atomically.

    ``load_config`` of that file rebuilds the same config, hence the same stage keys.
    """
    import yaml

    from raygen.configbase import to_dict
    from raygen.io import atomic_path

    path = Path(run_dir) / CONFIG_FILE
    plain = json.loads(json.dumps(to_dict(cfg), default=str))  # tuples -> lists: safe_dump-able
    with atomic_path(path) as tmp:
        tmp.write_text("# Resolved config of the latest `raygen run` in this folder (written by raygen).\n"
                       + yaml.safe_dump(plain, sort_keys=False))
    return path


def run_pipeline(cfg, only: list[str] | None = None, force: list[str] | None = None) -> dict:
    """Run the stage graph (or ``only`` some stages) into ``cfg.run_dir``; save the config there first."""
    from raygen.configbase import ConfigError
    from raygen.ray_utils import init_ray

    only = only or cfg.stages or None
    unknown = set(only or []) | set(force or [])
    unknown -= set(stage_names())
    if unknown:
        raise ConfigError(f"unknown stage(s) {sorted(unknown)}; stages are {stage_names()}")
    if Path(cfg.run_dir).exists() and not Path(cfg.run_dir).is_dir():
        raise ConfigError(f"run_dir {cfg.run_dir} exists and is not a folder")
    save_config(cfg, cfg.run_dir)
    init_ray(cfg.ray)
    return run_stages(cfg, STAGES, cfg.run_dir, only=only, force=force)
