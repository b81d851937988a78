"""Thin Ray layer: shard constrained beam search over actors that each hold one model copy.

Rows are split into ``num_actors`` contiguous shards; results are gathered in shard order, so
the output rows line up with the input rows exactly as with a local
:func:`raygen.eval.beam.constrained_beam_search` call.
"""
from __future__ import annotations

import numpy as np
import torch

from raygen.eval.beam import SidTrie, constrained_beam_search


class BeamSearchWorker:
    """Holds a causal LM loaded from a ``save_pretrained`` folder and the catalog trie."""

    def __init__(self, model_dir: str, sid_matrix: np.ndarray, beam_width: int, pad_id: int, batch_size: int,
                 dtype: str = "float32", autocast_dtype: str | None = None, trust_remote_code: bool = False,
                 bf16: bool | str | None = None, sid_only: bool = False, eos_id: int | list[int] | None = None):
        """``bf16`` ('auto', True, False) overrides ``autocast_dtype``: resolved here, on the actor's device."""
        from transformers import AutoModelForCausalLM

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code).to(device).eval()
        self.sid_matrix = torch.tensor(sid_matrix)  # a copy: arrays from the object store are read-only
        self.trie = SidTrie.build(self.sid_matrix)
        if bf16 is not None:
            from raygen.precision import resolve_bf16

            use, reason = resolve_bf16(bf16, device)
            autocast_dtype = "bfloat16" if use else None
        else:
            reason = f"autocast_dtype={autocast_dtype!r} given"
        self.precision = {"bf16": autocast_dtype == "bfloat16", "reason": reason}
        self.kw = dict(beam_width=beam_width, pad_id=pad_id, batch_size=batch_size,
                       autocast_dtype=getattr(torch, autocast_dtype) if autocast_dtype else None,
                       sid_only=sid_only, eos_id=eos_id)

    def precision_info(self) -> dict:
        """``{"bf16": bool, "reason": str}``: the precision this actor's beam search runs in."""
        return dict(self.precision)

    def run(self, prompt_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        if not prompt_ids:
            k = self.kw["beam_width"]
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        items, scores = constrained_beam_search(self.model, prompt_ids, self.sid_matrix, trie=self.trie, **self.kw)
        return items.numpy(), scores.numpy()


def evaluate_distributed(model_dir: str, prompt_ids: list[list[int]], sid_matrix, beam_width: int, pad_id: int,
                         batch_size: int = 16, num_actors: int = 1, num_gpus_per_actor: float = 0.0,
                         num_cpus_per_actor: float = 1.0, dtype: str = "float32",
                         autocast_dtype: str | None = None, bf16: bool | str | None = None,
                         precision: dict | None = None, sid_only: bool = False,
                         eos_id: int | list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Constrained beam search of ``prompt_ids`` on ``num_actors`` Ray actors; same outputs as local.

    ``bf16`` ('auto', True or False; overrides ``autocast_dtype``) is resolved by each actor for its own
    device (:func:`raygen.precision.resolve_bf16`). ``precision``, if given, is filled with
    ``{"bf16", "reason"}``: bf16 only if every actor runs bf16; ``reason`` lists the actors' distinct reasons.

    Needs a running Ray (``ray.init`` or a cluster address). Returns ``(items, scores)`` as
    :func:`constrained_beam_search` does: [B, beam_width] item row indices and log-probabilities.
    """
    import ray

    if num_actors < 1:
        raise ValueError(f"num_actors must be >= 1, got {num_actors}")
    sid = np.asarray(torch.as_tensor(sid_matrix).cpu().numpy(), dtype=np.int64)
    num_actors = max(1, min(num_actors, len(prompt_ids)))
    actor_cls = ray.remote(num_cpus=num_cpus_per_actor, num_gpus=num_gpus_per_actor)(BeamSearchWorker)
    sid_ref = ray.put(sid)
    actors = [actor_cls.remote(model_dir, sid_ref, beam_width, pad_id, batch_size, dtype, autocast_dtype,
                               bf16=bf16, sid_only=sid_only, eos_id=eos_id) for _ in range(num_actors)]
    try:
        if precision is not None:
            infos = ray.get([a.precision_info.remote() for a in actors])
            reasons = list(dict.fromkeys(i["reason"] for i in infos))
            precision.update(bf16=all(i["bf16"] for i in infos), reason="; ".join(reasons))
        bounds = np.linspace(0, len(prompt_ids), num_actors + 1).astype(int)
        refs = [a.run.remote([list(p) for p in prompt_ids[lo:hi]])
                for a, lo, hi in zip(actors, bounds[:-1], bounds[1:])]
        parts = ray.get(refs)
    finally:
        for a in actors:
            ray.kill(a)
    if not parts:
        return torch.zeros((0, beam_width), dtype=torch.long), torch.zeros((0, beam_width))
    return (torch.from_numpy(np.concatenate([p[0] for p in parts])),
            torch.from_numpy(np.concatenate([p[1] for p in parts])))
