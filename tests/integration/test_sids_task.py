"""The sids stage as a Ray task: in a pipeline (Ray up) the quantizer fit runs on a worker that gets the corpus
stage's location, not in the driver, and writes exactly the files the in-process path writes."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from raygen.io import read_json
from raygen.runner import Stage, run_stages
from raygen.sid.config import SidConfig
from raygen.sid.stage import _remote_wanted, _task_gpus, compute_sids, run_sids
from tests.test_sid_stage import fake_corpus

pytestmark = pytest.mark.integration


def test_sids_task_on_a_worker_writes_what_the_driver_would(ray_local, tmp_path):
    cfg = SimpleNamespace(sids=SidConfig(levels=2, codebook_size=8, kmeans_iters=10))
    stages = [Stage("corpus", fake_corpus), Stage("sids", run_sids, deps=("corpus",), sections=("sids",))]
    metrics = run_stages(cfg, stages, tmp_path / "run")["sids"]["metrics"]
    node = ray_local.get_runtime_context().get_node_id()
    assert metrics["nodes"] == {"sids": [node]}  # reported by the task itself

    local = tmp_path / "local"
    local.mkdir()
    expected = compute_sids(cfg.sids, tmp_path / "run" / "corpus", local)  # the same work in this process
    names = sorted(p.name for p in local.iterdir())
    assert names == ["codes.parquet", "quantizer.json", "quantizer.safetensors", "tokens.parquet"]
    for name in names:
        assert (tmp_path / "run" / "sids" / name).read_bytes() == (local / name).read_bytes(), name
    assert {k: v for k, v in metrics.items() if k not in ("nodes", "fit_seconds", "seconds", "fit")} == \
        {k: v for k, v in expected.items() if k not in ("fit_seconds", "fit")}
    assert read_json(tmp_path / "run" / "sids" / "metrics.json")["nodes"] == {"sids": [node]}


def test_a_cuda_device_always_means_a_gpu_task(ray_local):
    assert _remote_wanted(SidConfig(device="cuda")) and _remote_wanted(SidConfig(device="cuda:1"))
    assert _task_gpus("cuda") == _task_gpus("cuda:1") == 1.0  # reserved on a GPU worker, never the driver
    assert _task_gpus("cpu") == 0.0
    assert _task_gpus("auto") == (1.0 if ray_local.cluster_resources().get("GPU", 0) >= 1 else 0.0)
