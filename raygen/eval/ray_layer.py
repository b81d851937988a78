"""Thin Ray layer of evaluation: constrained beam search sharded over the generation pool.

The same actor pool as RL's rollouts (:class:`raygen.generation.pool.RolloutPool` over the 'hf' backend in
'beam' mode): rows are split into ``resources.count`` contiguous shards and gathered in shard order, so the
output rows line up with the input rows exactly as with a local
:func:`raygen.generation.beam.constrained_beam_search` call.
"""
from __future__ import annotations

import torch

from raygen.configbase import Resources


def evaluate_distributed(model_dir: str, prompt_ids: list[list[int]], sid_matrix, beam_width: int, pad_id: int,
                         batch_size: int = 16, resources: Resources | None = None, dtype: str = "float32",
                         autocast_dtype: str | None = None, bf16: bool | str | None = None,
                         precision: dict | None = None, sid_only: bool = False,
                         eos_id: int | list[int] | None = None, model_key: str | None = None,
                         nodes: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Constrained beam search of ``prompt_ids`` on ``resources.count`` Ray actors, each reserving
    ``resources.cpus`` / ``resources.gpus`` (default: one actor, 1 CPU, no GPU); same outputs as local.

    ``bf16`` ('auto', True or False; overrides ``autocast_dtype``) is resolved by each actor for its own
    device (:func:`raygen.precision.resolve_bf16`). ``precision``, if given, is filled with
    ``{"bf16", "reason"}``: bf16 only if every actor runs bf16; ``reason`` lists the actors' distinct reasons.

    ``model_dir`` is a location every actor can open (a path on every node, or a URI: each actor
    materializes it on its node; ``model_key`` names its content); the actors' Ray node ids are appended to
    ``nodes`` when given.

    Needs a running Ray (``ray.init`` or a cluster address). Returns ``(items, scores)`` as
    :func:`constrained_beam_search` does: [B, beam_width] item row indices and log-probabilities.
    """
    from raygen.generation.pool import RolloutPool

    res = resources or Resources()
    if res.count < 1:
        raise ValueError(f"resources.count must be >= 1 (Ray actors), got {res.count}")
    if not prompt_ids:
        return torch.zeros((0, beam_width), dtype=torch.long), torch.zeros((0, beam_width))
    pool = RolloutPool(max(1, min(res.count, len(prompt_ids))), "hf", model_dir, sid_matrix, pad_id,
                       num_gpus=res.gpus, num_cpus=res.cpus,
                       backend_kwargs=dict(batch_size=batch_size, dtype=dtype, autocast_dtype=autocast_dtype,
                                           bf16=bf16, sid_only=sid_only, eos_id=eos_id), model_key=model_key)
    try:
        if precision is not None:
            precision.update(pool.precision())
        if nodes is not None:
            nodes.extend(n for n in pool.nodes() if n not in nodes)
        ro = pool.generate([list(p) for p in prompt_ids], beam_width, "beam")
    finally:
        pool.shutdown()
    return ro.items, ro.scores
