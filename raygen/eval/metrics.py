"""Top-K ranking metrics (HR@K, NDCG@K) for next-item prediction, and the predictions table.

One relevant item per row: HR@K = 1 if the target is among the first K predictions, and
NDCG@K = 1 / log2(rank + 2) for a 0-based hit rank < K (the ideal DCG is 1).

:func:`collapse_stats` tells whether a model ranks (nearly) the same list for every user -- the
usual failure of a generative recommender that learned the item prior but not the history.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

from raygen.io import write_parquet

DEFAULT_KS = (1, 3, 5, 10)
PAD_ITEM = -1
"""Marks an unfilled slot (the catalog had fewer items than the beam width)."""


def hit_ranks(topk_items: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target in its prediction list, or -1 if absent."""
    topk_items = np.asarray(topk_items)
    targets = np.asarray(targets)
    if topk_items.ndim != 2 or targets.shape != (topk_items.shape[0],):
        raise ValueError(f"need topk_items [N, K] and targets [N], got {topk_items.shape} and {targets.shape}")
    hit = topk_items == targets[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1)


def per_row_metrics(topk_items: np.ndarray, targets: np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Per-row HR@K (0/1) and NDCG@K (1/log2(rank+2) for a hit inside K, else 0) for K in ``ks``."""
    ranks = hit_ranks(topk_items, targets)
    found = ranks >= 0
    gain = np.where(found, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    out = {}
    for k in ks:
        inside = found & (ranks < k)
        out[f"hr@{k}"] = inside.astype(float)
        out[f"ndcg@{k}"] = np.where(inside, gain, 0.0)
    return out


def ranking_metrics(topk_items: np.ndarray, targets: np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> dict:
    """HR@K and NDCG@K averaged over rows. K larger than the list width scores the whole list."""
    rows = per_row_metrics(topk_items, targets, ks)
    if len(targets) == 0:
        raise ValueError("no rows to evaluate")
    return {name: float(v.mean()) for name, v in rows.items()}


BOOTSTRAP = 1000
"""Bootstrap resamples of the rows behind every 95 % interval."""


def bootstrap_means(values: np.ndarray, n: int = BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """Means of ``n`` bootstrap resamples of the rows: ``values`` [N] -> [n], or [M, N] (M quantities on the
    same rows, resampled together: paired) -> [M, n]. One resample at a time, so memory stays O(M * N)."""
    values = np.asarray(values, dtype=np.float64)
    rows = values.shape[-1]
    if rows == 0:
        raise ValueError("no rows to resample")
    rng = np.random.default_rng(seed)
    out = np.empty((*values.shape[:-1], n))
    for b in range(n):
        out[..., b] = values[..., rng.integers(0, rows, size=rows)].mean(axis=-1)
    return out


def percentile_interval(means: np.ndarray) -> list[float]:
    """The 95 % percentile interval of bootstrap ``means``."""
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def bootstrap_ci(values: np.ndarray, n: int = BOOTSTRAP, seed: int = 0) -> list[float]:
    """95 % percentile bootstrap interval of the mean of ``values`` over rows."""
    return percentile_interval(bootstrap_means(values, n, seed))


def confidence(rankings: dict[str, np.ndarray], targets: np.ndarray, metric: str, pairs: Sequence[tuple[str, str]],
               n: int = BOOTSTRAP, seed: int = 0) -> dict:
    """95 % bootstrap intervals of ``metric`` (e.g. 'ndcg@10') for each method's ranking [N, K] on the same
    rows, and of the paired differences ``a - b`` for ``pairs`` (the same resamples for every method, so a
    difference's interval accounts for the rows both methods share):
    ``{"metric", "n", "resamples", "methods": {name: {"mean", "ci95"}}, "paired": {"a - b": {"diff", "ci95"}}}``."""
    name, _, k = metric.partition("@")
    if name not in ("hr", "ndcg") or not k.isdigit():
        raise ValueError(f"metric must be 'hr@K' or 'ndcg@K', got {metric!r}")
    names = list(rankings)
    values = np.stack([per_row_metrics(rankings[m], targets, [int(k)])[metric] for m in names])
    means = bootstrap_means(values, n, seed)
    pos = {m: i for i, m in enumerate(names)}
    out = {"metric": metric, "n": int(values.shape[1]), "resamples": n,
           "methods": {m: {"mean": float(values[i].mean()), "ci95": percentile_interval(means[i])} for m, i in pos.items()},
           "paired": {}}
    for a, b in pairs:
        out["paired"][f"{a} - {b}"] = {"diff": float(values[pos[a]].mean() - values[pos[b]].mean()),
                                       "ci95": percentile_interval(means[pos[a]] - means[pos[b]])}
    return out


def count_invalid(topk_items: np.ndarray, catalog_item_ids: Sequence[int] | np.ndarray) -> dict:
    """Predictions outside the catalog (``invalid``), unfilled slots, and rows repeating an item."""
    topk_items = np.asarray(topk_items)
    filled = topk_items != PAD_ITEM
    in_catalog = np.isin(topk_items, np.asarray(catalog_item_ids))
    dup_rows = sum(len(set(r[f].tolist())) < int(f.sum()) for r, f in zip(topk_items, filled))
    return {"invalid": int((filled & ~in_catalog).sum()), "unfilled": int((~filled).sum()),
            "rows_with_duplicates": int(dup_rows)}


COLLAPSE_MIN_ROWS = 20
"""Fewer rows than this are never called collapsed (too few to tell)."""
COLLAPSE_SAME_SHARE = 0.5
"""Collapsed when at least this share of rows has the most common top-10 list ..."""
COLLAPSE_TOP1_SHARE = 0.01
"""... or when at most max(1, this share of rows) distinct items are ranked first."""


def collapse_stats(topk_items: np.ndarray, n_catalog: int) -> dict:
    """Diversity of the rankings ``topk_items`` [N, K] (item ids; ``PAD_ITEM`` slots ignored).

    - ``distinct_top1``: distinct items ranked first over all rows;
    - ``coverage@10``: share of the ``n_catalog`` items appearing in any row's top-10;
    - ``same_top10_share``: share of rows whose top-10 (an ordered tuple) equals the most common one;
    - ``collapsed``: with at least ``COLLAPSE_MIN_ROWS`` rows, ``same_top10_share >= 0.5`` or
      ``distinct_top1 <= max(1, 0.01 * rows)``: (nearly) every user gets the same ranking, whatever
      the history. A popularity baseline is collapsed by construction.
    """
    topk_items = np.asarray(topk_items)
    if topk_items.ndim != 2:
        raise ValueError(f"need topk_items [N, K], got {topk_items.shape}")
    n_rows = int(topk_items.shape[0])
    if n_rows == 0 or topk_items.shape[1] == 0:
        return {"distinct_top1": 0, "coverage@10": 0.0, "same_top10_share": 0.0, "collapsed": False}
    top1 = topk_items[:, 0]
    distinct_top1 = int(np.unique(top1[top1 != PAD_ITEM]).size)
    top10 = topk_items[:, :10]
    covered = np.unique(top10[top10 != PAD_ITEM]).size
    _, counts = np.unique(top10, axis=0, return_counts=True)
    same = float(counts.max() / n_rows)
    collapsed = n_rows >= COLLAPSE_MIN_ROWS and (
        same >= COLLAPSE_SAME_SHARE or distinct_top1 <= max(1.0, COLLAPSE_TOP1_SHARE * n_rows))
    return {"distinct_top1": distinct_top1, "coverage@10": float(covered / max(int(n_catalog), 1)),
            "same_top10_share": same, "collapsed": bool(collapsed)}


def evaluate_rankings(topk_items: np.ndarray, targets: np.ndarray,
                      catalog_item_ids: Sequence[int] | np.ndarray | None = None,
                      ks: Iterable[int] = DEFAULT_KS) -> dict:
    """All evaluation metrics for item-id predictions ``topk_items`` [N, K] and ``targets`` [N].

    Invalid predictions (not in ``catalog_item_ids``) are counted, never dropped: they simply
    cannot be hits. Returns ``{"n": N, "hr@K": .., "ndcg@K": .., "invalid": .., ...}`` and, given
    the catalog, the :func:`collapse_stats` diagnostics.
    """
    topk_items = np.asarray(topk_items)
    out = {"n": int(topk_items.shape[0]), **ranking_metrics(topk_items, targets, ks)}
    if catalog_item_ids is not None:
        out.update(count_invalid(topk_items, catalog_item_ids))
        out.update(collapse_stats(topk_items, len(np.asarray(catalog_item_ids))))
    return out


def indices_to_item_ids(topk_index: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Map item row indices (as returned by the beam search; -1 = unfilled) to item ids."""
    topk_index = np.asarray(topk_index)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    return np.where(topk_index >= 0, item_ids[np.maximum(topk_index, 0)], PAD_ITEM)


def predictions_table(row_ids: Sequence[int], targets: Sequence[int], topk_items: np.ndarray,
                      scores: np.ndarray) -> pa.Table:
    """(row_id int64, target int64, topk list<int64>, scores list<float32>) per row."""
    topk_items, scores = np.asarray(topk_items, dtype=np.int64), np.asarray(scores, dtype=np.float32)
    if topk_items.shape != scores.shape or topk_items.shape[0] != len(row_ids) or len(row_ids) != len(targets):
        raise ValueError(f"shape mismatch: {len(row_ids)} row_ids, {len(targets)} targets, "
                         f"topk {topk_items.shape}, scores {scores.shape}")
    return pa.table({
        "row_id": pa.array(np.asarray(row_ids, dtype=np.int64)),
        "target": pa.array(np.asarray(targets, dtype=np.int64)),
        "topk": pa.array(list(topk_items), type=pa.list_(pa.int64())),
        "scores": pa.array(list(scores), type=pa.list_(pa.float32())),
    })


def write_predictions(path: str | Path, row_ids: Sequence[int], targets: Sequence[int],
                      topk_items: np.ndarray, scores: np.ndarray) -> None:
    """Write :func:`predictions_table` atomically to ``path`` (Parquet)."""
    write_parquet(path, predictions_table(row_ids, targets, topk_items, scores))


# ---------------------------------------------------------------- statistics over seeds (benchmarks, reports)

SUMMARY_METRICS = ["hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10"]
"""The metrics a multi-seed summary reports by default."""


def summarize(rows_per_seed: list[dict[str, np.ndarray]], metrics: list[str] = SUMMARY_METRICS) -> dict:
    """Mean ± std over seeds, and the bootstrap CI of the seed-averaged per-row metric."""
    out = {}
    for m in metrics:
        per_seed = [float(r[m].mean()) for r in rows_per_seed]
        avg = np.mean([r[m] for r in rows_per_seed], axis=0)
        out[m] = {"mean": float(np.mean(per_seed)), "std": float(np.std(per_seed)), "seeds": per_seed,
                  "ci95": bootstrap_ci(avg)}
    return out


def cell(s: dict) -> str:
    """One table cell of a :func:`summarize` entry: ``mean ± std [CI]``; the std is ``–`` when only one seed
    ran (a spread over one seed is not 0, it is unknown)."""
    spread = f"{s['std']:.4f}" if len(s.get("seeds", ())) > 1 else "–"
    return f"{s['mean']:.4f} ± {spread} [{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]"


def paired_diff(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]], metric: str = "ndcg@10") -> dict:
    """Bootstrap CI of mean(a) - mean(b) on the same rows (seed-averaged per row)."""
    d = np.mean([r[metric] for r in a], axis=0) - np.mean([r[metric] for r in b], axis=0)
    return {"diff": float(d.mean()), "ci95": bootstrap_ci(d)}


def slice_summaries(rows: dict[str, list], masks: dict[str, np.ndarray], metrics: list[str] = SUMMARY_METRICS) -> dict:
    """``{method: {slice: {"n", metric: summary}}}``: each method's per-seed rows restricted to each boolean
    row mask and summarized (:func:`summarize`); a slice without rows has only ``n = 0``."""
    out = {}
    for name, per_seed in rows.items():
        out[name] = {}
        for part, mask in masks.items():
            n = int(mask.sum())
            out[name][part] = {"n": n, **(summarize([{m: r[m][mask] for m in metrics} for r in per_seed], metrics)
                                          if n else {})}
    return out
