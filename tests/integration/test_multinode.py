"""raygen on a 2-node Ray cluster, on this one machine: ``ray start --head`` plus ``ray start --address``, each
node with 1 CPU, its own temp dir and its own ports (all on 127.0.0.1), and ``jobs/full_pipeline.py``
submitted to the head's job server with the run on a local S3 server (moto, tests/_s3.py).

What it shows: every stage finishes with the run only on S3, and the corpus actors, the sids task, the 2 SFT
workers, the evaluation actors and the rollout actors report Ray node ids that cover both nodes (each
pool's actors reserve 1 CPU, so 2 of them cannot share a 1-CPU node): the stages hand their workers
locations (``raygen.storage.materialize``), not the driver's paths. The sids task's copy of the corpus
stage in the node cache shows a worker fetched its input from S3.

The cluster's processes are found by their temp dir (unique to this test) and stopped by PID: ``ray stop``
would stop every Ray of this machine's user, other tests' included. Bounded: cluster start and the job
each have a deadline (the job ~5 minutes on a loaded 2-core machine).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
JOB_TIMEOUT_S = 330
START_TIMEOUT_S = 120


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalCluster:
    """Two Ray nodes on this machine, found (and stopped) through their temp dir under ``root``."""

    def __init__(self, env: dict):
        # short root: Ray's unix sockets live under the temp dir and a socket path must stay < 108 bytes
        self.root = Path(tempfile.mkdtemp(prefix="rgmn", dir="/tmp"))
        self.env = env
        self.gcs_port, self.dash_port = _free_ports(2)
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dash_port}"

    def _node_ports(self) -> list[str]:
        nm, om, agent, agent_grpc, metrics, rt_env, client, lo = _free_ports(8)
        return [f"--node-manager-port={nm}", f"--object-manager-port={om}", f"--dashboard-agent-listen-port={agent}",
                f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
                f"--runtime-env-agent-port={rt_env}", f"--min-worker-port={lo}", f"--max-worker-port={lo + 40}",
                f"--ray-client-server-port={client}"]

    def _start(self, args: list[str], temp: str) -> None:
        cmd = [RAY, "start", *args, "--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1",
               f"--temp-dir={self.root / temp}", "--object-store-memory=300000000", "--disable-usage-stats",
               *self._node_ports()]
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"

    def start(self) -> None:
        # The job server lives in the dashboard process: on, but bound to 127.0.0.1 (as in cluster.yaml).
        self._start(["--head", f"--port={self.gcs_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={self.dash_port}"], "h")
        self._start([f"--address={self.address}", '--resources={"raygen_test_worker_node": 1}'], "w")

    def node_ids(self, want: int) -> list[str]:
        """The alive nodes' ids once ``want`` have joined (a short driver in a subprocess; bounded)."""
        code = ("import json, time, ray\n"
                f"ray.init(address={self.address!r}, logging_level='ERROR')\n"
                "deadline = time.time() + 60\n"
                "while True:\n"
                "    alive = [n['NodeID'] for n in ray.nodes() if n['Alive']]\n"
                f"    if len(alive) >= {want} or time.time() > deadline: break\n"
                "    time.sleep(1)\n"
                "print('NODES=' + json.dumps(sorted(alive)))\n")
        r = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        line = [x for x in r.stdout.splitlines() if x.startswith("NODES=")]
        assert line, f"could not list the nodes:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        return json.loads(line[-1][len("NODES="):])

    def pids(self) -> list[int]:
        """Processes of this cluster: their command line names its temp dir (raylet, GCS, dashboard, agents and
        workers all carry the session path)."""
        mark, out = str(self.root).encode(), []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    if mark in (d / "cmdline").read_bytes():
                        out.append(int(d.name))
                except OSError:
                    pass
        return out

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + wait
            while pids and time.time() < deadline:
                pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
                time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _config(run: str, model_dir: Path) -> dict:
    """A tiny pipeline (synthetic catalog, tiny Llama) whose every actor pool has 2 members of 1 CPU each."""
    two = {"count": 2, "cpus": 1, "gpus": 0}
    return {
        "run_dir": run,
        "ray": {"address": "auto"},
        "data": {"source": "synthetic", "synthetic": {"n_items": 40, "n_users": 30, "n_categories": 4, "n_tastes": 3,
                                                      "min_seq_len": 4, "max_seq_len": 6}},
        "corpus": {"keyword_backend": "fallback", "n_queries": 0, "embed_batch_size": 8, "keyword_batch_size": 8,
                   "embed_resources": two, "keyword_resources": two},
        "sids": {"method": "rqkmeans", "levels": 2, "codebook_size": 8, "kmeans_iters": 10},
        "lm": {"model": str(model_dir), "init": "mean"},
        "tasks": {"search_ratio": 0},
        "align": {"enabled": False},
        "sft": {"mode": "full", "resources": two, "deepspeed": False, "batch_size": 4, "max_steps": 2,
                "checkpoint_every": 0, "max_len": 128},
        "rl": {"steps": 1, "rollout_batch": 4, "group_size": 2, "eval_rows": 4, "eval_beam": 4,
               "rollout_resources": two, "learner_resources": {"count": 0, "cpus": 1, "gpus": 0}},
        "eval": {"splits": ["test"], "max_rows": 8, "beam_width": 5, "ks": [1, 5], "baselines": ["popularity"],
                 "fusion": False, "search": False, "resources": two},
    }


@pytest.fixture
def cluster(s3, tmp_path):
    if RAY is None:
        pytest.skip("the `ray` CLI is not installed")
    env = {**os.environ, **s3.env, "RAYGEN_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           # Explicit: otherwise Ray turns token auth on when some other local Ray left ~/.ray/auth_token, and
           # `ray start --address` then fails; every port of this cluster is bound to 127.0.0.1.
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)  # the nodes join this test's head only
    c = LocalCluster(env)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _job_logs(client, job_id: str) -> str:
    try:
        return client.get_job_logs(job_id)[-6000:]
    except Exception as e:  # the logs are only for the failure message
        return f"(no logs: {e})"


def test_full_pipeline_job_spreads_every_actor_group_over_both_nodes(cluster, s3, tmp_path, tiny_model_dir):
    from ray.job_submission import JobStatus, JobSubmissionClient

    from raygen import storage

    nodes = cluster.node_ids(2)
    assert len(nodes) == 2, nodes
    run = s3.uri("runs", "multinode")
    cfg_path = tmp_path / "multinode.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(run, tiny_model_dir)))

    client = JobSubmissionClient(cluster.dashboard)
    job = client.submit_job(entrypoint=f"{sys.executable} {ROOT / 'jobs' / 'full_pipeline.py'} --config {cfg_path}",
                            runtime_env={"env_vars": {**s3.env, "RAYGEN_CACHE": cluster.env["RAYGEN_CACHE"]}})
    deadline, status = time.time() + JOB_TIMEOUT_S, None
    while time.time() < deadline:
        status = client.get_job_status(job)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(2)
    else:
        client.stop_job(job)
    assert status == JobStatus.SUCCEEDED, f"job {status}:\n{_job_logs(client, job)}"

    def metrics(stage: str) -> dict:
        assert storage.exists(storage.join(run, stage, "_SUCCESS")), stage  # committed on S3
        return json.loads(storage.read_bytes(storage.join(run, stage, "metrics.json")))

    for stage in ("data", "lm", "align", "report"):
        metrics(stage)
    both = sorted(nodes)
    corpus = metrics("corpus")["nodes"]
    assert sorted(corpus["corpus_embed"]) == both and sorted(corpus["corpus_keywords"]) == both, corpus
    sids = metrics("sids")["nodes"]["sids"]
    assert len(sids) == 1 and sids[0] in both
    sft = metrics("sft")
    assert sft["world_size"] == 2 and sorted(sft["nodes"]["train_workers"]) == both, sft.get("nodes")
    rl = metrics("rl")["nodes"]
    assert sorted(rl["rollout_actors"]) == both and sorted(rl["rl_eval_actors"]) == both, rl
    assert sorted(metrics("eval")["nodes"]["eval_actors"]) == both
    # the sids task materialized the corpus stage from S3 into the node cache (it got a location, not a path)
    corpus_copy = Path(cluster.env["RAYGEN_CACHE"]) / "mirror" / hashlib.sha1(
        storage.join(run, "corpus").encode()).hexdigest()
    assert list(corpus_copy.parent.glob(corpus_copy.name + "*/embeddings.parquet")), corpus_copy
