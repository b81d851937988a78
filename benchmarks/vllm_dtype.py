"""vLLM's dtype on this machine: the keyword teacher (SmolLM2-135M-Instruct, ``LLM.chat``, greedy) on the same
catalog items in fp32 and in bf16, one fresh process per dtype (a vLLM engine spawns its own engine process;
starting two in one process is not supported on CPU).

Why it exists: vLLM's ``dtype='auto'`` takes the checkpoint's dtype (bf16 for SmolLM2). On a CPU without
native bf16 (AVX2 only) torch emulates bf16 arithmetic, and raygen's training measured it ~10x slower than
fp32 there. raygen now picks the engine dtype from the hardware (``raygen.precision.engine_dtype``,
``corpus.teacher_bf16`` / ``rl.rollout_bf16``); this is the measurement behind that choice.

    python -m benchmarks.vllm_dtype --run runs/industrial --items 64 --batch 64 \\
        --out benchmarks/results/vllm_dtype.json

``--run`` is a run folder with a data stage (its ``items.parquet``). Engine start-up (load + compile +
warm-up) is timed apart from throughput. Writes the JSON and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(run: str, dtype: str, n_items: int, batch: int) -> dict:
    """Keyword items/s of one vLLM teacher engine in ``dtype`` (in this process)."""
    from raygen.corpus.keywords import SOURCE_TEACHER, extract_keywords
    from raygen.corpus.teacher import VLLMBackend
    from raygen.io import read_parquet

    items = read_parquet(Path(run) / "data" / "items.parquet").slice(0, n_items).to_pylist()
    t0 = time.perf_counter()
    teacher = VLLMBackend("smollm2", dtype=dtype)
    start = time.perf_counter() - t0
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    results = []
    for i in range(0, len(items), batch):
        results += extract_keywords(teacher, items[i:i + batch], 5, max_new_tokens=24)
    sec = time.perf_counter() - t0
    return {"dtype": dtype, "items": len(items), "batch": batch, "start_s": round(start, 1),
            "seconds": round(sec, 2), "items_per_s": round(len(items) / sec, 3),
            "parsed": sum(src == SOURCE_TEACHER for _, src in results),
            "load_avg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64, help="items per LLM.chat call")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--out", default="")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # child mode: measure this dtype, print JSON
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one(a.run, a.one, a.items, a.batch)), flush=True)
        return
    if not a.out:
        raise SystemExit("--out is required")
    from raygen.provenance import write_result
    from raygen.precision import cpu_native_bf16, engine_dtype

    t0 = time.time()
    runs = {}
    for dtype in a.dtypes.split(","):
        proc = subprocess.run([sys.executable, __file__, "--run", a.run, "--items", str(a.items), "--batch",
                               str(a.batch), "--one", dtype], capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            raise SystemExit(f"{dtype}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        runs[dtype] = json.loads(line[-1][len("RESULT "):])
        print(dtype, runs[dtype], flush=True)
    import torch
    import vllm

    auto, reason = engine_dtype("auto")
    result = {"keywords": runs, "auto_choice": {"dtype": auto, "reason": reason},
              "machine": {"cpus": os.cpu_count(), "cpu_native_bf16": cpu_native_bf16(), "cuda": torch.cuda.is_available(),
                          "platform": platform.platform(), "torch": torch.__version__, "vllm": vllm.__version__},
              "wall_s": round(time.time() - t0, 1), "command": " ".join(["python", *sys.argv])}
    if {"float32", "bfloat16"} <= set(runs):
        result["fp32_over_bf16_items_per_s"] = round(runs["float32"]["items_per_s"] / runs["bfloat16"]["items_per_s"], 2)
    write_result(a.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
