"""Most-popular baseline: every row gets the same list, items ranked by training-set frequency.

Counts every occurrence in the training targets and training histories (nothing excluded); ties
are broken by the smaller item id, so the ranking is deterministic.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import numpy as np


def popularity_counts(histories: Iterable[Sequence[int]], targets: Iterable[int]) -> Counter:
    """Occurrences of each item id in ``histories`` (all positions) and ``targets``."""
    counts: Counter = Counter()
    for h in histories:
        counts.update(int(x) for x in h)
    counts.update(int(x) for x in targets)
    return counts


def most_popular(counts: Counter, k: int) -> np.ndarray:
    """The ``k`` most frequent item ids, most frequent first (fewer if fewer items were seen)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return np.asarray([item for item, _ in ranked[:k]], dtype=np.int64)


def popularity_rank(train_histories: Iterable[Sequence[int]], train_targets: Iterable[int],
                    n_rows: int, k: int) -> np.ndarray:
    """[n_rows, k] item-id predictions of the most-popular baseline (same list on every row)."""
    top = most_popular(popularity_counts(train_histories, train_targets), k)
    return np.tile(top, (n_rows, 1))
