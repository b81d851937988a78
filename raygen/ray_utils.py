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


# Ray Train V2's detached PlacementGroupCleaner asks the State API once a second whether the
# train controller is alive; without the dashboard (off by default here) that API is absent and
# every failed query logs a warning into the driver's output, burying the training logs. Ray has no
# switch for it, so each worker process raises that one logger to ERROR at start-up.
QUIET_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_ray_loggers() -> None:
    """``worker_process_setup_hook`` of raygen's Ray jobs (see QUIET_LOGGERS)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def runtime_env(dashboard: bool = False) -> dict:
    env: dict = {"env_vars": worker_env()}
    if not dashboard:
        env["worker_process_setup_hook"] = "raygen.ray_utils.quiet_ray_loggers"
    return env


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
    dashboard = bool(getattr(ray_cfg, "dashboard", False))
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, runtime_env=runtime_env(dashboard=True), log_to_driver=True)
        return
    num_cpus = getattr(ray_cfg, "num_cpus", 0) or os.cpu_count()
    ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
             runtime_env=runtime_env(dashboard), log_to_driver=True)
