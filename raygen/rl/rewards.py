"""Rewards of generated candidates, and a registry so users can add their own.

Interface (:data:`RewardFn`)::

    reward(candidates: LongTensor [B, G], targets: LongTensor [B], ctx: RewardContext) -> FloatTensor [B, G]

``candidates[b, g]`` is the catalog row index (into ``sid_matrix``) of the g-th candidate of prompt
``b``, or ``-1`` for an empty slot (constrained beam search over a catalog smaller than G).
``targets[b]`` is the row index of the true next item. Every built-in reward gives ``-1`` slots 0.

Built-ins (weights in ``RlConfig.rewards``):

* ``rule``: 1 if the candidate is the target, else 0.
* ``ranking`` (MiniOneRec's rank-aware reward): a hit gets 1, like ``rule``. Each wrong candidate at
  0-based rank ``r`` in its group gets an NDCG-style penalty normalised over the wrong candidates of
  that group::

      w(r) = 1 / log2(r + 2)                      # DCG discount of rank r
      R    = -w(r) / sum_{j wrong} w(r_j)          # wrong candidates' penalties sum to -1

  so the confidently wrong (top-ranked) candidates are pushed down most ("hard negatives"). The rank
  is competition ranking by ``ctx.scores`` (the rollout log-probabilities; higher = better):
  ``r = #{candidates with a strictly higher score}``, so tied (e.g. duplicate sampled) candidates share
  a rank and a penalty. Without scores the rank is the position in the group (beam order).
* ``semantic``: cosine similarity between the candidate's and the target's item embeddings
  (``ctx.item_embeddings``, the corpus stage's text embeddings), in [-1, 1].
* ``prefix`` (token-level semantic reward; TS-Rec's future work): partial credit for each *leading*
  SID level the candidate shares with the target (``ctx.sid_matrix``): with L levels, a candidate
  sharing its first k codes and not the (k+1)-th gets k / L (the exact item gets 1). The SID's
  levels are coarse-to-fine clusters of the item's text, so a wrong item in the target's cluster
  earns more than one outside it.

``combine(weights)`` returns the weighted sum of registered rewards; register more with::

    @register_reward("popularity")
    def popularity(candidates, targets, ctx): ...
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["RewardContext", "RewardFn", "register_reward", "get_reward", "registered_rewards", "combine",
           "rule_reward", "ranking_reward", "semantic_reward", "prefix_reward", "competition_ranks"]


@dataclass
class RewardContext:
    """What a reward may look at besides candidates and targets."""

    scores: torch.Tensor | None = None
    """[B, G] rollout log-probabilities of the candidates (higher = more likely), or None."""
    item_embeddings: torch.Tensor | None = None
    """[n_items, D] item embeddings aligned with the catalog rows (for ``semantic``), or None."""
    prompt_index: torch.Tensor | None = None
    """[B] index of each prompt in the training prompt list (for rewards needing user context)."""
    sid_matrix: torch.Tensor | None = None
    """[n_items, L] SID token ids of the catalog rows (for ``prefix``), or None."""


RewardFn = Callable[[torch.Tensor, torch.Tensor, RewardContext], torch.Tensor]
_REGISTRY: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator adding a reward to the registry under ``name`` (usable in ``RlConfig.rewards``)."""
    def deco(fn: RewardFn) -> RewardFn:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"reward {name!r} is already registered ({_REGISTRY[name].__qualname__})")
        _REGISTRY[name] = fn
        return fn
    return deco


def get_reward(name: str) -> RewardFn:
    if name not in _REGISTRY:
        raise KeyError(f"unknown reward {name!r}; registered rewards: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def registered_rewards() -> list[str]:
    return sorted(_REGISTRY)


def _check(candidates: torch.Tensor, targets: torch.Tensor) -> None:
    if candidates.ndim != 2 or targets.shape != (candidates.shape[0],):
        raise ValueError(f"need candidates [B, G] and targets [B], got {tuple(candidates.shape)} and "
                         f"{tuple(targets.shape)}")


@register_reward("rule")
def rule_reward(candidates: torch.Tensor, targets: torch.Tensor, ctx: RewardContext | None = None) -> torch.Tensor:
    """1.0 where the candidate is the target, else 0.0."""
    _check(candidates, targets)
    return (candidates == targets[:, None]).float()


def competition_ranks(scores: torch.Tensor) -> torch.Tensor:
    """0-based rank per row, ties sharing the best rank: ``#{j : s_j > s_i}`` ("1224" ranking)."""
    return (scores[:, None, :] > scores[:, :, None]).sum(-1)


@register_reward("ranking")
def ranking_reward(candidates: torch.Tensor, targets: torch.Tensor, ctx: RewardContext | None = None
                   ) -> torch.Tensor:
    """1 for a hit; wrong candidates share a penalty of -1 weighted by 1/log2(rank+2) (see module doc)."""
    _check(candidates, targets)
    b, g = candidates.shape
    scores = ctx.scores if ctx is not None else None
    if scores is not None:
        if scores.shape != candidates.shape:
            raise ValueError(f"ctx.scores must be [B, G] like the candidates, got {tuple(scores.shape)}")
        ranks = competition_ranks(scores.float())
    else:
        ranks = torch.arange(g).expand(b, g)
    hit = candidates == targets[:, None]
    wrong = ~hit & (candidates >= 0)
    w = torch.where(wrong, 1.0 / torch.log2(ranks.double() + 2.0), torch.zeros((), dtype=torch.double))
    total = w.sum(-1, keepdim=True)
    penalty = torch.where(total > 0, -w / total.clamp_min(1e-12), torch.zeros_like(w))
    return torch.where(hit, 1.0, penalty).float()


@register_reward("semantic")
def semantic_reward(candidates: torch.Tensor, targets: torch.Tensor, ctx: RewardContext | None = None
                    ) -> torch.Tensor:
    """Cosine similarity of candidate and target item embeddings; 0 for empty (-1) slots."""
    emb = _needs(candidates, targets, ctx, "item_embeddings", "item embeddings (corpus stage embeddings.parquet)")
    emb = torch.nn.functional.normalize(emb.float(), dim=-1)
    sim = (emb[candidates.clamp_min(0)] * emb[targets][:, None, :]).sum(-1)      # [B, G]
    return torch.where(candidates >= 0, sim, torch.zeros_like(sim))


def _needs(candidates: torch.Tensor, targets: torch.Tensor, ctx: RewardContext | None, field: str, what: str):
    """Check the shapes and return ``ctx.<field>``; a clear error when the reward's input is missing."""
    _check(candidates, targets)
    value = getattr(ctx, field) if ctx is not None else None
    if value is None:
        raise ValueError(f"this reward needs {what} (ctx.{field})")
    return value


@register_reward("prefix")
def prefix_reward(candidates: torch.Tensor, targets: torch.Tensor, ctx: RewardContext | None = None
                  ) -> torch.Tensor:
    """Shared leading SID levels / L (see module doc); 0 for empty (-1) slots."""
    sid = _needs(candidates, targets, ctx, "sid_matrix", "the catalog's SID matrix")
    same = sid[candidates.clamp_min(0)] == sid[targets][:, None, :]          # [B, G, L]
    shared = same.long().cumprod(dim=-1).sum(-1).float() / sid.shape[1]    # leading run of matches
    return torch.where(candidates >= 0, shared, torch.zeros_like(shared))


def combine(weights: dict[str, float]) -> RewardFn:
    """Weighted sum of registered rewards; zero-weight entries are skipped (and never evaluated)."""
    parts = [(get_reward(name), float(w)) for name, w in weights.items() if w != 0]
    if not parts:
        raise ValueError(f"no reward with a non-zero weight in {weights}")

    def combined(candidates: torch.Tensor, targets: torch.Tensor, ctx: RewardContext) -> torch.Tensor:
        total = torch.zeros(candidates.shape, dtype=torch.float32)
        for fn, w in parts:
            r = fn(candidates, targets, ctx)
            if r.shape != candidates.shape:
                raise ValueError(f"reward {fn.__name__} returned shape {tuple(r.shape)}, expected "
                                 f"{tuple(candidates.shape)}")
            total = total + w * r.float()
        return total

    return combined
