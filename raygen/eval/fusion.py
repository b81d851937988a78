"""Hybrid ranking: the generative model's top-K fused with a training-free ranking by reciprocal rank fusion.

RRF (Cormack, Clarke & Büttcher, SIGIR 2009): an item's fused score is ``sum_i w_i / (k0 + rank_i)`` over the
rankings that hold it (rank 0-based here, so the top item of one ranking scores ``w / k0``); the fused list
is the items by falling score, ties broken by the first ranking's order, then the next's. ``k0 = 60`` is the
paper's constant, used as is (not tuned on the data it is reported on).

Why: on Amazon Industrial the beam search ranks the hits it finds high (HR@1 ~2x a text-similarity
ranking's) but finds no more of them (HR@10 level), and it never emits items it did not see as targets
(cold items, items added after training); a text-similarity ranking of every catalog item covers both. The
fused list keeps most of the model's top hits and fills the rest. Written here (a few lines of Python): RRF is not
in the libraries raygen already uses, and the rankings are short.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from raygen.eval.metrics import PAD_ITEM

RRF_K0 = 60


def rrf_fuse(rankings: Sequence[np.ndarray], k: int, weights: Sequence[float] | None = None,
             k0: float = RRF_K0) -> np.ndarray:
    """``[rows, k]`` item ids fused from ``rankings`` (each ``[rows, K_i]`` item ids, best first; ``PAD_ITEM``
    slots ignored). A row with fewer than ``k`` distinct items is padded with ``PAD_ITEM``."""
    if not rankings:
        raise ValueError("rrf_fuse: no rankings")
    rankings = [np.asarray(r) for r in rankings]
    n = rankings[0].shape[0]
    if any(r.ndim != 2 or r.shape[0] != n for r in rankings):
        raise ValueError(f"rrf_fuse: rankings must be [rows, K] with the same rows, got {[r.shape for r in rankings]}")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings) or any(w < 0 for w in weights) or k0 <= 0:
        raise ValueError(f"rrf_fuse: one weight >= 0 per ranking and k0 > 0 (got {weights}, k0 {k0})")
    out = np.full((n, k), PAD_ITEM, dtype=np.int64)
    for row in range(n):
        score = rrf_scores([r[row].tolist() for r in rankings], weights, k0)
        best = list(score)[:k]
        out[row, :len(best)] = best
    return out


def rrf_scores(lists: Sequence[Sequence[int]], weights: Sequence[float], k0: float = RRF_K0) -> dict[int, float]:
    """``{item: fused score}`` of one row's ranked ``lists`` (``PAD_ITEM`` ignored), best first; equal scores
    keep the order of first appearance (the first list's order, then the next's)."""
    score: dict[int, float] = {}
    for items, w in zip(lists, weights):
        for rank, item in enumerate(items):
            if item != PAD_ITEM:
                score[item] = score.get(item, 0.0) + w / (k0 + rank)
    return dict(sorted(score.items(), key=lambda kv: kv[1], reverse=True))  # stable: ties keep insertion order


HYBRID = "raygen+content"
"""The eval table's name of the fused ranking."""


def serving_choice(per_split: dict[str, dict], metric: str = "ndcg@10", intervals: dict | None = None) -> dict:
    """Which ranking ``raygen recommend`` serves by default, chosen on the valid split of the eval stage's
    ``per_split`` tables (``{split: {method: metrics}}``): the hybrid where its valid ``metric`` is higher
    than the model's alone, else the model. The test split never decides (it stays the unbiased report).
    With ``intervals`` (the eval stage's :func:`raygen.eval.metrics.confidence` results, ``{split: {metric:
    ...}}``) the choice also carries the paired difference hybrid - model on valid with its 95 % interval
    (``diff_ci95``; ``why`` says when the interval holds 0, i.e. the valid rows do not separate the two).
    Returns ``{"ranking", "chosen_on", "why", ...}``; without valid-split figures of both rankings
    (``eval.splits`` lacks 'valid', or ``eval.fusion`` is false) the model, saying so.

    Why decide at all: on Amazon Industrial the hybrid beats every trained variant, while on the synthetic
    default (item text carries little of the sequence signal) it loses ~0.06 NDCG@10; neither default is
    right for every catalog, and the valid split is the data that can tell."""
    valid = per_split.get("valid", {})
    if HYBRID not in valid or "raygen" not in valid:
        return {"ranking": "raygen", "chosen_on": None,
                "why": "no valid-split figures of both rankings (eval.splits without 'valid', or eval.fusion false)"}
    model, hybrid = float(valid["raygen"][metric]), float(valid[HYBRID][metric])
    best = HYBRID if hybrid > model else "raygen"
    out = {"ranking": best, "chosen_on": "valid", "metric": metric, "n_rows": int(valid["raygen"].get("n", 0)),
           "raygen": model, HYBRID: hybrid,
           "why": f"valid {metric}: {HYBRID} {hybrid:.4f} vs raygen {model:.4f} ({valid['raygen'].get('n', '?')} rows"}
    pair = (((intervals or {}).get("valid") or {}).get(metric) or {}).get("paired", {}).get(f"{HYBRID} - raygen")
    if pair:
        lo, hi = pair["ci95"]
        out["diff_ci95"] = [lo, hi]
        out["why"] += f"; difference {pair['diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]" + (
            ", an interval that holds 0: the valid rows do not separate the two" if lo <= 0 <= hi else "")
    out["why"] += ")"
    return out
