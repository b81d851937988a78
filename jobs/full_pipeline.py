"""Run the whole raygen pipeline from one YAML config.

    python jobs/full_pipeline.py --config configs/default.yaml [section.field=value ...]
    ray job submit --working-dir . -- python jobs/full_pipeline.py --config configs/default.yaml

Finished stages with an unchanged config are skipped, so rerunning resumes after a crash.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from raygen.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
