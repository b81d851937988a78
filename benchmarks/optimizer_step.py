"""Seconds per AdamW step on a real model's parameters: torch's default (a per-tensor loop on CPU), foreach and
fused (what :func:`raygen.train.engine.adamw` picks), with random gradients, in the parameter groups raygen trains.

    python -m benchmarks.optimizer_step --model-dir ~/.cache/raygen/models/smollm2-135m-instruct --layers 4 \\
        --threads 1,2 --out benchmarks/results/optimizer_step.json

Why it matters: py-spy on a 4-layer SmolLM2 sequence-format SFT run (fit_local, 1 thread, 3 jobs on 2 cores)
put ~1/3 of the step in ``_single_tensor_adam``: 65 % of the parameters are the (tied) embedding matrix,
updated densely. Run it on idle cores: on loaded ones the kinds came out level when interleaved (0.73-0.80 s)
while a fused-only run of the same process took 0.11 s, so memory-bandwidth sharing dominates there.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.quality_local import load, machine  # noqa: E402

from raygen.provenance import write_result  # noqa: E402
from raygen.train.masks import prepare_trainable  # noqa: E402

KINDS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def time_kinds(groups: list[dict], steps: int, rounds: int) -> dict[str, float]:
    """Median seconds per step of each optimizer kind, the kinds interleaved round by round (a load change on a
    shared machine hits every kind alike; the one measured first is not penalised by warm-up effects)."""
    opts = {k: torch.optim.AdamW(groups, lr=1e-3, **kw) for k, kw in KINDS.items()}
    for opt in opts.values():
        opt.step()  # allocates the moments
    times: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(rounds):
        for k, opt in opts.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            times[k].append((time.perf_counter() - t0) / steps)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=3, help="steps per timing")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the median is reported)")
    ap.add_argument("--out", required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    a = ap.parse_args()
    lm, tok = load(a.model_dir, a.layers, torch.device("cpu"))
    lm, groups = prepare_trainable(lm, "full", [], weight_decay=0.01)
    for p in lm.parameters():
        p.grad = torch.randn_like(p)
    n = sum(p.numel() for g in groups for p in g["params"])
    rows = []
    for threads in [int(t) for t in a.threads.split(",")]:
        torch.set_num_threads(threads)
        for kind, s in time_kinds(groups, a.steps, a.rounds).items():
            rows.append({"threads": threads, "optimizer": kind, "s_per_step": round(s, 4)})
            print(f"threads {threads} {kind:8s} {s:.4f} s/step (median of {a.rounds})", flush=True)
    result = {"model": os.path.basename(a.model_dir.rstrip("/")), "layers": a.layers, "params_m": round(n / 1e6, 2),
              "rows": rows, "command": " ".join(["python", "-m", "benchmarks.optimizer_step", *sys.argv[1:]]),
              "machine": machine()}
    write_result(a.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
