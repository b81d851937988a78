"""Ray plumbing of the RL loop: the learner in this process or in one Ray actor, the rollout pool
(local or on Ray actors) and the weight sync between them."""
from __future__ import annotations

from pathlib import Path

import torch

from raygen.rl.config import RlConfig


class _Remote:
    """Calls a Ray actor's methods synchronously, so the loop reads the same for both learner kinds."""

    def __init__(self, handle):
        self._h = handle

    def __getattr__(self, name):
        import ray

        method = getattr(self._h, name)
        return lambda *a, **k: ray.get(method.remote(*a, **k))


def make_learner(model: tuple[str, str | None], cfg: RlConfig, pad_id: int, out: Path, sid_ids: list[int]):
    """``(learner, actor handle or None)``: the :class:`GrpoLearner` here (``learner_resources.count = 0``) or
    in one Ray actor reserving ``learner_resources`` CPUs and GPUs (count 1), called synchronously through
    :class:`_Remote`. ``model`` = ``(location, key)`` of the policy to start from (materialized where the
    learner runs). The learner writes its checkpoints and final model to ``out`` where it runs: a learner
    actor needs ``out`` on storage the driver sees (one node, or a shared run folder)."""
    from raygen.rl.learner import GrpoLearner

    location, key = model
    res = cfg.learner_resources
    if res.count == 0:
        return GrpoLearner(location, cfg, pad_id, str(out), sid_ids, key), None
    import ray

    from raygen.ray_utils import init_ray

    init_ray()
    handle = ray.remote(num_gpus=res.gpus, num_cpus=res.cpus)(GrpoLearner).remote(
        location, cfg, pad_id, str(out), sid_ids, key)
    return _Remote(handle), handle


def make_pool(cfg: RlConfig, model: tuple[str, str | None], sid: torch.Tensor, pad_id: int, bkw: dict):
    """The generation pool of the rollouts: in this process (``rollout_resources.count = 0``) or on Ray actors;
    ``model`` = ``(location, key)`` each actor materializes on its node."""
    from raygen.generation.pool import LocalPool, RolloutPool

    model_dir, key = model
    res = cfg.rollout_resources
    if res.count == 0:
        return LocalPool(cfg.rollout_backend, model_dir, sid, pad_id, bkw, model_key=key)
    from raygen.ray_utils import init_ray

    init_ray()
    return RolloutPool(res.count, cfg.rollout_backend, model_dir, sid, pad_id, num_gpus=res.gpus, num_cpus=res.cpus,
                       backend_kwargs=bkw, model_key=key)


def sync_weights(pool, learner, learner_handle, version: int) -> dict:
    """Push the learner's (LoRA-merged) weights to every actor of ``pool``; one ``ray.put``, made in the
    learner actor when there is one (the weights never pass through the driver)."""
    if learner_handle is not None and hasattr(pool, "actors"):
        return pool.broadcast_weights(learner.weights_ref()[0], version)
    return pool.broadcast_weights(learner.weights(), version)
