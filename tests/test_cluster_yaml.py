"""cluster.yaml (not launched here: no cloud access) has what a multi-node raygen run needs: the launcher's
keys, a head that can run the driver, GPU workers, the run on shared storage every node can reach, raygen
installed by scripts/setup.sh --gpu (keeping the image's CUDA torch) and the dashboard on localhost."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# (vCPU, GiB, GPUs) of the instance types a raygen cluster may use (AWS's published sizes).
INSTANCES = {"m5.2xlarge": (8, 32, 0), "m5.4xlarge": (16, 64, 0), "m5.8xlarge": (32, 128, 0),
             "g5.2xlarge": (8, 32, 1), "g5.4xlarge": (16, 64, 1), "g5.12xlarge": (48, 192, 4),
             "p4d.24xlarge": (96, 1152, 8)}


def _cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_has_launcher_keys():
    cfg = _cluster()
    for key in ("cluster_name", "max_workers", "provider", "auth", "available_node_types", "head_node_type",
                "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in cfg, key
    assert cfg["provider"]["type"] and cfg["provider"].get("region")
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    workers = [n for n in types if n != cfg["head_node_type"]]
    assert workers, "needs a worker node type"
    for name in workers:
        t = types[name]
        assert t["max_workers"] >= t["min_workers"] >= 0
        assert "InstanceType" in t["node_config"]
    head_cmd = " ".join(cfg["head_start_ray_commands"])
    assert "--head" in head_cmd and "--dashboard-host=127.0.0.1" in head_cmd  # dashboard stays on localhost
    assert all("--head" not in c for c in cfg["worker_start_ray_commands"])


def test_head_runs_the_driver_and_workers_have_gpus():
    cfg = _cluster()
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    cpus, mem, _ = INSTANCES[head["node_config"]["InstanceType"]]
    assert cpus >= 8 and mem >= 32  # the driver: data stage, baselines, gathering results
    assert head.get("resources", {}).get("GPU", 0) == 0
    gpus = [INSTANCES[t["node_config"]["InstanceType"]][2] for n, t in types.items() if n != cfg["head_node_type"]]
    assert min(gpus) >= 1


def test_every_node_reaches_the_shared_run_storage():
    """configs/gpu.yaml puts the run on S3; every node type carries an IAM instance profile (the credentials
    pyarrow's S3 client finds), and the region is set for it."""
    from raygen.config import load_config

    cfg = _cluster()
    assert load_config(ROOT / "configs" / "gpu.yaml").run_dir.startswith("s3://")
    for name, t in cfg["available_node_types"].items():
        assert t["node_config"].get("IamInstanceProfile", {}).get("Arn", "").startswith("arn:aws:iam::"), name
    assert any("AWS_DEFAULT_REGION" in c for c in cfg["setup_commands"])


def test_setup_keeps_the_image_torch_and_installs_the_gpu_vllm_extra():
    cfg = _cluster()
    assert any("scripts/setup.sh --gpu" in c for c in cfg["setup_commands"])
    assert any("raygen/.venv/bin" in c and "PATH" in c for c in cfg["setup_commands"])  # ray/python of the venv
    assert "~/raygen" in cfg["file_mounts"]
    gpu_data = yaml.safe_load((ROOT / "configs" / "gpu.yaml").read_text())["data"]["path"]
    assert gpu_data in cfg["file_mounts"]  # the preset's data path exists on the head
