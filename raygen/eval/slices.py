"""Cold / warm slices of an evaluation (TS-Rec's cold-start claim): a row is *cold* when its target item
never appears as a training target, *warm* otherwise. Every evaluation reports both slices' metrics with
their row counts next to the whole split's."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raygen.eval.metrics import ranking_metrics


def training_targets(samples: pa.Table) -> np.ndarray:
    """Distinct target item ids of the 'train' split (the items SFT learns to emit)."""
    train = samples.filter(pc.equal(samples.column("split"), "train"))
    return np.unique(np.asarray(train.column("target").to_numpy(zero_copy_only=False), dtype=np.int64))


def cold_mask(targets: np.ndarray, train_targets: np.ndarray) -> np.ndarray:
    """True where the row's target is not a training target."""
    return ~np.isin(np.asarray(targets, dtype=np.int64), train_targets)


def slice_metrics(topk_items: np.ndarray, targets: np.ndarray, cold: np.ndarray, ks: Iterable[int]) -> dict:
    """``{"cold": {"n", "hr@K", "ndcg@K", ...}, "warm": {...}}``; a slice without rows has only ``n = 0``."""
    topk_items, targets, cold = np.asarray(topk_items), np.asarray(targets), np.asarray(cold, dtype=bool)
    out = {}
    for name, mask in (("cold", cold), ("warm", ~cold)):
        n = int(mask.sum())
        out[name] = {"n": n, **(ranking_metrics(topk_items[mask], targets[mask], ks) if n else {})}
    return out
