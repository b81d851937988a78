"""Time the README's main command on the embedded default, stage by stage.

    .venv/bin/python -m benchmarks.full_pipeline [--config configs/default.yaml] [--run-dir runs/bench_full]
    .venv/bin/python -m benchmarks.full_pipeline --config configs/industrial.yaml --pin benchmarks/pinned/industrial \
        --run-dir runs/bench_industrial --out benchmarks/results/full_pipeline_industrial.json

Runs ``python jobs/full_pipeline.py --config CONFIG --run-dir RUN_DIR`` in a fresh run folder (deleted
first, so no stage is skipped), measures its wall time, reads each stage's ``seconds`` from its
metrics.json and writes benchmarks/results/full_pipeline.json. The target is <= 20 minutes on a
2-core CPU machine; the file records the machine's load average so numbers taken on a busy machine
are recognisable.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from raygen.io import read_json  # noqa: E402
from raygen.provenance import write_result  # noqa: E402
from raygen.pipeline import stage_names  # noqa: E402

TARGET_S = 20 * 60


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--run-dir", default="runs/bench_full")
    p.add_argument("--out", required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    p.add_argument("--pin", default="", help="a pin folder (`raygen run --pin`): its stages are copied in, checked")
    p.add_argument("overrides", nargs="*", help="section.field=value, passed on to the job")
    args = p.parse_args()
    run = ROOT / args.run_dir
    if run.exists():
        shutil.rmtree(run)
    cmd = [sys.executable, "jobs/full_pipeline.py", "--config", args.config, "--run-dir", args.run_dir,
           *(["--pin", args.pin] if args.pin else []), *args.overrides]
    load_before = os.getloadavg()
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    wall = time.time() - t0
    stages = {}
    for name in stage_names():
        m = run / name / "metrics.json"
        if m.exists():
            stages[name] = read_json(m).get("seconds")
    ev = read_json(run / "eval" / "metrics.json")
    result = {
        "wall_s": round(wall, 1),
        "wall_min": round(wall / 60, 2),
        "target_s": TARGET_S,
        "within_target": wall <= TARGET_S,
        "stage_seconds": stages,
        "overhead_s": round(wall - sum(v for v in stages.values() if v), 1),
        "test_metrics": ev.get("table"),
        "eval_rows": ev.get("n_rows"),
        "valid_metrics": {m: {k: v for k, v in r.items() if k.startswith(("hr@", "ndcg@"))}
                          for m, r in ev.get("splits", {}).get("valid", {}).items()},
        "serving": ev.get("serving"),
        "collapse": {m: {k: r.get(k) for k in ("collapsed", "distinct_top1", "coverage@10", "same_top10_share")}
                     for m, r in ev.get("splits", {}).get(ev.get("split", "test"), {}).items()},
        "precision": {s: read_json(run / s / "metrics.json").get("precision") for s in ("sft", "eval")
                      if (run / s / "metrics.json").exists()},
        "command": " ".join(["python", "-m", "benchmarks.full_pipeline", *sys.argv[1:]]),
        "timed_command": " ".join(["python", *cmd[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
    }
    write_result(args.out, result)
    print(json.dumps(result, indent=1))
    print(f"full pipeline: {wall / 60:.1f} min (target <= {TARGET_S // 60} min): "
          f"{'OK' if wall <= TARGET_S else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
