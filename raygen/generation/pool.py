"""The one generation pool: Ray actors over the generation backends, used by RL rollouts and by
evaluation (:mod:`raygen.eval.ray_layer`), with one-put weight broadcast.

* :class:`RolloutActor` holds one backend (``'hf'`` or ``'vllm'``) built from a ``save_pretrained`` folder.
* :class:`RolloutPool` starts N of them, splits each prompt batch into N contiguous, near-equal shards,
  and concatenates the results in shard order, so row i of the output is prompt i.
* :meth:`RolloutPool.broadcast_weights` ``ray.put``\\ s the state dict ONCE (CPU tensors in the object
  store; on one node the actors read the same shared-memory copy) and hands every actor that reference.
* :class:`LocalPool` is the same interface over an in-process backend (``rl.rollout_resources.count = 0``).

Node-agnostic: the model comes as a *location* (a path every node sees, or a URI); each actor calls
:func:`raygen.storage.materialize` on it where it runs (``model_key``, e.g. the stage key that wrote the model,
names the content so a node never reuses a stale copy). :meth:`RolloutPool.nodes` lists the actors' Ray nodes.

Fault tolerance: an actor that dies (node lost, OOM, ``os._exit``) is restarted by Ray from its model
folder; the pool then re-sends the weights of the last broadcast to it (a restarted actor must not
generate with the initial weights) and resubmits only that actor's shard, so every row is generated
once, by the current weights, and the output stays in row order. Actor tasks are not retried by Ray
itself (``max_task_retries=0``): a silent retry would run on the restarted actor before the weights
are back.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import torch

from raygen.faults import fault_options, maybe_fault
from raygen.generation.backends import RolloutBackend, Rollouts, make_backend

log = logging.getLogger("raygen")

__all__ = ["RolloutActor", "RolloutPool", "LocalPool", "shard_bounds", "merge_precision"]


def shard_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous [lo, hi) ranges covering range(n), sizes differing by at most one."""
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


class RolloutActor:
    """Ray actor body: one rollout backend. Create through :class:`RolloutPool` (``ray.remote`` there)."""

    def __init__(self, backend: str, model_location: str, sid_matrix: np.ndarray, pad_id: int, backend_kwargs: dict,
                 model_key: str | None = None):
        from raygen.ray_utils import worker_env
        from raygen.storage import materialize

        os.environ.update(worker_env())
        sid = torch.from_numpy(np.array(sid_matrix, dtype=np.int64))   # own copy: the object store's is read-only
        self.backend: RolloutBackend = make_backend(backend, str(materialize(model_location, model_key)), sid, pad_id,
                                                    **backend_kwargs)
        self.calls = 0

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def generate(self, prompt_ids: list[list[int]], group_size: int, mode: str, temperature: float,
                 seed: int | None) -> Rollouts:
        self.calls += 1
        maybe_fault("GENERATE_CALL", self.calls)
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

    recoveries = 0
    """Actor deaths survived (Ray pool: a restart, then the weights re-sent; a local pool has none)."""

    @staticmethod
    def _sync_report(t0: float, put_s: float, results: list[tuple[int, float]]) -> dict[str, Any]:
        versions = [int(v) for v, _ in results]
        return {"sync_s": time.perf_counter() - t0, "put_s": put_s, "versions": versions,
                "actor_load_s": [float(s) for _, s in results]}


class RolloutPool(_PoolBase):
    """N :class:`RolloutActor` s on Ray; rows are split evenly and gathered in order. ``model_dir`` is a
    location (a path every node sees, or a URI; see the module doc), ``model_key`` its content's name."""

    def __init__(self, num_actors: int, backend: str, model_dir: str, sid_matrix, pad_id: int,
                 num_gpus: float = 0.0, num_cpus: float = 1.0, backend_kwargs: dict | None = None,
                 model_key: str | None = None):
        import ray

        if num_actors < 1:
            raise ValueError(f"a RolloutPool needs at least one actor, got {num_actors}")
        sid = np.ascontiguousarray(torch.as_tensor(sid_matrix).cpu().numpy().astype(np.int64))
        cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=-1, max_task_retries=0)(RolloutActor)
        sid_ref = self._sid_ref = ray.put(sid)  # held while the pool lives: a restarted actor needs it again
        self.actors = [cls.options(**fault_options()).remote(backend, str(model_dir), sid_ref, pad_id,
                                                             dict(backend_kwargs or {}), model_key)
                       for _ in range(num_actors)]
        self._weights: tuple[Any, int] | None = None  # (ref, version) of the last broadcast
        self.recoveries = 0
        ray.get([a.weights_version.remote() for a in self.actors])   # surface construction errors here

    def __len__(self) -> int:
        return len(self.actors)

    def generate(self, prompt_ids: list[list[int]], group_size: int, mode: str = "beam", temperature: float = 1.0,
                 seed: int | None = None) -> Rollouts:
        bounds = shard_bounds(len(prompt_ids), len(self.actors))

        def submit(i: int):
            lo, hi = bounds[i]
            return self.actors[i].generate.remote([list(p) for p in prompt_ids[lo:hi]], group_size, mode,
                                                  temperature, None if seed is None else seed * 1009 + i)

        return Rollouts.cat(self._gather(submit, "generate"))

    # ------------------------------------------------------------------------------- fault tolerance

    MAX_RECOVERIES = 3
    """Deaths of one actor survived within one call before the error is raised."""
    RESTART_TIMEOUT_S = 900.0
    """How long a restarting actor may take to answer again (a vLLM engine start takes minutes)."""

    def _gather(self, submit, what: str) -> list:
        """``ray.get`` of ``submit(i)`` for every actor i, in actor order; an actor that died is waited for,
        given the last broadcast's weights again and its task resubmitted."""
        import ray

        refs = [submit(i) for i in range(len(self.actors))]
        out = []
        for i in range(len(self.actors)):
            for attempt in range(self.MAX_RECOVERIES + 1):
                try:
                    out.append(ray.get(refs[i]))
                    break
                except ray.exceptions.RayActorError as e:
                    if attempt == self.MAX_RECOVERIES:
                        raise
                    log.warning("generation actor %d died during %s (%s); restarting it and resubmitting its "
                                "shard", i, what, type(e).__name__)
                    self._recover(i)
                    refs[i] = submit(i)
        return out

    def _recover(self, i: int) -> None:
        """Wait until actor i answers again (Ray restarts it from its model folder), then re-send the last
        broadcast's weights so it generates with the current policy."""
        import ray

        deadline, dead = time.monotonic() + self.RESTART_TIMEOUT_S, 0
        while True:
            try:
                ray.get(self.actors[i].weights_version.remote(), timeout=60)
                break
            except ray.exceptions.ActorDiedError:
                dead += 1  # a few right after the death are normal; a restart that failed stays dead
                if dead >= 20 or time.monotonic() > deadline:
                    raise
            except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)
        if self._weights is not None:
            ref, version = self._weights
            v, _ = ray.get(self.actors[i].load_weights.remote(ref, version))
            if int(v) != int(version):
                raise RuntimeError(f"generation actor {i} reports weights version {v} after a re-sync of {version}")
        self.recoveries += 1

    def broadcast_weights(self, state_dict: dict | Any, version: int) -> dict[str, Any]:
        """Send weights to every actor via ONE ``ray.put``; returns seconds and each actor's new version.

        ``state_dict`` may already be an ``ObjectRef`` (e.g. put by a learner actor), then nothing is put.
        """
        import ray

        t0 = time.perf_counter()
        ref = state_dict if isinstance(state_dict, ray.ObjectRef) else ray.put(state_dict)
        put_s = time.perf_counter() - t0
        self._weights = (ref, version)  # kept (one object-store copy) to re-send to an actor that restarts
        results = self._gather(lambda i: self.actors[i].load_weights.remote(ref, version), "a weight sync")
        return self._sync_report(t0, put_s, results)

    def weights_versions(self) -> list[int]:
        import ray

        return ray.get([a.weights_version.remote() for a in self.actors])

    def nodes(self) -> list[str]:
        """The distinct Ray node ids the actors run on (sorted)."""
        import ray

        return sorted(set(ray.get([a.node_id.remote() for a in self.actors])))

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

    def __init__(self, backend: str, model_dir: str, sid_matrix, pad_id: int, backend_kwargs: dict | None = None,
                 model_key: str | None = None):
        from raygen.storage import materialize

        self.backend = make_backend(backend, str(materialize(model_dir, model_key)), sid_matrix, pad_id,
                                    **(backend_kwargs or {}))

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

    def nodes(self) -> list[str]:
        """This process's Ray node id when Ray is up (else none): the pool runs in the caller."""
        import ray

        return [ray.get_runtime_context().get_node_id()] if ray.is_initialized() else []

    def checksums(self) -> list[str]:
        return [self.backend.checksum()]

    def precision(self) -> dict:
        return merge_precision([_precision_of(self.backend)])

    def shutdown(self) -> None:
        pass
