"""A run folder on object storage, end to end against a local S3 server (moto on 127.0.0.1).

The synthetic default (shrunk by overrides) runs as ``raygen run`` with ``run_dir=s3://<bucket>/run`` in a
subprocess (its own local Ray, which inherits the AWS variables pointing at the server); the driver is
killed with SIGKILL once SFT has stored checkpoints under ``<run>/ray_train``; a second ``raygen run``
takes over the dead driver's lease, skips the finished stages, resumes SFT from the checkpoint and
finishes; ``raygen recommend --run s3://...`` then answers from the bucket alone.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _s3 import local_s3

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SFT_STEPS = 24


def _overrides(run: str, model_dir: Path) -> list[str]:
    syn = {"n_items": 30, "n_users": 24, "n_categories": 3, "n_tastes": 2, "min_seq_len": 4, "max_seq_len": 6}
    return [f"run_dir={run}", "ray.num_cpus=2", *[f"data.synthetic.{k}={v}" for k, v in syn.items()],
            "corpus.keyword_backend=fallback", "corpus.n_queries=0", "sids.levels=2", "sids.codebook_size=8",
            "sids.kmeans_iters=10", f"lm.model={model_dir}", "lm.num_layers=0", "lm.init=mean", "align.enabled=false",
            "sft.resources.count=1", "sft.resources.cpus=1", "sft.deepspeed=false", "sft.batch_size=4",
            f"sft.max_steps={SFT_STEPS}", "sft.checkpoint_every=4", "sft.max_len=96", "sft.valid_every=0",
            "rl.enabled=false", "eval.splits=[test]", "eval.max_rows=8", "eval.resources.count=0",
            "eval.beam_width=5", "eval.ks=[1,5]", "eval.baselines=[popularity]"]


def _raygen_run(s3, tmp: Path, overrides: list[str]) -> subprocess.Popen:
    env = {**os.environ, **s3.env, "OMP_NUM_THREADS": "1", "RAYGEN_CACHE": str(tmp / "cache"),
           "RAY_ADDRESS": "", "PYTHONPATH": str(ROOT)}
    name = tmp / f"run-{time.time_ns()}"
    out, err = open(f"{name}.out", "w"), open(f"{name}.err", "w")
    proc = subprocess.Popen([sys.executable, "-m", "raygen", "run", "--config", "configs/default.yaml", *overrides],
                            cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
    proc.files = (Path(out.name), Path(err.name))
    return proc


def _tail(proc: subprocess.Popen) -> str:
    return proc.files[1].read_text()[-3000:]


def _stop(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and the local Ray it started (its own session: started with start_new_session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _checkpoints(s3) -> set[str]:
    return {m.group(1) for k in s3.keys("run/ray_train/") if (m := re.search(r"/(step_\d+)/state\.json$", k))}


@pytest.fixture(scope="module")
def s3():
    with local_s3() as server:
        yield server


def test_s3_run_killed_mid_sft_resumes_and_serves(s3, tmp_path, tiny_model_dir, monkeypatch, capsys):
    run = s3.uri("run")
    overrides = _overrides(run, tiny_model_dir)
    first = _raygen_run(s3, tmp_path, overrides)
    try:
        deadline = time.time() + 150
        while len(_checkpoints(s3)) < 2:  # two: the first one is surely registered with Ray Train by then
            assert first.poll() is None, f"the first run ended before SFT checkpointed:\n{_tail(first)}"
            assert time.time() < deadline, f"no SFT checkpoint in the bucket after 150 s:\n{_tail(first)}"
            time.sleep(0.2)
    finally:
        _stop(first)
    keys = s3.keys("run/")
    assert "run/sft/_SUCCESS" not in keys and "run/lm/_SUCCESS" in keys and "run/.raygen_lock.json" in keys

    second = _raygen_run(s3, tmp_path, overrides)  # takes over the dead driver's lease
    try:
        assert second.wait(timeout=150) == 0, _tail(second)
    finally:
        _stop(second)
    status = json.loads(second.files[0].read_text())
    assert status["lm"] == "skipped" and status["sft"] == "ran" and status["report"] == "ran", status

    keys = s3.keys("run/")
    for stage in ("data", "corpus", "sids", "lm", "align", "sft", "rl", "eval", "report"):
        assert f"run/{stage}/_SUCCESS" in keys, stage
    assert not [k for k in keys if re.match(r"run/\.\w+\.tmp/", k)], "temporary prefixes left behind"
    assert "run/.raygen_lock.json" not in keys and "run/config.yaml" in keys
    import pyarrow.fs as pafs

    fs, _ = pafs.FileSystem.from_uri(run)
    sft = json.loads(fs.open_input_stream(f"{s3.bucket}/run/sft/metrics.json").read())
    assert 0 < sft["start_step"] < SFT_STEPS and sft["final_step"] == SFT_STEPS, sft  # resumed, not restarted
    assert "run/sft/model/config.json" in keys  # rank 0's export reached the run through the driver

    import pyarrow.parquet as pq

    from raygen.cli import main

    samples = pq.read_table(f"{s3.bucket}/run/data/samples.parquet", filesystem=fs).to_pylist()
    history = ",".join(map(str, samples[0]["history"]))
    monkeypatch.setenv("RAYGEN_CACHE", str(tmp_path / "serve-cache"))  # a fresh node: everything from the bucket
    capsys.readouterr()
    assert main(["recommend", "--run", run, "--history", history, "-k", "3", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert len(recs) == 3 and all(r["sid"].startswith("<a_") for r in recs)
    assert (tmp_path / "serve-cache" / "mirror").is_dir()
