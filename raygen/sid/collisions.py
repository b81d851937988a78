"""Making SIDs unique: Sinkhorn-balanced re-assignment of the last level, then an extra level.

(a) As in LC-Rec / MiniOneRec, items whose full code tuple collides get their *last-level*
    code re-assigned by Sinkhorn-Knopp over their distances to the last codebook with uniform
    marginals, which spreads a colliding group over distinct codes. Two refinements: codes
    that non-colliding items of the same prefix already hold are excluded (a round never
    creates a collision with a settled item), and the columns are the colliding items' nearest
    free codes (m per item for a group of m, widening each round), so items move to nearby
    codes rather than anywhere in the codebook. Rounds repeat on whatever still collides.
(b) Collisions Sinkhorn cannot break (identical embeddings give identical cost rows) get a
    deterministic extra level: 0, 1, 2, ... in item-id order inside each colliding group and 0
    for every other item, so all SIDs keep one length. It is appended only when needed.

Sinkhorn is hand-written (a dozen lines, log-domain): the maintained OT library (POT) is not a
dependency, and ``ot.sinkhorn`` is the same algorithm.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import logsumexp

from raygen.sid.metrics import collision_groups, collision_rate, tuple_ids


def sinkhorn(cost: np.ndarray, epsilon: float = 0.05, iters: int = 50) -> np.ndarray:
    """Entropic optimal-transport plan ``[m, n]`` between uniform marginals for ``cost``.

    The cost is rescaled to [0, 1] first (as LC-Rec centres its distances), so ``epsilon`` has
    the same meaning whatever the embedding scale.
    """
    c = np.asarray(cost, dtype=np.float64)
    m, n = c.shape
    span = c.max() - c.min()
    c = (c - c.min()) / span if span > 0 else np.zeros_like(c)
    log_k = -c / epsilon
    log_a, log_b = -np.log(m), -np.log(n)
    u, v = np.zeros(m), np.zeros(n)
    for _ in range(iters):
        u = log_a - logsumexp(log_k + v[None, :], axis=1)
        v = log_b - logsumexp(log_k + u[:, None], axis=0)
    return np.exp(log_k + u[:, None] + v[None, :])


@dataclass
class CollisionReport:
    collision_rate_before: float
    collision_rate_sinkhorn: float
    """After Sinkhorn re-assignment, before the extra level."""
    collision_rate: float
    """Final (0 whenever the extra level is allowed)."""
    sinkhorn_rounds: int = 0
    items_reassigned: int = 0
    """Items whose last-level code Sinkhorn changed."""
    extra_level_added: bool = False
    extra_level_max: int = 0
    """Largest extra-level code (size of the largest unresolved group minus one)."""

    def to_dict(self) -> dict:
        return asdict(self)


def sinkhorn_reassign(codes: np.ndarray, last_dists: np.ndarray, epsilon: float = 0.05,
                      iters: int = 50, max_rounds: int = 20) -> tuple[np.ndarray, int, int]:
    """Re-assign the last-level code of colliding items. Returns (codes, rounds run, items moved).

    ``last_dists [N, K_last]`` are each item's distances to the last codebook. Only colliding
    items move, and only onto last-level codes no settled item of their prefix holds.
    """
    codes = np.array(codes, dtype=np.int64, copy=True)
    moved = np.zeros(len(codes), dtype=bool)
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        groups = collision_groups(codes)
        if not groups:
            return codes, rounds - 1, int(moved.sum())
        colliding = np.zeros(len(codes), dtype=bool)
        colliding[np.concatenate(groups)] = True
        changed = False
        inv, counts = tuple_ids(codes[:, :-1])  # prefix group of each item
        order = np.argsort(inv, kind="stable")
        starts = np.searchsorted(inv[order], np.arange(len(counts) + 1))
        for p in np.unique(inv[colliding]):
            members = order[starts[p]:starts[p + 1]]
            movable = members[colliding[members]]
            settled = members[~colliding[members]]
            free = np.setdiff1d(np.arange(last_dists.shape[1]), codes[settled, -1])
            if len(free) == 0:
                continue
            # Candidates: each movable item's nearest free codes (m of them in round 1, widening
            # each round). Uniform marginals over the whole codebook would push items onto far
            # codes when a handful of items face K free codes.
            cost = last_dists[np.ix_(movable, free)]
            near = np.argsort(cost, axis=1, kind="stable")[:, :min(len(free), len(movable) * rounds)]
            cand = np.unique(near)
            plan = sinkhorn(cost[:, cand], epsilon, iters)
            new = free[cand[plan.argmax(1)]]
            changed |= bool((new != codes[movable, -1]).any())
            moved[movable[new != codes[movable, -1]]] = True
            codes[movable, -1] = new
        if not changed:
            break
    return codes, rounds, int(moved.sum())


def add_extra_level(codes: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Append one level: 0, 1, 2, ... by item id within each colliding group, 0 elsewhere."""
    item_ids = np.asarray(item_ids)
    extra = np.zeros(len(codes), dtype=np.int64)
    for g in collision_groups(codes):
        order = g[np.argsort(item_ids[g], kind="stable")]
        extra[order] = np.arange(len(order))
    return np.concatenate([codes, extra[:, None]], axis=1)


def resolve_collisions(codes: np.ndarray, last_dists: np.ndarray, item_ids: np.ndarray, *,
                       sinkhorn_enabled: bool = True, epsilon: float = 0.05, iters: int = 50,
                       max_rounds: int = 20, extra_level: bool = True) -> tuple[np.ndarray, CollisionReport]:
    """Sinkhorn re-assignment then, if collisions remain, the extra level. Returns unique codes.

    Raises ``ValueError`` if collisions remain and ``extra_level`` is off.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if len(item_ids) != len(codes) or len(last_dists) != len(codes):
        raise ValueError(f"codes ({len(codes)}), last_dists ({len(last_dists)}) and item_ids "
                         f"({len(item_ids)}) must have one row per item")
    if len(np.unique(item_ids)) != len(item_ids):
        raise ValueError("item_ids must be unique")
    before = collision_rate(codes)
    rep = CollisionReport(before, before, before)
    if sinkhorn_enabled and before > 0:
        codes, rep.sinkhorn_rounds, rep.items_reassigned = sinkhorn_reassign(
            codes, last_dists, epsilon, iters, max_rounds)
    rep.collision_rate_sinkhorn = rep.collision_rate = collision_rate(codes)
    if rep.collision_rate > 0:
        if not extra_level:
            raise ValueError(f"{rep.collision_rate:.4f} of items still share a SID after Sinkhorn; enable "
                             "sids.extra_level (or raise codebook_size/levels) to make SIDs unique")
        codes = add_extra_level(codes, item_ids)
        rep.extra_level_added = True
        rep.extra_level_max = int(codes[:, -1].max())
        rep.collision_rate = collision_rate(codes)
    return codes, rep
