"""``benchmarks/scaling.py`` on a simulated 2-node Ray cluster (``ray.cluster_utils.Cluster``, 2 nodes x 1
CPU): the multi-node paths (actor and Train-worker placement across nodes, Ray Train checkpoints of both
ranks merged in shared storage) run, and the benchmark reports them from Ray's own records.

The benchmark runs in a subprocess: a process can be connected to one Ray only, this session may already hold
the local Ray of the ``ray_local`` fixture (session-scoped: shutting it down here would break the tests after
this one), and the simulated cluster must get its own temp folder (``RAY_TMPDIR``) before Ray starts, so no
other ``ray.init()`` on the machine finds and joins it. A subprocess also cannot leave this process connected
to a dead cluster when it fails, and its timeout bounds a hang.

Stages: one of each kind of distributed work (a Ray Data actor pool, Ray Train workers with DeepSpeed
ZeRO-2, the generation actor pool); the model is the conftest's tiny Llama with its offline tokenizer, so no
packaged model is needed. About 3-5 minutes on 2 loaded cores (Ray Train's start-up dominates).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raygen.io import read_json

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STAGES = ["corpus_teacher", "sft_zero2", "eval"]


def test_scaling_benchmark_on_a_simulated_two_node_cluster(tmp_path, tiny_model_dir):
    out = tmp_path / "scaling.json"
    cmd = [sys.executable, "-m", "benchmarks.scaling", "--simulate-nodes", "2", "--cpus-per-node", "1",
           "--workers", "1,2", "--stages", ",".join(STAGES), "--model", str(tiny_model_dir),
           "--teacher-items", "16", "--teacher-queries", "0", "--examples", "16", "--steps", "2",
           "--batch-size", "2", "--prompts", "4", "--catalog", "16", "--beam", "3",
           "--work", str(tmp_path / "shared"), "--keep-work", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]

    res = read_json(out)
    assert out.with_suffix(".png").stat().st_size > 0
    nodes = res["cluster"]["nodes"]
    assert len(nodes) == 2 and len({n["node_id"] for n in nodes}) == 2 and [n["cpus"] for n in nodes] == [1, 1]
    assert res["stage_order"] == STAGES and sorted(res["stages"]) == sorted(STAGES)
    for stage, rows in res["stages"].items():
        assert [r["workers"] for r in rows] == [1, 2], stage
        for r in rows:
            assert "error" not in r and r["throughput"] > 0, (stage, r)
            # where each worker ran, from Ray's actor table: one per worker; 2 workers on 2 distinct nodes
            assert len(r["placement"]) == r["workers"], (stage, r["placement"])
            assert len({p["node_id"] for p in r["placement"]}) == r["workers"], (stage, r["placement"])
            assert {p["node_id"] for p in r["placement"]} <= {n["node_id"] for n in nodes}
        assert rows[0]["efficiency"] == 1.0 and rows[1]["efficiency"] > 0
        if stage != "sft_zero2":
            assert all(r["rows_in"] == r["rows_out"] > 0 for r in rows), (stage, rows)

    work = Path(res["work"])
    assert work.parent == tmp_path / "shared"
    for r in res["stages"]["sft_zero2"]:
        assert r["world_size"] == r["workers"] and r["steps"] == 2 and r["checkpoints"] == ["step_0000001",
                                                                                          "step_0000002"]
        ckpt = Path(r["checkpoint"])  # the latest checkpoint, in the storage both nodes share
        assert ckpt.is_dir() and ckpt.parent.parent == work / "ray_train"
        # ZeRO-2: every rank (one per node with 2 workers) wrote its optimizer shard into the same checkpoint
        shards = sorted(p.name for p in (ckpt / "deepspeed" / "ds").glob("zero_pp_rank_*_optim_states.pt"))
        assert shards == [f"zero_pp_rank_{i}_mp_rank_00_optim_states.pt" for i in range(r["workers"])]
        assert (ckpt / "trainable.safetensors").is_file() and (ckpt / "state.json").is_file()
        assert (Path(r["exported_model"]) / "model.safetensors").is_file()
