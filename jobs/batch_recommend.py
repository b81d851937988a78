"""Top-K recommendations for a file of users from a finished run, on a Ray cluster's workers.

    python jobs/batch_recommend.py --run runs/industrial --histories users.jsonl --out recs.parquet -k 10
    ray job submit --working-dir . -- python jobs/batch_recommend.py --run /shared/runs/industrial \
        --histories /shared/users.jsonl --out /shared/recs.parquet --workers 4

The same as `raygen recommend --histories` (``--workers N``: the beam search on N actors of the generation
pool, each reserving the run's ``eval.resources``; under ``ray job submit`` the job joins the cluster through
RAY_ADDRESS). raygen must be installed in the job's interpreter (scripts/setup.sh, cluster.yaml's setup
commands). Give absolute paths or URIs: a relative one lands in the job's copy of the working dir.
"""
import sys

from raygen.cli import main

if __name__ == "__main__":
    sys.exit(main(["recommend", *sys.argv[1:]]))
