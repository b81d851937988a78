"""Corpus + SIDs on Amazon 2018 Industrial (MiniOneRec release): collision rates and codebook use.

    python -m benchmarks.sids_industrial [--run-dir runs/industrial] [section.field=value ...]

Runs the data, corpus and sids stages of configs/industrial.yaml (RQ-VAE 3 x 256) and writes
benchmarks/results/sids_industrial.json.

The build differs between machine kinds (raygen/pin.py says why), so the multi-session Industrial
benchmarks run on one pinned build: ``--pin benchmarks/pinned/industrial --out /tmp/sids.json`` runs the
data stage and copies the pinned corpus and sids stages in (checked: same config keys, same data tables,
intact files; ~10 s instead of ~15 min); ``--save-pin DIR`` pins the build this call made or found.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from raygen.config import load_config  # noqa: E402
from raygen.io import read_json  # noqa: E402
from raygen.provenance import write_result  # noqa: E402
from raygen.pipeline import run_pipeline  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default=str(ROOT / "configs/industrial.yaml"))
    p.add_argument("--run-dir", default=str(ROOT / "runs/industrial"))
    p.add_argument("--out", required=True, help="the result file (JSON; committed results live in benchmarks/results/)")
    p.add_argument("--pin", default="", help="use this pinned corpus + sids build (raygen.pin.use_pin)")
    p.add_argument("--save-pin", default="", help="pin the corpus and sids stages into this new folder")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    cfg = load_config(args.config, args.overrides)
    cfg.run_dir = args.run_dir
    t0 = time.time()
    if args.pin:
        from raygen.pin import install_pin

        print(f"pinned stages {install_pin(cfg, args.pin)} copied from {args.pin}", flush=True)
    run_pipeline(cfg, only=["data", "corpus", "sids"])
    if args.save_pin:
        from raygen.pin import save_pin

        save_pin(cfg, cfg.run_dir, args.save_pin, ["corpus", "sids"], note=" ".join(sys.argv))
        print(f"pinned corpus + sids of {cfg.run_dir} into {args.save_pin}", flush=True)
    run = Path(args.run_dir)
    sids, corpus = read_json(run / "sids/metrics.json"), read_json(run / "corpus/metrics.json")
    result = {
        "n_items": sids["n_items"], "method": sids["method"], "levels": cfg.sids.levels,
        "codebook_size": cfg.sids.codebook_size, "levels_final": sids["levels_final"],
        "collision_rate_before": sids["collision_rate_before"], "collision_rate": sids["collision_rate"],
        "collision_rate_sinkhorn": sids.get("collision_rate_sinkhorn"), "utilization": sids["utilization"],
        "perplexity": sids.get("perplexity"), "recon_error": sids.get("recon_error"),
        "corpus": {k: corpus.get(k) for k in ("n_teacher", "n_fallback", "keyword_backend", "embed_items_per_s",
                                              "keyword_items_per_s", "seconds")},
        "sids_seconds": sids["seconds"], "wall_s": round(time.time() - t0, 1), "pinned_from": args.pin or None,
        "command": " ".join(["python", "-m", "benchmarks.sids_industrial", *sys.argv[1:]]),
    }
    write_result(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
