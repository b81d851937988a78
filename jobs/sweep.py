"""Ray Tune sweep: SID init strategy x SFT lr (x SA-Init depth, LoRA rank), ASHA over SFT rungs.

    python jobs/sweep.py --config configs/sweep_tiny.yaml [section.field=value ...]
    python jobs/sweep.py --config configs/sweep_tiny.yaml sweep.lrs=[1e-4,1e-3] sweep.inits=[random,star]
    ray job submit --working-dir . -- python jobs/sweep.py --config configs/sweep_tiny.yaml

The YAML holds a pipeline config plus a top-level ``sweep`` section (raygen/tune/config.py).
Prints the results table and the best trial; writes results.csv / results.md /
metric_vs_step.png / best.json into the sweep folder (sweep.dir, default the run_dir).
"""
import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/sweep_tiny.yaml", help="pipeline YAML with a `sweep` section")
    p.add_argument("overrides", nargs="*", help="section.field=value (sweep.* included)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from raygen.configbase import ConfigError
    from raygen.tune import load_sweep_config, run_sweep

    try:
        cfg, sweep = load_sweep_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"sweep: error: {e}", file=sys.stderr)
        return 2
    summary = run_sweep(cfg, sweep)
    print((Path(summary["sweep_dir"]) / "results.md").read_text(encoding="utf-8"))
    print("best trial:", json.dumps(summary["best"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
