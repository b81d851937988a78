"""Fixtures of the integration tests: one small local Ray for the whole session."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs and no dashboard, shared by all integration tests of the session."""
    ray = pytest.importorskip("ray")
    from raygen.ray_utils import worker_env

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": worker_env()})
    yield ray
    ray.shutdown()
