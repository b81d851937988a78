"""GRPO after the quality benchmark's best SFT model, on Amazon 2018 Industrial: NDCG@10 / HR@10 before and after.

    .venv/bin/python -m benchmarks.rl_industrial [--steps 8] [--rollout-batch 8] [--group 4] [rl.field=value ...]

Picks the variant with the highest mean test NDCG@10 in benchmarks/results/quality_industrial.json
(seed 0 of it, or --seed), links that run's finished stages (data ... sft) into a new run folder
and runs the real ``rl`` and ``eval`` stages there. "before" is the quality run's own evaluation
(same test rows, same beam search), "after" is the evaluation of the model the rl stage hands on.
The rl stage's validation before/after (its keep-best check) is reported too: with
``rl.keep_best`` on (the default) a step that lowers validation NDCG@10 is not handed on.
Writes benchmarks/results/rl_industrial_stages.json (the 2-epoch prompt-format run: rl_industrial_stages_2ep.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.quality import link_cached, remember  # noqa: E402

from raygen.cli import setup_logging  # noqa: E402
from raygen.config import load_config  # noqa: E402
from raygen.io import read_json  # noqa: E402
from raygen.provenance import write_result  # noqa: E402
from raygen.pipeline import run_pipeline  # noqa: E402

KEYS = ("ndcg@10", "hr@10", "ndcg@5", "hr@5")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quality", default=str(ROOT / "benchmarks/results/quality_industrial.json"))
    p.add_argument("--quality-runs", default=str(ROOT / "runs/quality"))
    p.add_argument("--variant", default="", help="default: best mean test NDCG@10 in --quality")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=str(ROOT / "runs/rl_industrial"))
    p.add_argument("--out", required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rollout-batch", type=int, default=8)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--valid-rows", type=int, default=100, help="validation rows of the keep-best check")
    p.add_argument("overrides", nargs="*", help="more section.field=value (e.g. rl.kl_beta=0.1)")
    a = p.parse_args()
    setup_logging(False)

    quality = read_json(a.quality)
    variant = a.variant or max(quality["variants"],
                               key=lambda v: quality["variants"][v]["summary"]["ndcg@10"]["mean"])
    src = Path(a.quality_runs) / f"{variant.replace('+', '_')}-s{a.seed}"
    if not (src / "sft" / "_SUCCESS").exists():
        sys.exit(f"{src} has no finished sft stage: run benchmarks/quality.py first")
    before = read_json(src / "eval" / "metrics.json")["table"]["raygen"]

    rl = ["rl.enabled=true", f"rl.steps={a.steps}", f"rl.rollout_batch={a.rollout_batch}",
          f"rl.group_size={a.group}", f"rl.lr={a.lr}", f"rl.eval_rows={a.valid_rows}", "rl.checkpoint_every=0",
          f"rl.seed={a.seed}"]
    src_cfg = load_config(src / "config.yaml")
    cfg = load_config(src / "config.yaml", rl + list(a.overrides))
    cfg.run_dir = a.run_dir
    run = Path(a.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    cache: dict[str, Path] = {}
    remember(src_cfg, src, cache)
    link_cached(cfg, run, cache)
    t0 = time.time()
    run_pipeline(cfg, only=["data", "corpus", "sids", "lm", "align", "sft", "rl", "eval"])
    wall = time.time() - t0
    rlm = read_json(run / "rl" / "metrics.json")
    after = read_json(run / "eval" / "metrics.json")["table"]["raygen"]
    result = {
        "variant": variant, "seed": a.seed, "sft_run": str(src.relative_to(ROOT) if src.is_relative_to(ROOT) else src),
        "test_before": {k: before[k] for k in KEYS}, "test_after": {k: after[k] for k in KEYS},
        "test_rows": read_json(run / "eval" / "metrics.json")["n_rows"],
        "ndcg@10_before": before["ndcg@10"], "ndcg@10_after": after["ndcg@10"],
        "hr@10_before": before["hr@10"], "hr@10_after": after["hr@10"],
        "valid_before": {k: rlm["valid_before"][k] for k in KEYS},
        "valid_after_rl": {k: rlm["valid_after"][k] for k in KEYS},
        "handed_on": rlm["chosen"],
        "invalid_after": after.get("invalid", 0),
        "rl": {**{k: rlm.get(k) for k in ("steps", "reward_mean_first", "reward_mean_last", "sync_s_mean",
                                          "train_rows", "seconds")},
               **{f"{k}_total": round(sum(h.get(k, 0.0) for h in rlm.get("history", [])), 2)
                  for k in ("rollout_s", "train_s", "sync_s")},
               "reward_mean_per_step": [round(h.get("reward_mean", 0.0), 4) for h in rlm.get("history", [])]},
        "settings": {"steps": a.steps, "rollout_batch": a.rollout_batch, "group_size": a.group, "lr": a.lr,
                     "kl_beta": cfg.rl.kl_beta, "rewards": cfg.rl.rewards, "rollout_mode": cfg.rl.rollout_mode,
                     "valid_rows": a.valid_rows, "layers": cfg.lm.num_layers},
        "wall_s": round(wall, 1),
        "command": " ".join(["python", "-m", "benchmarks.rl_industrial", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
    }
    write_result(a.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
