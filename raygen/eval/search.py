"""Search evaluation (STAR's query -> item task): the test queries' prompts, the model's constrained
beam search over them, Recall@K / NDCG@K, and a BM25 text-retrieval baseline on the same queries.

Each query has exactly one relevant item (the one it was written for), so Recall@K equals HR@K; the
metrics are reported as ``recall@K`` / ``ndcg@K``.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pyarrow as pa

from raygen.corpus.keywords import STOP_WORDS, _field, tokens
from raygen.data.schema import SkipLog
from raygen.eval.metrics import evaluate_rankings
from raygen.eval.rows import Rows, usable_rows
from raygen.tasks.builders import search_prompt, sids_by_item

SEARCH_KS = (1, 3, 5, 10)
ITEM_FIELDS = ("title", "brand", "categories", "description")


def search_rows(queries: pa.Table, codes: pa.Table, tokenizer, tasks_cfg, split: str = "test", max_rows: int = 0,
                seed: int = 0, skips: SkipLog | None = None) -> tuple[Rows, list[str]]:
    """The ``split`` queries as evaluation rows (prompt = the first ``query2sid`` template, target = the
    query's item) and their texts; queries of items without a SID are counted in ``skips``."""
    from raygen.tasks.encode import encode_prompt

    sids = sids_by_item(codes)
    part = usable_rows(queries, split, lambda r: int(r["item_id"]) in sids, ["item_id"], max_rows, seed, skips,
                       f"search {split}: query of an item without SID", "queries row")
    texts = part.column("query").to_pylist()
    rows = Rows(row_ids=np.asarray(part.column("row_id").to_numpy(), dtype=np.int64),
                prompt_ids=[encode_prompt(tokenizer, search_prompt(q, tasks_cfg)) for q in texts],
                targets=np.asarray(part.column("item_id").to_numpy(), dtype=np.int64), histories=[[] for _ in texts])
    return rows, texts


def _terms(text: str) -> list[str]:
    return [w for w in tokens(text) if w not in STOP_WORDS and len(w) > 1]


class BM25:
    """Okapi BM25 over the items' text (title, brand, categories, description).

    Hand-written (about 20 lines) because scikit-learn has TF-IDF but no BM25 and the usual BM25
    packages add a dependency for this one baseline; k1 = 1.2, b = 0.75 as in Lucene."""

    def __init__(self, items: pa.Table, k1: float = 1.2, b: float = 0.75):
        rows = items.select([f for f in ("item_id", *ITEM_FIELDS) if f in items.column_names]).to_pylist()
        self.item_ids = np.asarray([r["item_id"] for r in rows], dtype=np.int64)
        docs = [Counter(_terms(" ".join(_field(r, f) for f in ITEM_FIELDS))) for r in rows]
        self.lengths = np.asarray([sum(d.values()) for d in docs], dtype=np.float64)
        avg = float(self.lengths.mean()) if len(docs) else 1.0
        self.postings: dict[str, list[tuple[int, int]]] = {}
        for i, d in enumerate(docs):
            for term, tf in d.items():
                self.postings.setdefault(term, []).append((i, tf))
        n = len(docs)
        self.idf = {t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for t, p in self.postings.items()}
        self.norm = k1 * (1 - b + b * self.lengths / max(avg, 1e-9))
        self.k1 = k1

    def scores(self, query: str) -> np.ndarray:
        s = np.zeros(len(self.item_ids))
        for term in set(_terms(query)):
            for i, tf in self.postings.get(term, ()):
                s[i] += self.idf[term] * tf * (self.k1 + 1) / (tf + self.norm[i])
        return s

    def rank(self, queries: list[str], k: int) -> np.ndarray:
        """Top-``k`` item ids per query (ties broken by item order, so a query without known terms
        gets the first items: no hit by chance more often than any fixed list)."""
        return np.stack([self.item_ids[np.argsort(-self.scores(q), kind="stable")[:k]] for q in queries])


def search_table(topk_items: np.ndarray, targets: np.ndarray, item_ids: np.ndarray, ks=SEARCH_KS) -> dict:
    """Search metrics of one method: ``recall@K`` (= HR@K: one relevant item per query), ``ndcg@K``,
    row count, invalid predictions and collapse diagnostics."""
    m = evaluate_rankings(topk_items, targets, item_ids, ks)
    return {(k.replace("hr@", "recall@", 1) if k.startswith("hr@") else k): v for k, v in m.items()}
