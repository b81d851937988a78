"""raygen's Ray runtime environment: offline env vars everywhere, the noisy Train logger quieted."""
import importlib
import logging

from raygen.ray_utils import QUIET_LOGGERS, quiet_ray_loggers, runtime_env


def test_runtime_env_sets_offline_vars_and_a_resolvable_setup_hook():
    env = runtime_env(dashboard=False)
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    mod, fn = env["worker_process_setup_hook"].rsplit(".", 1)
    assert getattr(importlib.import_module(mod), fn) is quiet_ray_loggers
    assert "worker_process_setup_hook" not in runtime_env(dashboard=True)  # State API exists: keep Ray's warnings


def test_quiet_ray_loggers_raises_only_the_listed_loggers():
    other = logging.getLogger("raygen")
    before = other.level
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    quiet_ray_loggers()
    assert all(logging.getLogger(n).level == logging.ERROR for n in QUIET_LOGGERS)
    assert other.level == before
