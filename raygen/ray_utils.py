"""Starting or joining Ray with raygen's safe defaults."""
from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("raygen")

# Environment every Ray worker gets: offline model loading (unless the user allowed downloads, see
# hub_downloads_allowed), the shared model cache and, on machines without a GPU, DeepSpeed's CPU accelerator.
def worker_env() -> dict[str, str]:
    from raygen.models import cache_dir, hub_downloads_allowed

    online = hub_downloads_allowed()
    flag = "0" if online else "1"
    env = {
        # The user's own HF_HUB_OFFLINE=0 is passed on, never overridden: HF hub ids then load on every
        # worker (each node downloads into its own HF cache). Unset, raygen runs offline.
        "HF_HUB_OFFLINE": flag,
        "TRANSFORMERS_OFFLINE": flag,
        "HF_DATASETS_OFFLINE": flag,
        "TOKENIZERS_PARALLELISM": "false",
        "RAYGEN_CACHE": str(cache_dir()),
    }
    if not _has_cuda():
        env["DS_ACCELERATOR"] = "cpu"
    # Under `ray job submit --runtime-env-json '{"env_vars": {...}}'` the job's own variables already reach every
    # worker, and Ray refuses a driver runtime env that sets one of them again: the job's values win.
    job = job_env_vars()
    return {k: v for k, v in env.items() if k not in job}


def job_env_vars() -> dict[str, str]:
    """The env_vars of the submitted job's runtime env (empty outside a submitted job): Ray hands the job's
    config to its driver in ``RAY_JOB_CONFIG_JSON_ENV_VAR``."""
    import json

    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "")
    try:
        env = ((json.loads(raw) if raw else {}).get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        return {}
    return dict(env) if isinstance(env, dict) else {}


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
        wait_for_port(address, float(getattr(ray_cfg, "connect_timeout_s", 60.0)))
        ray.init(address=address, runtime_env=runtime_env(dashboard=True), log_to_driver=True)
        return
    num_cpus = getattr(ray_cfg, "num_cpus", 0) or os.cpu_count()
    ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
             runtime_env=runtime_env(dashboard), log_to_driver=True)


class RayUnreachable(ConnectionError):
    """No Ray cluster answers at ``ray.address`` within ``ray.connect_timeout_s``."""


def _bootstrap(address: str) -> tuple[str, int] | None:
    """``(host, port)`` that ``ray.init(address=...)`` will connect to; None when Ray resolves it otherwise.

    A host:port is probed as written; 'auto' is looked up as Ray does (RAY_ADDRESS, the latest ``ray start``):
    its private helper is only a convenience, so any surprise there skips the probe, never fails the run."""
    if address.startswith("ray://"):  # Ray Client: host:port of the client server
        address = address[len("ray://"):].split("/", 1)[0]
    elif address in ("auto", "local"):
        try:
            from ray._private.services import canonicalize_bootstrap_address

            address = canonicalize_bootstrap_address(address) or ""
        except ConnectionError as e:  # 'auto' and no cluster found
            raise RayUnreachable(f"ray.address {address!r}: {e}") from None
        except Exception:  # noqa: BLE001 - an unexpected private-API change: let ray.init decide
            return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def wait_for_port(address: str, timeout_s: float) -> None:
    """Return once the Ray cluster at ``address`` accepts a TCP connection; RayUnreachable (one line) when
    none does within ``timeout_s`` seconds (refused connections are retried: a cluster may be starting).

    Why a socket probe: ``ray.init`` retries an unreachable GCS without end (Ray 2.x); its own
    timeouts (``RAY_gcs_server_request_timeout_seconds``, ...) are read at import time and only bound
    single requests. A port that accepts but is not Ray's GCS is left to ``ray.init``."""
    target = _bootstrap(address)
    if target is None:
        return
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection(target, timeout=max(0.1, min(remaining, 5.0))):
                return
        except OSError as e:
            reason = e.strerror or type(e).__name__ if not isinstance(e, socket.timeout) else "timed out"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RayUnreachable(f"ray.address {address!r}: no Ray cluster answered at {target[0]}:{target[1]} within "
                                 f"{timeout_s:g} s (last try: {reason}); start the cluster or fix ray.address "
                                 "(ray.connect_timeout_s sets the wait)")
        time.sleep(min(0.5, remaining))
