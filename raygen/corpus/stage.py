"""The corpus stage: item embeddings and keywords from the data stage's items.

Reads ``<run_dir>/data/items.parquet``; writes ``embeddings.parquet`` (item_id int64,
embedding fixed_size_list<float32>[D]) and ``keywords.parquet`` (item_id int64, keywords
list<string>, source 'teacher'|'fallback'), both sorted by item_id and holding every item.
"""
from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from raygen.corpus.config import CorpusConfig
from raygen.corpus.keywords import SOURCE_FALLBACK, SOURCE_TEACHER
from raygen.corpus.ray_layer import embed_items, ensure_ray, keyword_items
from raygen.data.schema import DataError
from raygen.io import read_parquet, write_parquet
from raygen.runner import StageContext

FALLBACK_SAMPLE = 20


def keyword_metrics(keywords: pa.Table, cfg: CorpusConfig) -> dict:
    """Teacher/fallback counts. Items the teacher was asked about are the first
    ``keyword_max_items`` by item_id (all when 0), none with the fallback backend."""
    n = keywords.num_rows
    asked = 0 if cfg.keyword_backend == "fallback" else (min(n, cfg.keyword_max_items) if cfg.keyword_max_items else n)
    source = keywords.column("source")
    n_teacher = pc.sum(pc.equal(source, SOURCE_TEACHER)).as_py() or 0
    ids = keywords.column("item_id").slice(0, asked)
    failed = ids.filter(pc.equal(source.slice(0, asked), SOURCE_FALLBACK)).to_pylist()
    lengths = pc.list_value_length(keywords.column("keywords"))
    return {
        "keyword_backend": cfg.keyword_backend,
        "n_teacher_asked": asked,
        "n_teacher": n_teacher,
        "n_fallback": n - n_teacher,
        "n_teacher_unusable": len(failed),
        "teacher_usable_rate": round(n_teacher / asked, 4) if asked else None,
        "fallback_after_teacher_ids_sample": failed[:FALLBACK_SAMPLE],
        "mean_keywords_per_item": round(pc.mean(lengths).as_py() or 0.0, 3),
        "n_items_without_keywords": pc.sum(pc.equal(lengths, 0)).as_py() or 0,
    }


def run_corpus(ctx: StageContext) -> dict:
    """Embed every item and extract its keywords through Ray Data actor pools; return metrics."""
    cfg: CorpusConfig = ctx.cfg.corpus
    path = ctx.input("data") / "items.parquet"
    items = read_parquet(path).sort_by("item_id")
    if items.num_rows == 0:
        raise DataError(str(path), None, None, "no items")
    if pc.count_distinct(items.column("item_id")).as_py() != items.num_rows:
        raise DataError(str(path), None, "item_id", "duplicate item ids")
    ensure_ray()

    t0 = time.perf_counter()
    emb = embed_items(items, cfg)
    embed_s = time.perf_counter() - t0
    write_parquet(ctx.out / "embeddings.parquet", emb)

    t0 = time.perf_counter()
    kw = keyword_items(items, cfg)
    keyword_s = time.perf_counter() - t0
    write_parquet(ctx.out / "keywords.parquet", kw)

    n = items.num_rows
    return {
        "n_items": n,
        "dim": emb.schema.field("embedding").type.list_size,
        # End-to-end wall time of each Ray Data pass, actor start-up and model load included.
        "embed_seconds": round(embed_s, 3),
        "embed_items_per_s": round(n / embed_s, 2),
        "keyword_seconds": round(keyword_s, 3),
        "keyword_items_per_s": round(n / keyword_s, 2),
        **keyword_metrics(kw, cfg),
    }

