"""The pipeline config: one dataclass section per stage, loaded from YAML with overrides.

    cfg = load_config("configs/default.yaml", ["sft.lr=1e-4", "data.source=minionerec"])

Each section's fields and their documentation live next to the stage that uses them
(``raygen/<stage>/config.py``); this module only composes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from raygen.configbase import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from raygen.corpus.config import CorpusConfig
from raygen.data.config import DataConfig
from raygen.eval.config import EvalConfig
from raygen.lm.config import LmConfig
from raygen.rl.config import RlConfig
from raygen.sid.config import SidConfig
from raygen.tasks.config import TasksConfig
from raygen.train.stages import AlignConfig, SftConfig

__all__ = ["RayConfig", "PipelineConfig", "load_config", "ConfigError", "to_dict"]


@dataclass
class RayConfig:
    address: str = ""
    """Ray cluster to join: '' starts/joins a local Ray, 'auto' joins a running cluster (ray job submit)."""
    num_cpus: int = 0
    """CPUs for a local Ray (0 = all of this machine's)."""
    dashboard: bool = False
    """Start the dashboard of a local Ray (bound to 127.0.0.1 only)."""


@dataclass
class PipelineConfig:
    run_dir: str = "runs/default"
    """Folder for all stage outputs; a rerun with the same config skips finished stages."""
    seed: int = 0
    """Global seed (stages derive their own seeds from their sections)."""
    stages: list[str] = field(default_factory=list)
    """Run only these stages (empty = the whole pipeline)."""
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    sids: SidConfig = field(default_factory=SidConfig)
    lm: LmConfig = field(default_factory=LmConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    rl: RlConfig = field(default_factory=RlConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply ``section.field=value`` overrides."""
    data = load_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    try:
        return from_dict(PipelineConfig, data)
    except ConfigError as e:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{e}") from None
