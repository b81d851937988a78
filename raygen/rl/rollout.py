"""The one generation pool: Ray actors over the generation backends, used by RL rollouts and by
evaluation (:mod:`raygen.eval.ray_layer`), with one-put weight broadcast.

* :class:`RolloutActor` holds one backend (``'hf'`` or ``'vllm'``) built from a ``save_pretrained`` folder.
* :class:`RolloutPool` starts N of them, splits each prompt batch into N contiguous, near-equal shards,
  and concatenates the results in shard order, so row i of the output is prompt i.
* :meth:`RolloutPool.broadcast_weights` ``ray.put``\\ s the state dict ONCE (CPU tensors in the object
  store; on one node the actors read the same shared-memory copy) and hands every actor that reference.
* :class:`LocalPool` is the same interface over an in-process backend (``rl.rollout_resources.count = 0``).
"""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from raygen.rl.backends import RolloutBackend, Rollouts, make_backend

__all__ = ["RolloutActor", "RolloutPool", "LocalPool", "shard_bounds", "merge_precision"]


def shard_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous [lo, hi) ranges covering range(n), sizes differing by at most one."""
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


class RolloutActor:
    """Ray actor body: one rollout backend. Create through :class:`RolloutPool` (``ray.remote`` there)."""

    def __init__(self, backend: str, model_dir: str, sid_matrix: np.ndarray, pad_id: int, backend_kwargs: dict):
        from raygen.ray_utils import worker_env

        os.environ.update(worker_env())
        sid = torch.from_numpy(np.array(sid_matrix, dtype=np.int64))   # own copy: the object store's is read-only
        self.backend: RolloutBackend = make_backend(backend, model_dir, sid, pad_id,
                                                    **backend_kwargs)

    def generate(self, prompt_ids: list[list[int]], group_size: int, mode: str, temperature: float,
                 seed: int | None) -> Rollouts:
        return self.backend.generate(prompt_ids, group_size, mode, temperature, seed)

    def load_weights(self, state_dict: dict, version: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        v = self.backend.load_weights(state_dict, version)
        return v, time.perf_counter() - t0

    def weights_version(self) -> int:
        return self.backend.weights_version

    def checksum(self) -> str:
        return self.backend.checksum()

    def precision_info(self) -> dict:
        return _precision_of(self.backend)


def _precision_of(backend) -> dict:
    info = getattr(backend, "precision_info", None)
    return info() if info is not None else {"bf16": None, "reason": f"{type(backend).__name__} does not say"}


def merge_precision(infos: list[dict]) -> dict:
    """One ``{"bf16", "reason"}`` for a pool: bf16 only if every actor runs bf16; the distinct reasons."""
    return {"bf16": all(i["bf16"] for i in infos), "reason": "; ".join(dict.fromkeys(i["reason"] for i in infos))}


class _PoolBase:
    """Shared bookkeeping of the local and Ray pools."""

    @staticmethod
    def _sync_report(t0: float, put_s: float, results: list[tuple[int, float]]) -> dict[str, Any]:
        versions = [int(v) for v, _ in results]
        return {"sync_s": time.perf_counter() - t0, "put_s": put_s, "versions": versions,
                "actor_load_s": [float(s) for _, s in results]}


class RolloutPool(_PoolBase):
    """N :class:`RolloutActor` s on Ray; rows are split evenly and gathered in order."""

    def __init__(self, num_actors: int, backend: str, model_dir: str, sid_matrix, pad_id: int,
                 num_gpus: float = 0.0, num_cpus: float = 1.0, backend_kwargs: dict | None = None):
        import ray

        if num_actors < 1:
            raise ValueError(f"a RolloutPool needs at least one actor, got {num_actors}")
        sid = np.ascontiguousarray(torch.as_tensor(sid_matrix).cpu().numpy().astype(np.int64))
        cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(RolloutActor)
        sid_ref = ray.put(sid)
        self.actors = [cls.remote(backend, model_dir, sid_ref, pad_id, dict(backend_kwargs or {}))
                       for _ in range(num_actors)]
        ray.get([a.weights_version.remote() for a in self.actors])   # surface construction errors here

    def __len__(self) -> int:
        return len(self.actors)

    def generate(self, prompt_ids: list[list[int]], group_size: int, mode: str = "beam", temperature: float = 1.0,
                 seed: int | None = None) -> Rollouts:
        import ray

        bounds = shard_bounds(len(prompt_ids), len(self.actors))
        refs = [a.generate.remote([list(p) for p in prompt_ids[lo:hi]], group_size, mode, temperature,
                                  None if seed is None else seed * 1009 + i)
                for i, (a, (lo, hi)) in enumerate(zip(self.actors, bounds))]
        return Rollouts.cat(ray.get(refs))

    def broadcast_weights(self, state_dict: dict | Any, version: int) -> dict[str, Any]:
        """Send weights to every actor via ONE ``ray.put``; returns seconds and each actor's new version.

        ``state_dict`` may already be an ``ObjectRef`` (e.g. put by a learner actor), then nothing is put.
        """
        import ray

        t0 = time.perf_counter()
        ref = state_dict if isinstance(state_dict, ray.ObjectRef) else ray.put(state_dict)
        put_s = time.perf_counter() - t0
        results = ray.get([a.load_weights.remote(ref, version) for a in self.actors])
        return self._sync_report(t0, put_s, results)

    def weights_versions(self) -> list[int]:
        import ray

        return ray.get([a.weights_version.remote() for a in self.actors])

    def checksums(self) -> list[str]:
        import ray

        return ray.get([a.checksum.remote() for a in self.actors])

    def precision(self) -> dict:
        import ray

        return merge_precision(ray.get([a.precision_info.remote() for a in self.actors]))

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []


class LocalPool(_PoolBase):
    """The pool interface over one backend in this process (no Ray): debugging and unit tests."""

    def __init__(self, backend: str, model_dir: str, sid_matrix, pad_id: int, backend_kwargs: dict | None = None):
        self.backend = make_backend(backend, model_dir, sid_matrix, pad_id, **(backend_kwargs or {}))

    def __len__(self) -> int:
        return 1

    def generate(self, prompt_ids, group_size, mode="beam", temperature=1.0, seed=None) -> Rollouts:
        return self.backend.generate(prompt_ids, group_size, mode, temperature, seed)

    def broadcast_weights(self, state_dict: dict, version: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        # Copy so the backend never aliases the learner's tensors (as over Ray).
        v = self.backend.load_weights({k: t.clone() for k, t in state_dict.items()}, version)
        return self._sync_report(t0, 0.0, [(v, time.perf_counter() - t0)])

    def weights_versions(self) -> list[int]:
        return [self.backend.weights_version]

    def checksums(self) -> list[str]:
        return [self.backend.checksum()]

    def precision(self) -> dict:
        return merge_precision([_precision_of(self.backend)])

    def shutdown(self) -> None:
        pass
