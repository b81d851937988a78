"""Initialise the embedding rows of new SID tokens: random, mean, or SA-Init (semantic keywords).

SA-Init (STAR): an SID token stands for a cluster of items, described by ranked keywords (the sids
stage's ``tokens.parquet``). Its row starts at the mean of the LM's *own* embeddings of those
keywords, so the new token begins in the region of embedding space the LM already associates
with the cluster's meaning instead of at a random or average point.

A mean of many keyword embeddings is much shorter than a real token row (averaging cancels the
directions the keywords do not share), so ``sa_init_rescale`` scales each SA-Init row to the mean L2
norm of the pretrained vocabulary rows, keeping its direction. The report records the mean row
norms (vocabulary vs SID rows, and the SA-Init rows before rescaling) so the effect is visible.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

import pyarrow as pa
import torch

from raygen.lm.vocab import base_rows, embedding_matrices


def keyword_ids(tokenizer, keyword: str, excluded: set[int], prefix_space: bool = True) -> list[int]:
    """Subword ids of one keyword, without special/SID ids and whitespace-only pieces."""
    keyword = keyword.strip()
    if not keyword:
        return []
    text = f" {keyword}" if prefix_space else keyword
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [i for i in ids if i not in excluded and tokenizer.decode([i]).strip()]


def keyword_vector(matrix: torch.Tensor, keyword_id_lists: Iterable[list[int]]) -> torch.Tensor | None:
    """Mean over keywords of the mean of each keyword's subword rows; None without usable keyword."""
    per_keyword = [matrix[ids].float().mean(0) for ids in keyword_id_lists if ids]
    if not per_keyword:
        return None
    return torch.stack(per_keyword).mean(0)


def _rows(tokens_table) -> list[dict]:
    return tokens_table.to_pylist() if isinstance(tokens_table, pa.Table) else list(tokens_table)


@torch.no_grad()
def init_sid_rows(model, tokenizer, sid_ids: torch.Tensor, tokens_table, strategy: str = "sa_init",
                  sa_init_depth: int = 3, seed: int = 0, std: float = 0.02,
                  prefix_space: bool = True, sa_init_rescale: bool = False) -> dict:
    """Set the input rows (and, for an untied head, the output rows) of ``sid_ids``.

    ``tokens_table``: rows (``pa.Table`` or dicts) with ``level``, ``code``, ``token``, ``keywords``.
    - ``random``: every SID row ~ N(0, std) (a seeded generator; untied head rows drawn separately);
    - ``mean``: every SID row = mean of the pretrained vocabulary rows (SID rows excluded);
    - ``sa_init``: tokens at level < ``sa_init_depth`` = mean over their keywords of the mean of each
      keyword's subword rows (see :func:`keyword_ids`); other tokens, and tokens with no usable
      keyword, get ``mean``. An untied head's rows are set the same way from the head matrix.
      With ``sa_init_rescale`` each keyword row is then scaled to the mean L2 norm of that matrix's
      pretrained vocabulary rows (direction kept; the ``mean`` fallback rows are left as they are).
    Returns a report of how many rows each strategy set, and mean row norms: ``vocab_mean_norm``,
    ``sid_mean_norm`` (all SID rows after init), ``sa_init_raw_mean_norm`` (keyword rows before any
    rescaling); an untied head adds the same keys prefixed ``head_``.
    """
    if strategy not in ("random", "mean", "sa_init"):
        raise ValueError(f"unknown init strategy {strategy!r}; use random, mean or sa_init")
    sid_ids = torch.as_tensor(sid_ids, dtype=torch.long)
    inp, out = embedding_matrices(model)
    matrices = [m for m in (inp, out) if m is not None]
    report: Counter = Counter()
    base = base_rows(tokenizer, sid_ids, n_rows=inp.shape[0])
    vocab_norms = [float(m[base].float().norm(dim=1).mean()) for m in matrices]
    raw_norms: list[list[float]] = [[] for _ in matrices]
    if strategy == "random":
        gen = torch.Generator().manual_seed(seed)
        for m in matrices:
            noise = torch.randn(len(sid_ids), m.shape[1], generator=gen) * std
            m[sid_ids] = noise.to(m.dtype)
        report["random"] = len(sid_ids)
        return _finish(report, strategy, out is None, matrices, sid_ids, vocab_norms, raw_norms)

    means = [m[base].float().mean(0) for m in matrices]
    for m, mu in zip(matrices, means):
        m[sid_ids] = mu.to(m.dtype)
    if strategy == "mean":
        report["mean"] = len(sid_ids)
        return _finish(report, strategy, out is None, matrices, sid_ids, vocab_norms, raw_norms)

    excluded = set(sid_ids.tolist()) | set(tokenizer.all_special_ids)
    id_of = {t: i for t, i in zip(tokenizer.convert_ids_to_tokens(sid_ids.tolist()), sid_ids.tolist())}
    done: set[int] = set()
    for row in _rows(tokens_table):
        tid = id_of.get(row["token"])
        if tid is None:
            raise ValueError(f"tokens table row {row['token']!r} (level {row['level']}, code {row['code']}) "
                             "is not among the SID ids given")
        done.add(tid)
        if row["level"] >= sa_init_depth:
            report["mean_below_depth"] += 1
            continue
        keywords = list(row.get("keywords") or [])
        lists = [keyword_ids(tokenizer, k, excluded, prefix_space) for k in keywords]
        report["keywords_total"] += len(keywords)
        report["keywords_unusable"] += sum(1 for ids in lists if not ids)
        vecs = [keyword_vector(m, lists) for m in matrices]
        if vecs[0] is None:
            report["mean_no_keywords"] += 1
            continue
        for m, v, target, raw in zip(matrices, vecs, vocab_norms, raw_norms):
            norm = float(v.norm())
            raw.append(norm)
            if sa_init_rescale and norm > 0:
                v = v * (target / norm)
            m[tid] = v.to(m.dtype)
        report["sa_init"] += 1
    report["mean_not_in_table"] = len(sid_ids) - len(done)
    report["mean"] = report["mean_below_depth"] + report["mean_no_keywords"] + report["mean_not_in_table"]
    report["sa_init_rescaled"] = bool(sa_init_rescale)
    return _finish(report, strategy, out is None, matrices, sid_ids, vocab_norms, raw_norms)


def _finish(report: Counter, strategy: str, tied: bool, matrices: list[torch.Tensor], sid_ids: torch.Tensor,
            vocab_norms: list[float], raw_norms: list[list[float]]) -> dict:
    norms: dict = {}
    for prefix, m, vocab, raw in zip(("", "head_"), matrices, vocab_norms, raw_norms):
        norms[f"{prefix}vocab_mean_norm"] = vocab
        norms[f"{prefix}sid_mean_norm"] = float(m[sid_ids].float().norm(dim=1).mean()) if len(sid_ids) else 0.0
        if raw:
            norms[f"{prefix}sa_init_raw_mean_norm"] = sum(raw) / len(raw)
    return {"strategy": strategy, "tied_head": tied, "random": 0, "mean": 0, "sa_init": 0, **report, **norms}
