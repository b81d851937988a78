"""Sweep pieces that need no Ray: the sweep config, the trial grid and configs, results tables, plot."""
from __future__ import annotations

import csv

import pytest

from raygen.configbase import ConfigError
from raygen.tune.config import SweepConfig, load_sweep_config
from raygen.tune.results import best_row, plot_curves, summarize, to_markdown, write_csv
from raygen.tune.sweep import trial_config, trial_variants


def test_tiny_sweep_yaml_loads_with_overrides():
    cfg, sweep = load_sweep_config("configs/sweep_tiny.yaml", ["sweep.lrs=[0.01]", "lm.num_layers=2"])
    assert sweep.lrs == [0.01] and sweep.inits == ["mean", "star"] and cfg.lm.num_layers == 2
    assert cfg.corpus.keyword_backend == "fallback" and sweep.rungs * sweep.steps_per_rung == 4


@pytest.mark.parametrize("override, match", [
    ("sweep.inits=[mean,lora]", "sweep.inits"), ("sweep.rungs=0", "sweep.rungs"),
    ("sweep.grace_period=5", "grace_period"), ("sweep.trial_resources.cpus=0", "sweep.trial_resources.cpus"),
    ("sweep.trial_resources.count=0", "sweep.trial_resources.count"),
    ("sweep.metric=mrr", "sweep.metric"), ("sweep.metric=ndcg@7", "eval.ks"), ("sweep.colour=red", "sweep.colour"),
    ("sweep.reduction_factor=1", "reduction_factor"), ("sweep.lrs=[]", "sweep.lrs"),
])
def test_bad_sweep_values_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_sweep_config("configs/sweep_tiny.yaml", [override])


def test_sweep_errors_name_the_override_or_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^command-line override 'sweep.rungs=0': sweep.rungs"):
        load_sweep_config("configs/sweep_tiny.yaml", ["sweep.lrs=[0.01]", "sweep.rungs=0"])
    with pytest.raises(ConfigError, match=r"^command-line override 'sft.lr=-1': .*lr"):
        load_sweep_config("configs/sweep_tiny.yaml", ["sft.lr=-1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep:\n  rungs: 0\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: sweep.rungs"):  # from the file, not the (valid) override
        load_sweep_config(bad, ["sweep.lrs=[0.01]"])


def test_grid_expands_depths_only_for_sa_init_and_repeats_shift_seeds():
    sweep = SweepConfig(lrs=[1e-4, 1e-3], inits=["random", "sa_init", "star"], sa_init_depths=[1, 2],
                        lora_ranks=[4], num_samples=2, rungs=2, steps_per_rung=5)
    variants = trial_variants(sweep)
    assert len(variants) == 2 * (1 + 2 + 1) * 1 * 2  # repeats x (random + 2 depths + star) x ranks x lrs
    assert {v["sa_init_depth"] for v in variants if v["init"] != "sa_init"} == {None}
    assert sorted({v["sa_init_depth"] for v in variants if v["init"] == "sa_init"}) == [1, 2]

    cfg, _ = load_sweep_config("configs/sweep_tiny.yaml")
    star = trial_config(cfg, {"init": "star", "lr": 1e-3, "lora_rank": 4, "repeat": 1}, sweep, "/tmp/t")
    assert (star.lm.init, star.align.enabled, star.sft.lr, star.sft.max_steps) == ("mean", True, 1e-3, 10)
    assert (star.sft.mode, star.sft.lora_r, star.sft.lora_alpha) == ("lora", 4, 8)  # alpha/r kept at 16/8
    assert star.sft.seed == cfg.sft.seed + 1 and star.lm.seed == cfg.lm.seed + 1 and star.run_dir == "/tmp/t"
    sa = trial_config(cfg, {"init": "sa_init", "lr": 1e-4, "sa_init_depth": 1}, sweep, "/tmp/u")
    assert (sa.lm.init, sa.lm.sa_init_depth, sa.align.enabled, sa.sft.mode) == ("sa_init", 1, False, "full")
    # only lm/align/sft differ from the base: the shared stages keep their keys
    assert (sa.data, sa.corpus, sa.sids) == (cfg.data, cfg.corpus, cfg.sids)


def _trials():
    def hist(*vals):
        return [{"rung": i + 1, "step": 2 * (i + 1), "loss": 3.0 - i, "ndcg@10": v, "hr@10": 2 * v}
                for i, v in enumerate(vals)]

    return [
        {"trial_id": "t0", "params": {"init": "mean", "lr": 1e-4}, "history": hist(0.10, 0.20), "run_dir": "/r/t0"},
        {"trial_id": "t1", "params": {"init": "star", "lr": 1e-3}, "history": hist(0.30, 0.25), "run_dir": "/r/t1"},
        {"trial_id": "t2", "params": {"init": "mean", "lr": 1e-3}, "history": hist(0.05), "run_dir": "/r/t2"},
        {"trial_id": "t3", "params": {"init": "star", "lr": 1e-4}, "history": [], "error": "RuntimeError('boom')\nx"},
    ]


def test_summary_rows_status_and_best_by_last_report(tmp_path):
    rows = summarize(_trials(), "ndcg@10", rungs=2)
    by = {r["trial_id"]: r for r in rows}
    assert [by[t]["status"] for t in ("t0", "t1", "t2")] == ["completed", "completed", "stopped by ASHA"]
    assert by["t3"]["status"].startswith("error: RuntimeError('boom')") and by["t3"]["rung"] == 0
    assert by["t1"]["best_ndcg@10"] == 0.30 and by["t1"]["last_ndcg@10"] == 0.25 and by["t1"]["last_hr@10"] == 0.5
    assert (by["t2"]["rung"], by["t2"]["step"]) == (1, 2)
    assert best_row(rows, "ndcg@10")["trial_id"] == "t1"  # 0.25 last beats t0's 0.20 last
    assert best_row(summarize(_trials()[3:], "ndcg@10", 2), "ndcg@10") is None

    write_csv(rows, tmp_path / "r.csv")
    back = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [r["trial_id"] for r in back] == ["t0", "t1", "t2", "t3"] and back[1]["init"] == "star"
    md = to_markdown(rows).splitlines()
    assert md[0].startswith("| trial_id | init | lr |") and "run_dir" not in md[0] and len(md) == 2 + 4
    plot_curves(_trials(), "ndcg@10", tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_tune_callbacks_tensorboard_always_mlflow_only_when_installed(tmp_path, monkeypatch):
    import importlib.machinery
    import sys
    import types

    pytest.importorskip("ray.tune")
    from ray.tune.logger import TBXLoggerCallback

    from raygen.tune.sweep import _callbacks

    real = importlib.util.find_spec("mlflow") is not None
    if not real:  # the CI case: no mlflow, TensorBoard only
        assert [type(c) for c in _callbacks(SweepConfig(), tmp_path)] == [TBXLoggerCallback]
        fake = types.ModuleType("mlflow")
        fake.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
        monkeypatch.setitem(sys.modules, "mlflow", fake)
    cbs = _callbacks(SweepConfig(name="exp"), tmp_path)
    assert type(cbs[0]) is TBXLoggerCallback and len(cbs) == 2
    assert (cbs[1].tracking_uri, cbs[1].experiment_name) == ((tmp_path / "mlruns").as_uri(), "exp")
    assert len(_callbacks(SweepConfig(mlflow=False), tmp_path)) == 1
    assert _callbacks(SweepConfig(mlflow_tracking_uri="http://mlflow:5000"), tmp_path)[1].tracking_uri == \
        "http://mlflow:5000"


def test_old_sweep_resource_keys_load_into_trial_resources(tmp_path, caplog):
    import logging

    text = open("configs/sweep_tiny.yaml").read()
    assert "trial_resources: {count: 1, cpus: 1.0}" in text
    old = tmp_path / "old.yaml"
    old.write_text(text.replace("trial_resources: {count: 1, cpus: 1.0}",
                                "max_concurrent_trials: 2\n  trial_cpus: 0.5"))
    with caplog.at_level(logging.WARNING, logger="raygen"):
        _, sweep = load_sweep_config(old)
    assert (sweep.trial_resources.count, sweep.trial_resources.cpus, sweep.trial_resources.gpus) == (2, 0.5, 0.0)
    assert "config key 'sweep.trial_cpus' is now 'sweep.trial_resources.cpus'" in caplog.text
    assert "config key 'sweep.max_concurrent_trials' is now 'sweep.trial_resources.count'" in caplog.text
    with pytest.raises(ConfigError, match=r"sweep\.trial_cpus is the old name of sweep\.trial_resources\.cpus"):
        load_sweep_config(old, ["sweep.trial_resources.cpus=2", "sweep.trial_cpus=1"])
    # an old pipeline key in a sweep YAML is upgraded too
    _, sweep2 = load_sweep_config("configs/sweep_tiny.yaml", ["sft.cpus_per_worker=1", "sweep.trial_cpus=2"])
    assert sweep2.trial_resources.cpus == 2.0
