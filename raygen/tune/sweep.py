"""Ray Tune sweep over SID init strategy x SFT lr (x SA-Init depth, LoRA rank), ASHA over SFT rungs.

    cfg, sweep = load_sweep_config("configs/sweep_tiny.yaml")
    summary = run_sweep(cfg, sweep)

Tune-over-Train (Ray >= 2.43): each Tune trial runs :func:`run_trial`, a light driver that starts
Ray Train runs (:func:`raygen.train.ray_trainer.train`) for its training. Layout of the sweep folder:

- ``shared/``: data, corpus and sids, run ONCE (raygen.runner) before the Tuner starts;
- ``trials/<trial_id>/``: a pipeline run folder per trial. data/corpus/sids are links to ``shared/``
  (the runner finds them up to date: their config sections, hence keys, are the sweep's), then the
  lm and align stages run with the trial's init, then the pipeline's own sft stage in ``rungs``
  segments (``run_stages(..., stop_at={"sft": r x steps_per_rung})``): segment r resumes the stage's
  Ray Train run (``ray_train/sft-<key>``) up to that step (the lr schedule spans all rungs) and
  leaves the stage unfinished in ``.sft.tmp``; the driver evaluates that model on ``eval_rows``
  validation rows (constrained beam search in-process) and ``ray.tune.report``s the metrics; ASHA
  stops weak trials between rungs. The last rung finishes the stage (the runner writes its marker
  and metrics, atomically), so a trial that reaches it gets a finished ``sft`` stage and a ``config.yaml``, so
  ``raygen run --config trials/<id>/config.yaml`` continues it with rl/eval/report;
- ``tune/<name>/``: Ray Tune's experiment (per-trial progress.csv/result.json, TensorBoard events
  from TBXLoggerCallback; MLflow runs in ``mlruns/`` when mlflow is installed);
- ``results.csv``, ``results.md``, ``metric_vs_step.png``, ``best.json``.

Resources: ``sweep.trial_resources.count`` trials run at once, each driver reserving
``sweep.trial_resources`` CPUs/GPUs; its Train workers are placed by Ray Train in their own placement
group (``sft.resources``: count x cpus), so count x (driver CPUs + workers' CPUs) should fit the
cluster, or trials wait for workers.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from raygen.io import read_json, read_parquet, write_json
from raygen.runner import Stage, link_finished, run_stages, stage_done, stage_keys
from raygen.tune.config import SweepConfig
from raygen.tune.results import best_row, plot_curves, summarize, to_markdown, write_csv

log = logging.getLogger("raygen")

SHARED_STAGES = ("data", "corpus", "sids")
"""Stages run once for the whole sweep (no sweep parameter enters their config sections)."""


# ------------------------------------------------------------------------------------ the grid

def trial_variants(sweep: SweepConfig) -> list[dict]:
    """Every trial's parameters: inits x (sa_init_depths for 'sa_init') x lora_ranks x lrs x repeats."""
    out = []
    for repeat in range(sweep.num_samples):
        for init in sweep.inits:
            depths = sweep.sa_init_depths if init == "sa_init" and sweep.sa_init_depths else [None]
            for depth in depths:
                for rank in sweep.lora_ranks or [None]:
                    for lr in sweep.lrs:
                        out.append({"init": init, "lr": lr, "sa_init_depth": depth, "lora_rank": rank,
                                    "repeat": repeat})
    return out


def trial_config(cfg, params: dict, sweep: SweepConfig, run_dir: str | Path):
    """The pipeline config of one trial: ``cfg`` with the lm/align/sft sections set from ``params``."""
    init, rep = params["init"], params.get("repeat", 0)
    lm = replace(cfg.lm, init="mean" if init == "star" else init, seed=cfg.lm.seed + rep)
    if params.get("sa_init_depth") is not None:
        lm.sa_init_depth = params["sa_init_depth"]
    align = replace(cfg.align, enabled=init == "star", seed=cfg.align.seed + rep)
    # ASHA's rungs decide when to stop: no validation-driven early stopping inside the sft stage
    sft = replace(cfg.sft, enabled=True, lr=float(params["lr"]), max_steps=sweep.rungs * sweep.steps_per_rung,
                  seed=cfg.sft.seed + rep, valid_every=0)
    if params.get("lora_rank") is not None:
        r = int(params["lora_rank"])
        sft.mode, sft.lora_r, sft.lora_alpha = "lora", r, max(1, round(cfg.sft.lora_alpha * r / cfg.sft.lora_r))
    for section in (lm, align, sft):
        section.validate()
    return replace(cfg, lm=lm, align=align, sft=sft, run_dir=str(run_dir), stages=[])


# ------------------------------------------------------------------------------------ stages

def _stages_until(last: str) -> list[Stage]:
    from raygen.pipeline import STAGES

    names = [s.name for s in STAGES]
    return STAGES[: names.index(last) + 1]


def link_shared(cfg, run_dir: Path, shared: Path) -> None:
    """Point ``run_dir``'s shared stages at ``shared/`` (relative links) and check they are up to date."""
    link_finished(cfg, _stages_until(SHARED_STAGES[-1]), run_dir,
                  lambda name, key: shared / name if name in SHARED_STAGES else None)
    keys = stage_keys(cfg, _stages_until(SHARED_STAGES[-1]))
    for name in SHARED_STAGES:
        if not stage_done(run_dir, name, keys[name]):
            raise RuntimeError(f"shared stage {name!r} in {shared / name} does not match this trial's config "
                               "(a sweep may only vary the lm, align and sft sections)")


# ------------------------------------------------------------------------------------ one trial

class _Validator:
    """Constrained beam search of a model on a fixed sample of validation rows (in this process)."""

    def __init__(self, cfg, run_dir: Path, rows: int):
        from transformers import AutoTokenizer

        from raygen.modelref import model_dir

        self.cfg = replace(cfg.eval, max_rows=rows, resources=replace(cfg.eval.resources, count=0))
        self.tasks = cfg.tasks
        self.samples = read_parquet(run_dir / "data" / "samples.parquet")
        self.codes = read_parquet(run_dir / "sids" / "codes.parquet")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir(run_dir / "lm"), local_files_only=True)

    def __call__(self, mdir: Path) -> dict:
        from raygen.eval.stage import evaluate_split

        table = evaluate_split(mdir, self.samples, self.codes, self.tokenizer, self.tasks, self.cfg, "valid",
                               out=None, baselines=False)
        return {k: v for k, v in table["raygen"].items() if k.startswith(("hr@", "ndcg@")) or k in ("n", "invalid")}


def run_trial(config: dict, cfg, sweep: SweepConfig, sweep_dir: str) -> None:
    """Tune trainable: one trial (see the module docstring). ``config["params"]`` is its grid point."""
    import ray.tune

    from raygen.pipeline import save_config

    root = Path(sweep_dir)
    trial_id = ray.tune.get_context().get_trial_id()
    run_dir = root / "trials" / trial_id
    tcfg = trial_config(cfg, config["params"], sweep, run_dir)
    link_shared(tcfg, run_dir, root / "shared")
    save_config(tcfg, run_dir)
    stages, validate = _stages_until("sft"), None
    for rung in range(1, sweep.rungs + 1):
        # the real pipeline stages: upstream ones run once (then are up to date), sft resumes its Ray Train
        # run up to this rung's step; the last rung finishes it and the runner writes its marker
        stop = {} if rung == sweep.rungs else {"sft": rung * sweep.steps_per_rung}
        res = run_stages(tcfg, stages, run_dir, stop_at=stop)["sft"]
        m = res["metrics"] if res["status"] != "skipped" else read_json(run_dir / "sft" / "metrics.json")
        out = Path(res["out"]) if res["status"] == "partial" else run_dir / "sft"
        validate = validate or _Validator(tcfg, run_dir, sweep.eval_rows)  # needs the lm stage's tokenizer
        scores = validate(out / "model")
        ray.tune.report({**scores, "rung": rung, "step": m["final_step"], "loss": m.get("loss"),
                         "tokens_per_s": m.get("tokens_per_s"), "train_wall_s": m.get("wall_s")})


# ------------------------------------------------------------------------------------ the sweep

def _callbacks(sweep: SweepConfig, root: Path) -> list:
    from ray.tune.logger import TBXLoggerCallback

    callbacks = [TBXLoggerCallback()]
    if sweep.mlflow and importlib.util.find_spec("mlflow") is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        uri = sweep.mlflow_tracking_uri or (root / "mlruns").as_uri()
        callbacks.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name=sweep.name, save_artifact=False))
    elif sweep.mlflow:
        log.info("mlflow is not installed: sweep tracked in TensorBoard files only")
    return callbacks


def _trials_from_grid(grid, root: Path) -> list[dict]:
    trials = []
    for res in grid:
        df = res.metrics_dataframe
        history = df.to_dict("records") if df is not None and len(df) else []
        trial_id = (res.metrics or {}).get("trial_id") or Path(res.path).name
        trials.append({"trial_id": trial_id, "params": res.config["params"], "history": history,
                       "error": repr(res.error) if res.error else None,
                       "run_dir": str(root / "trials" / trial_id)})
    return sorted(trials, key=lambda t: t["trial_id"])


@contextlib.contextmanager
def _env(**values: str):
    """Set environment variables (unless already set) for the duration of the block."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def run_sweep(cfg, sweep: SweepConfig) -> dict:
    """Run the sweep; write the results table, plot and ``best.json``; return a summary dict."""
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler

    from raygen.ray_utils import init_ray

    root = Path(sweep.dir or cfg.run_dir).resolve()
    init_ray(cfg.ray)
    shared = run_stages(cfg, _stages_until(SHARED_STAGES[-1]), root / "shared")
    variants = trial_variants(sweep)
    log.info("sweep %s: %d trials, %d rungs of %d SFT steps, at most %d at once", sweep.name, len(variants),
             sweep.rungs, sweep.steps_per_rung, sweep.trial_resources.count)
    res = sweep.trial_resources
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(run_trial, cfg=cfg, sweep=sweep, sweep_dir=str(root)),
        {"CPU": res.cpus, **({"GPU": res.gpus} if res.gpus > 0 else {})})
    tuner = ray.tune.Tuner(
        trainable,
        param_space={"params": ray.tune.grid_search(variants)},
        tune_config=ray.tune.TuneConfig(
            metric=sweep.metric, mode="max", max_concurrent_trials=res.count,
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=sweep.rungs,
                                    grace_period=sweep.grace_period, reduction_factor=sweep.reduction_factor),
            trial_dirname_creator=lambda trial: trial.trial_id, reuse_actors=True),
        run_config=ray.tune.RunConfig(name=sweep.name, storage_path=str(root / "tune"),
                                      callbacks=_callbacks(sweep, root), verbose=1),
    )
    t0 = time.time()
    with _env(RAY_CHDIR_TO_TRIAL_DIR="0"):  # trials keep the driver's working directory: relative data.path
        grid = tuner.fit()                  # / lm.model stay valid (Tune forwards this variable to trials)
    trials = _trials_from_grid(grid, root)
    return write_results(trials, sweep, root, extra={"wall_s": round(time.time() - t0, 1), "experiment":
                                                     grid.experiment_path, "shared": {k: v["status"] for k, v in
                                                                                      shared.items()}})


def write_results(trials: list[dict], sweep: SweepConfig, root: Path, extra: dict | None = None) -> dict:
    """results.csv / results.md / metric_vs_step.png / best.json in ``root``; the summary dict."""
    from raygen.modelref import model_dir

    rows = summarize(trials, sweep.metric, sweep.rungs)
    write_csv(rows, root / "results.csv")
    (root / "results.md").write_text(f"# Sweep `{sweep.name}`: {sweep.metric} on {sweep.eval_rows} validation "
                                     f"rows after each rung\n\n" + to_markdown(rows), encoding="utf-8")
    plot_curves(trials, sweep.metric, root / "metric_vs_step.png")
    best = best_row(rows, sweep.metric)
    if best is None:
        errors = [t["error"] for t in trials if t["error"]]
        raise RuntimeError(f"no trial of sweep {sweep.name!r} reported {sweep.metric}; first error: "
                           f"{errors[0] if errors else 'none'} (see {root / 'results.md'})")
    run_dir = Path(best["run_dir"])
    ckpts = sorted((run_dir / "ray_train").glob("sft-*/step_*"))
    info = {"trial_id": best["trial_id"], "metric": sweep.metric, "value": best[f"last_{sweep.metric}"],
            "params": next(t["params"] for t in trials if t["trial_id"] == best["trial_id"]),
            "rung": best["rung"], "step": best["step"], "completed": best["rung"] >= sweep.rungs,
            "run_dir": str(run_dir),
            "model_dir": str(model_dir(run_dir / "sft") if (run_dir / "sft").exists() else run_dir / ".sft.tmp" / "model"),
            "checkpoint": str(ckpts[-1]) if ckpts else None, "config": str(run_dir / "config.yaml")}
    write_json(root / "best.json", info)
    log.info("best trial %s: %s=%.4f at step %s, model %s", info["trial_id"], sweep.metric, info["value"],
             info["step"], info["model_dir"])
    return {"best": info, "rows": rows, "sweep_dir": str(root), **(extra or {})}


__all__ = ["run_sweep", "run_trial", "trial_variants", "trial_config", "link_shared", "write_results",
           "SHARED_STAGES"]
