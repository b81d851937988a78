"""The corpus stage: item embeddings and keywords from the data stage's items.

Reads ``<run_dir>/data/items.parquet``; writes ``embeddings.parquet`` (item_id int64,
embedding fixed_size_list<float32>[D]) and ``keywords.parquet`` (item_id int64, keywords
list<string>, source 'teacher'|'fallback'), both sorted by item_id and holding every item, and,
with ``corpus.n_queries > 0``, ``queries.parquet``: one row per (item, search query) with its split
('train'/'valid'/'test', per item), the item's query source ('teacher'|'mixed'|'fallback'), how many
of its queries the teacher wrote and whether its answer was malformed JSON.
"""
from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from raygen.corpus.config import CorpusConfig
from raygen.corpus.keywords import SOURCE_FALLBACK, SOURCE_TEACHER
from raygen.corpus.queries import query_rows, split_queries
from raygen.corpus.ray_layer import KEYWORDS_SCHEMA, embed_items, ensure_ray, keyword_items
from raygen.data.schema import DataError
from raygen.io import read_parquet, write_parquet
from raygen.runner import StageContext

FALLBACK_SAMPLE = 20


def teacher_asked(n: int, cfg: CorpusConfig, max_items: int) -> int:
    """Items the teacher was asked about: the first ``max_items`` (all when 0), none with the fallback backend."""
    return 0 if cfg.keyword_backend == "fallback" else (min(n, max_items) if max_items else n)


def teacher_precision(cfg: CorpusConfig) -> dict | None:
    """The teacher's weight dtype as resolved on this (the driver's) machine: each teacher actor resolves
    ``corpus.teacher_bf16`` on its own hardware and logs it; on one machine, or one kind, they agree."""
    if cfg.keyword_backend == "fallback":
        return None
    from raygen.corpus.teacher import teacher_device
    from raygen.precision import engine_dtype

    device = teacher_device(cfg) if cfg.keyword_backend == "hf" else None
    dtype, reason = engine_dtype(cfg.teacher_bf16, device)
    return {"setting": cfg.teacher_bf16, "dtype": dtype, "reason": reason}


def keyword_metrics(keywords: pa.Table, cfg: CorpusConfig) -> dict:
    """Teacher/fallback counts. Items the teacher was asked about are the first
    ``keyword_max_items`` by item_id (all when 0), none with the fallback backend."""
    n = keywords.num_rows
    asked = teacher_asked(n, cfg, cfg.keyword_max_items)
    source = keywords.column("source")
    n_teacher = pc.sum(pc.equal(source, SOURCE_TEACHER)).as_py() or 0
    ids = keywords.column("item_id").slice(0, asked)
    failed = ids.filter(pc.equal(source.slice(0, asked), SOURCE_FALLBACK)).to_pylist()
    lengths = pc.list_value_length(keywords.column("keywords"))
    return {
        "keyword_backend": cfg.keyword_backend,
        "teacher_precision": teacher_precision(cfg),
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
    """Embed every item and extract its keywords through Ray Data actor pools; return metrics.

    The items are read here, in the driver (an items table is small: one row per item), and reach the
    actors as Arrow blocks through Ray's object store, so no worker reads a path of the driver."""
    cfg: CorpusConfig = ctx.cfg.corpus
    path = ctx.input("data") / "items.parquet"
    items = read_parquet(path).sort_by("item_id")
    if items.num_rows == 0:
        raise DataError(str(path), None, None, "no items")
    if pc.count_distinct(items.column("item_id")).as_py() != items.num_rows:
        raise DataError(str(path), None, "item_id", "duplicate item ids")
    ensure_ray()

    nodes: dict[str, list[str]] = {"corpus_embed": [], "corpus_keywords": []}
    t0 = time.perf_counter()
    emb = embed_items(items, cfg, nodes["corpus_embed"])
    embed_s = time.perf_counter() - t0
    write_parquet(ctx.out / "embeddings.parquet", emb)

    t0 = time.perf_counter()
    kw = keyword_items(items, cfg, nodes["corpus_keywords"])
    keyword_s = time.perf_counter() - t0
    write_parquet(ctx.out / "keywords.parquet", kw.select(KEYWORDS_SCHEMA.names))
    query_metrics = {}
    if cfg.n_queries > 0:
        queries = queries_table(kw, cfg)
        write_parquet(ctx.out / "queries.parquet", queries)
        query_metrics = queries_metrics(kw, queries, cfg)

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
        **query_metrics,
        "nodes": nodes,  # Ray node ids each actor pool ran on
    }


def queries_table(teacher: pa.Table, cfg: CorpusConfig) -> pa.Table:
    """The long ``queries.parquet`` from the teacher pass's per-item query columns (split per item)."""
    ids = teacher.column("item_id").to_pylist()
    records = [{"queries": q, "source": s, "n_teacher": n, "malformed": m} for q, s, n, m in zip(
        *(teacher.column(c).to_pylist() for c in ("queries", "query_source", "query_n_teacher", "query_malformed")))]
    splits = split_queries(ids, cfg.n_queries, tuple(cfg.query_split), cfg.query_seed)
    return pa.table(query_rows(ids, records, splits))


def queries_metrics(teacher: pa.Table, queries: pa.Table, cfg: CorpusConfig) -> dict:
    """Per-item counts of where the queries came from (nothing is dropped: fallback fills every gap)."""
    source = teacher.column("query_source")
    asked = teacher_asked(teacher.num_rows, cfg, cfg.query_max_items)
    count = {s: pc.sum(pc.equal(source, s)).as_py() or 0 for s in ("teacher", "mixed", "fallback")}
    splits = queries.column("split")
    return {"n_queries": queries.num_rows, "queries_per_item": cfg.n_queries, "query_items_teacher_asked": asked,
            "query_items_teacher": count["teacher"], "query_items_mixed": count["mixed"],
            "query_items_fallback": count["fallback"],
            "query_items_malformed": pc.sum(teacher.column("query_malformed")).as_py() or 0,
            "queries_from_teacher": pc.sum(teacher.column("query_n_teacher")).as_py() or 0,
            "queries_by_split": {s: pc.sum(pc.equal(splits, s)).as_py() or 0 for s in ("train", "valid", "test")}}

