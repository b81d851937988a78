"""What each SID token means, in words: ranked keywords of the items that carry it.

A token ``<b_5>`` is shared by every prefix, so its cluster is *all* items whose level-1 code
is 5. Keywords are ranked TF-IDF style: the share of cluster items that have the keyword times
``log(N / df)``, its inverse document frequency over the whole catalog. A keyword every item
has scores 0 and ranks below any cluster-specific one. Ties break by cluster count, then
alphabetically, so the output is deterministic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
from scipy import sparse

from raygen.sid.tokens import sid_token

TOKENS_SCHEMA = pa.schema([
    ("level", pa.int32()),
    ("code", pa.int32()),
    ("token", pa.string()),
    ("keywords", pa.list_(pa.string())),
    ("description", pa.string()),
])


def normalize_keyword(k: str) -> str:
    return " ".join(str(k).lower().split())


def describe(keywords: Sequence[str]) -> str:
    return "items about: " + (", ".join(keywords) if keywords else "(no keywords)")


def token_keyword_rows(codes: np.ndarray, keywords: Sequence[Sequence[str]], n_keywords: int = 8) -> list[dict]:
    """One row per (level, code) present in ``codes [N, L]``: level, code, token, keywords, description.

    ``keywords[i]`` are item i's keywords (any case; each counts once per item).
    """
    codes = np.asarray(codes)
    if len(keywords) != len(codes):
        raise ValueError(f"{len(keywords)} keyword lists for {len(codes)} items")
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, kws in enumerate(keywords):
        for w in {normalize_keyword(k) for k in (kws or [])} - {""}:
            rows.append(i)
            cols.append(vocab.setdefault(w, len(vocab)))
    words = np.array(sorted(vocab, key=vocab.get), dtype=object)
    alpha = np.empty(len(words), dtype=np.int64)  # alphabetical rank, the last tie-break
    alpha[np.argsort(words, kind="stable")] = np.arange(len(words))
    n = len(codes)
    incidence = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, len(vocab)))
    df = np.asarray(incidence.sum(0)).ravel()
    idf = np.log(n / np.maximum(df, 1))
    out = []
    for lvl in range(codes.shape[1]):
        present, inv = np.unique(codes[:, lvl], return_inverse=True)
        inv = inv.reshape(-1)
        member = sparse.csr_matrix((np.ones(n), (inv, np.arange(n))), shape=(len(present), n))
        counts = (member @ incidence).tocsr()  # [codes present, vocab]: cluster items with each word
        sizes = np.bincount(inv, minlength=len(present))
        for j, code in enumerate(present):
            lo, hi = counts.indptr[j], counts.indptr[j + 1]
            w_idx, cnt = counts.indices[lo:hi], counts.data[lo:hi]
            score = cnt / sizes[j] * idf[w_idx]
            order = np.lexsort((alpha[w_idx], -cnt, -score))[:n_keywords]
            kws = [str(w) for w in words[w_idx[order]]]
            out.append({"level": lvl, "code": int(code), "token": sid_token(lvl, int(code)),
                        "keywords": kws, "description": describe(kws)})
    return out


def tokens_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=TOKENS_SCHEMA)
