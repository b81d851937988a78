"""Baselines that need no training, evaluated on the same rows as the model.

- Most popular: every row gets the same list, items ranked by training-set frequency. Counts every
  occurrence in the training targets and training histories (nothing excluded); ties are broken by the
  smaller item id, so the ranking is deterministic.
- Content (item-to-item text similarity): every catalog item ranked by cosine between its corpus-stage
  text embedding and the mean unit embedding of the user's last ``last`` history items. History items are
  not excluded (the model's beam search does not exclude them either). It needs no training and ranks
  items no model has seen as a target, so it is the yardstick for cold and newly added items. Written here
  rather than with faiss: an exact matrix product over a catalog of thousands of items is one BLAS call.
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


def rank_by_cosine(query: np.ndarray, item_ids: np.ndarray, emb_ids: np.ndarray, X: np.ndarray, k: int) -> np.ndarray:
    """``[rows, k]`` item ids: every item of ``item_ids`` ranked by cosine between its embedding (``X[i]``: item
    ``emb_ids[i]``'s) and each row of ``query`` (any non-zero length). Ties go to the item earlier in ``item_ids``."""
    pos = embedding_rows({int(i): n for n, i in enumerate(emb_ids)}, item_ids, "catalog item")
    unit = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    scores = query @ unit[pos].T  # one positive scale per row from the cosine: same order
    return np.asarray(item_ids)[np.argsort(-scores, axis=1, kind="stable")[:, :k]]


def content_rank(histories: Sequence[Sequence[int]], item_ids: np.ndarray, emb_ids: np.ndarray, X: np.ndarray,
                 k: int, last: int = 1) -> np.ndarray:
    """``[rows, k]`` item ids of the content baseline: every item of ``item_ids`` ranked by cosine between its
    embedding and the mean unit embedding of the row's last ``last`` history items (``X[i]``: item
    ``emb_ids[i]``'s embedding). Ties go to the item earlier in ``item_ids``. Every history must be non-empty."""
    if last < 1:
        raise ValueError(f"content baseline: last must be >= 1, got {last}")
    unit = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    index = {int(i): n for n, i in enumerate(emb_ids)}
    rows = [embedding_rows(index, list(h)[-last:], "history item") for h in histories]
    if any(len(r) == 0 for r in rows):
        raise ValueError("content baseline: a row has an empty history")
    query = np.stack([unit[r].mean(0) for r in rows]) if rows else np.zeros((0, X.shape[1]), X.dtype)
    return rank_by_cosine(query, item_ids, emb_ids, X, k)


def embedding_rows(pos: dict[int, int], ids: Sequence[int], what: str) -> list[int]:
    """Rows of ``ids`` in an embedding table (``pos``: item id -> row); an id without one is an error naming it."""
    missing = [int(i) for i in ids if int(i) not in pos]
    if missing:
        raise ValueError(f"{what}(s) {missing[:5]} have no corpus embedding "
                         "(corpus/embeddings.parquet covers every item of data/items.parquet)")
    return [pos[int(i)] for i in ids]
