"""Starting or joining Ray with raygen's safe defaults."""
from __future__ import annotations

import logging
import os

log = logging.getLogger("raygen")

# Environment every Ray worker gets: offline model loading, the shared model cache and, on
# machines without a GPU, DeepSpeed's CPU accelerator.
def worker_env() -> dict[str, str]:
    from raygen.models import cache_dir

    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAYGEN_CACHE": str(cache_dir()),
    }
    if not _has_cuda():
        env["DS_ACCELERATOR"] = "cpu"
    return env


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def init_ray(ray_cfg=None) -> None:
    """Join ``ray_cfg.address`` ('auto' under ``ray job submit``) or start a local Ray.

    A local Ray's dashboard is off by default and, when on, bound to 127.0.0.1 only.
    """
    import ray

    env = worker_env()
    os.environ.update(env)  # the driver loads models too
    if ray.is_initialized():
        return
    address = getattr(ray_cfg, "address", "") or os.environ.get("RAY_ADDRESS", "")
    runtime_env = {"env_vars": env}
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        return
    num_cpus = getattr(ray_cfg, "num_cpus", 0) or os.cpu_count()
    dashboard = bool(getattr(ray_cfg, "dashboard", False))
    ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
             runtime_env=runtime_env, log_to_driver=True)
