"""Config of a Ray Tune sweep: the ``sweep`` section of a YAML that also holds a pipeline config.

    cfg, sweep = load_sweep_config("configs/sweep_tiny.yaml", ["sweep.lrs=[1e-4, 3e-4]"])

The pipeline sections (data, corpus, ..., sft, eval) give every trial its base config; the sweep
section names the grid the trials vary (init strategy x SFT lr x optional SA-Init depth / LoRA
rank x repeats) and the ASHA schedule that stops weak trials between SFT rungs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from raygen.configbase import ConfigError, Resources, from_dict

SWEEP_INITS = ("random", "mean", "sa_init", "star")
"""'random' / 'mean' / 'sa_init': lm.init with the align stage off; 'star': lm.init 'mean' then STAR
alignment (align.enabled true) before SFT."""


@dataclass
class SweepConfig:
    name: str = "sweep"
    """Experiment name (Tune's run folder ``<dir>/tune/<name>``, the MLflow experiment)."""
    dir: str = ""
    """Sweep folder holding shared/, trials/, tune/ and the results; '' = the pipeline's run_dir."""
    lrs: list[float] = field(default_factory=lambda: [1e-4, 3e-4])
    """SFT peak learning rates (grid axis; sft.lr)."""
    inits: list[str] = field(default_factory=lambda: ["mean", "star"])
    """SID-row init strategies (grid axis), from 'random', 'mean', 'sa_init', 'star'."""
    sa_init_depths: list[int] = field(default_factory=list)
    """lm.sa_init_depth values tried for the 'sa_init' trials (grid axis for those only; [] = lm.sa_init_depth)."""
    lora_ranks: list[int] = field(default_factory=list)
    """LoRA ranks (grid axis): each trial's SFT runs with mode 'lora', lora_r = rank and lora_alpha
    scaled to keep sft.lora_alpha / sft.lora_r; [] = sft.mode as configured."""
    num_samples: int = 1
    """Repeats of every grid point; repeat i > 0 adds i to lm.seed, align.seed and sft.seed."""
    trial_resources: Resources = field(default_factory=lambda: Resources(count=1, cpus=1.0, gpus=0.0))
    """The trials' drivers: count = trials running at once (Tune's max_concurrent_trials, >= 1); CPUs
    (> 0: Tune needs a resource for the driver) and GPUs each driver reserves. A driver runs the lm stage
    and the beam-search evaluation; its Ray Train workers reserve their own (sft.resources, and
    align.resources for 'star'), so count x (cpus + the workers' CPUs) should fit the cluster. On a 2-CPU
    machine keep count 1, cpus 1 and one 1-CPU training worker."""
    rungs: int = 3
    """SFT segments per trial = ASHA rungs: after each, the trial reports validation metrics and
    ASHA may stop it. The SFT of a trial that runs to the end has rungs x steps_per_rung steps."""
    steps_per_rung: int = 50
    """Optimizer steps per rung (each rung resumes the trial's Ray Train run from its checkpoint)."""
    grace_period: int = 1
    """Rungs every trial completes before ASHA may stop it."""
    reduction_factor: float = 2.0
    """ASHA keeps the top 1/reduction_factor of trials at each rung."""
    eval_rows: int = 64
    """Validation rows evaluated (constrained beam search) after each rung."""
    metric: str = "ndcg@10"
    """Metric ASHA maximises and the best trial is picked by: 'ndcg@K' or 'hr@K' with K in eval.ks."""
    mlflow: bool = True
    """Also log trials to MLflow (Ray's MLflowLoggerCallback) when mlflow is installed."""
    mlflow_tracking_uri: str = ""
    """MLflow tracking URI; '' = a file store in ``<dir>/mlruns``."""

    def validate(self) -> None:
        bad = sorted(set(self.inits) - set(SWEEP_INITS))
        if bad or not self.inits:
            raise ConfigError(f"sweep.inits: {bad or 'empty'}; pick from {list(SWEEP_INITS)}")
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ConfigError(f"sweep.lrs: need at least one learning rate, all > 0, got {self.lrs}")
        if any(d < 0 for d in self.sa_init_depths):
            raise ConfigError(f"sweep.sa_init_depths: must be >= 0, got {self.sa_init_depths}")
        if any(r < 1 for r in self.lora_ranks):
            raise ConfigError(f"sweep.lora_ranks: must be >= 1, got {self.lora_ranks}")
        for key in ("num_samples", "trial_resources.count", "rungs", "steps_per_rung", "grace_period", "eval_rows"):
            if attrgetter(key)(self) < 1:
                raise ConfigError(f"sweep.{key}: must be >= 1, got {attrgetter(key)(self)}")
        if self.grace_period > self.rungs:
            raise ConfigError(f"sweep.grace_period ({self.grace_period}) must be <= sweep.rungs ({self.rungs})")
        if self.reduction_factor <= 1:
            raise ConfigError(f"sweep.reduction_factor: must be > 1, got {self.reduction_factor}")
        if self.trial_resources.cpus <= 0:
            raise ConfigError(f"sweep.trial_resources.cpus: must be > 0 (Tune needs a resource for the trial "
                              f"driver), got {self.trial_resources.cpus}")
        if metric_k(self.metric) is None:
            raise ConfigError(f"sweep.metric: {self.metric!r} is not 'ndcg@K' or 'hr@K'")


def metric_k(metric: str) -> int | None:
    """K of 'ndcg@K' / 'hr@K', None for anything else."""
    m = re.fullmatch(r"(?:ndcg|hr)@(\d+)", metric)
    return int(m.group(1)) if m else None


def load_sweep_config(path: str | Path | None = None, overrides: list[str] | None = None):
    """``(PipelineConfig, SweepConfig)`` from a YAML whose top-level ``sweep`` section is the sweep
    and whose other sections are the pipeline's, with ``section.field=value`` overrides. An error
    names the override or the file the bad value came from, as :func:`raygen.config.load_config`."""
    from raygen.config import build_attributed

    return build_attributed(path, overrides, _build_sweep)


def _build_sweep(data: dict):
    from raygen.config import PipelineConfig

    data = dict(data)
    raw = data.pop("sweep", None) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep: expected a mapping, got {raw!r}")
    sweep = from_dict(SweepConfig, raw, prefix="sweep")
    cfg = from_dict(PipelineConfig, data)
    k = metric_k(sweep.metric)
    if k not in cfg.eval.ks or k > cfg.eval.beam_width:
        raise ConfigError(f"sweep.metric {sweep.metric!r}: K={k} must be one of eval.ks {cfg.eval.ks}")
    return cfg, sweep
