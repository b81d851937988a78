"""Run the whole raygen pipeline from one YAML config (the same as ``raygen run`` / ``python -m raygen run``).

    python jobs/full_pipeline.py --config configs/default.yaml [section.field=value ...]
    ray job submit --working-dir . -- python jobs/full_pipeline.py --config configs/gpu.yaml

raygen must be installed in the interpreter that runs this (``bash scripts/setup.sh`` or
``pip install -e .``; cluster.yaml's setup commands install it on every node): the job imports the
installed package, never a path next to this file. Under ``ray job submit`` give run_dir and data paths as
URIs or absolute paths on shared storage (a relative path lands in the job's temporary copy of the working
dir). Finished stages with an unchanged config are skipped, so rerunning resumes after a crash.
"""
import sys

from raygen.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
