"""`raygen recommend --histories` on a finished real run: does the batch job serve what the eval stage
scored, and how fast?

    .venv/bin/python -m benchmarks.batch_recommend --run runs/bench_industrial \
        --out benchmarks/results/batch_recommend_industrial.json [--rows 1000]

Writes the histories of the run's test rows (the first ``--rows`` in eval's order; 0 = all) to a JSON Lines
file in a temporary folder, runs the batch job through the CLI twice, with ``--no-hybrid`` (the model's beam
search) and with the run's default (the ranking eval chose on valid), and compares each output with the eval
stage's ``predictions_test.parquet`` of the same rows: the share of users whose top 10 is the eval's list
exactly (``--no-hybrid``; the same prompt builder, beam search and batch size, so it should be 1.0), and
NDCG@10 / HR@10 of both outputs against the targets beside the eval stage's figures for the same rows (and
the job's own scoring of the targets it was given, with 95 % intervals).
Timing: each CLI call's wall time (model load included) and the job's own users/s.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.quality_local import machine  # noqa: E402
from raygen.io import read_json, read_parquet  # noqa: E402
from raygen.provenance import write_result  # noqa: E402


def ndcg_hr(lists: list[list[int]], targets: list[int], k: int = 10) -> dict:
    """NDCG@k / HR@k of item lists (shorter lists padded) by the eval stage's own metric code."""
    from raygen.eval.metrics import PAD_ITEM, ranking_metrics

    topk = np.array([(list(lst) + [PAD_ITEM] * k)[:k] for lst in lists], dtype=np.int64)
    return {m: round(v, 4) for m, v in ranking_metrics(topk, np.asarray(targets), [k]).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished run folder (raygen run through eval)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", type=int, default=1000, help="test rows to serve (eval's order); 0 = all")
    a = ap.parse_args()
    run = Path(a.run)
    preds = read_parquet(run / "eval/predictions_test.parquet").to_pylist()
    preds = preds[:a.rows] if a.rows else preds
    samples = read_parquet(run / "data/samples.parquet")
    histories = samples.column("history").to_pylist()
    users = samples.column("user_id").to_pylist()
    targets = [p["target"] for p in preds]
    result = {"run": str(run), "rows": len(preds), "of_test_rows": read_parquet(run / "eval/predictions_test.parquet").num_rows,
              "machine": machine(), "eval_serving": read_json(run / "eval/metrics.json").get("serving"),
              "eval_model_on_these_rows": ndcg_hr([p["topk"] for p in preds], targets)}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "users.jsonl"
        src.write_text("".join(json.dumps({"user_id": users[p["row_id"]], "history": histories[p["row_id"]],
                                           "target": p["target"]}) + "\n" for p in preds))
        for name, flag in (("model", ["--no-hybrid"]), ("served", [])):
            out = Path(tmp) / f"{name}.parquet"
            t0 = time.time()
            proc = subprocess.run([sys.executable, "-m", "raygen", "recommend", "--run", str(run), "--histories",
                                   str(src), "--out", str(out), "-k", "10", *flag], capture_output=True, text=True)
            wall = time.time() - t0
            if proc.returncode:
                sys.exit(f"recommend --histories failed ({proc.returncode}): {proc.stderr[-2000:]}")
            summary = json.loads(proc.stdout)
            rows = read_parquet(out).to_pylist()
            lists = [r["item_ids"] for r in rows]
            entry = {"ranking": summary["ranking"], "ranked": summary["ranked"], "skipped": summary["skipped"]["total"],
                     "job_seconds": summary["seconds"], "users_per_s": summary["users_per_s"],
                     "cli_wall_s": round(wall, 1), "precision": summary["precision"], **ndcg_hr(lists, targets),
                     "distinct_top1": len({lst[0] for lst in lists if lst}),
                     "job_metrics": summary["metrics"]}  # the job's own scoring of the targets (same rows)
            if name == "model":
                entry["same_top10_as_eval"] = round(float(np.mean([lst == p["topk"] for lst, p in zip(lists, preds)])), 4)
                entry["same_top1_as_eval"] = round(float(np.mean([lst[:1] == p["topk"][:1] for lst, p in zip(lists, preds)])), 4)
            result[name] = entry
            print(name, json.dumps(entry), flush=True)
    result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    write_result(a.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
