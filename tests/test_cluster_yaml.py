from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_has_launcher_keys():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
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
    assert any("raygen[vllm]" in c or '".[vllm]"' in c for c in cfg["setup_commands"])
    head_cmd = " ".join(cfg["head_start_ray_commands"])
    assert "--head" in head_cmd and "--dashboard-host=127.0.0.1" in head_cmd  # dashboard stays on localhost
    assert all("--head" not in c for c in cfg["worker_start_ray_commands"])
