"""Ray Tune sweeps: init strategy x SFT lr (x SA-Init depth, LoRA rank) with ASHA over SFT rungs.

    from raygen.tune import load_sweep_config, run_sweep
    cfg, sweep = load_sweep_config("configs/sweep_tiny.yaml")
    summary = run_sweep(cfg, sweep)   # summary["best"]["model_dir"]

:mod:`~raygen.tune.config` (the ``sweep`` section), :mod:`~raygen.tune.results` (tables and plot,
no Ray), :mod:`~raygen.tune.sweep` (the Tuner and the per-trial driver).
"""
from raygen.tune.config import SWEEP_INITS, SweepConfig, load_sweep_config


def run_sweep(*args, **kwargs):
    """Lazy alias of :func:`raygen.tune.sweep.run_sweep` (imports Ray only when called)."""
    from raygen.tune.sweep import run_sweep as _run_sweep

    return _run_sweep(*args, **kwargs)


__all__ = ["SweepConfig", "SWEEP_INITS", "load_sweep_config", "run_sweep"]
