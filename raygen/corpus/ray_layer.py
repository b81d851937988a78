"""Thin Ray Data layer over the corpus cores: actor pools for embedding and keyword extraction.

Each actor class loads its model once in ``__init__`` and is called on Arrow batches by
``Dataset.map_batches``. Results come back as one Arrow table sorted by ``item_id``, checked
to hold exactly the input ids (Ray Data does not keep order, and a lost row is an error).

Node-agnostic: the items go to the actors as Arrow blocks through Ray's object store (no worker reads a
path), models resolve on each node (packaged models, or the HF cache), and every output batch carries the
Ray node id of the actor that made it (:data:`NODE_COLUMN`), which :func:`_collect` removes and reports:
the corpus stage's metrics list the nodes each pool ran on.

CPU threads: Ray sets ``OMP_NUM_THREADS`` to the CPUs an actor reserves (1 by default), so
an embedding actor on a CPU node would run torch on one thread while the node idles. Actors
therefore reserve ``resources.cpus`` CPUs (auto: the cluster's CPUs split over the pool) and set
``torch.set_num_threads`` to match.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import pyarrow as pa

from raygen.configbase import Resources
from raygen.corpus.config import CorpusConfig
from raygen.corpus.embed import embed_texts, embeddings_table, load_embedder, table_texts
from raygen.corpus.keywords import extract_keywords, keywords_rows
from raygen.corpus.queries import extract_queries
from raygen.corpus.teacher import make_teacher
from raygen.faults import fault_options, maybe_fault

log = logging.getLogger("raygen")

KEYWORDS_SCHEMA = pa.schema([("item_id", pa.int64()), ("keywords", pa.list_(pa.string())),
                             ("source", pa.string())])
QUERY_FIELDS = pa.schema([("queries", pa.list_(pa.string())), ("query_source", pa.string()),
                          ("query_n_teacher", pa.int32()), ("query_malformed", pa.bool_())])
"""Per-item query columns the teacher actors add when ``corpus.n_queries > 0``."""
_ITEM_FIELDS = ("title", "description", "brand", "categories")
NODE_COLUMN = "_ray_node_id"
"""Column the actors add to each output batch: the Ray node id they run on (dropped by :func:`_collect`)."""


def node_id() -> str:
    """The Ray node id of this process (a worker's, or the driver's)."""
    import ray

    return ray.get_runtime_context().get_node_id()


def _with_node(table: pa.Table, node: str) -> pa.Table:
    return table.append_column(NODE_COLUMN, pa.array([node] * table.num_rows, pa.string()))


def ensure_ray() -> None:
    """Start a local Ray (all cores, no dashboard, offline worker env) unless the caller
    already connected one (``raygen.ray_utils.init_ray`` is a no-op then)."""
    from raygen.ray_utils import init_ray

    init_ray()


def _set_threads(num_threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(num_threads)))


def _device(num_gpus: float) -> str:
    if num_gpus > 0:
        import torch

        if torch.cuda.is_available():
            return "cuda"
        log.warning("actor asked for %s GPUs but torch sees none; running on CPU", num_gpus)
    return "cpu"


def actor_cpus(res: Resources) -> float:
    """CPUs each actor of a pool reserves: ``res.cpus`` if set, else auto (see module doc)."""
    if res.cpus > 0:
        return float(res.cpus)
    if res.gpus > 0:
        return 1.0
    import ray

    # Total, not available, CPUs: the previous pass's actors may not have released theirs yet.
    total = ray.cluster_resources().get("CPU", 1.0)
    per_node = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=total)
    return float(max(1, math.floor(min(total / max(res.count, 1), per_node))))


class EmbedActor:
    """Ray Data actor: (item_id, text) Arrow batch -> (item_id, embedding) Arrow batch."""

    def __init__(self, model: str, batch_size: int, normalize: bool, num_threads: int, num_gpus: float = 0.0):
        _set_threads(num_threads)
        t0 = time.perf_counter()
        self.model = load_embedder(model, _device(num_gpus))
        self.batch_size, self.normalize = batch_size, normalize
        self.node = node_id()
        log.info("EmbedActor loaded %s in %.1fs (%d torch threads)", model, time.perf_counter() - t0, num_threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        emb = embed_texts(self.model, batch.column("text").to_pylist(), self.batch_size, self.normalize)
        return _with_node(embeddings_table(batch.column("item_id").to_numpy(), emb), self.node)


class KeywordActor:
    """Ray Data actor of the teacher LLM: items Arrow batch (+ use_teacher / ask_queries flags) ->
    (item_id, keywords, source) and, with ``n_queries > 0``, the item's search queries
    (:data:`QUERY_FIELDS`): one model load serves both tasks."""

    def __init__(self, cfg: CorpusConfig, num_threads: int):
        if cfg.keyword_backend != "fallback":  # the fallback extractor needs no torch at all
            _set_threads(num_threads)
        t0 = time.perf_counter()
        self.cfg = cfg
        self.backend = make_teacher(cfg)
        self.batches = 0
        self.node = node_id()
        log.info("KeywordActor loaded %s backend in %.1fs (%s)", cfg.keyword_backend, time.perf_counter() - t0,
                 getattr(self.backend, "precision", {}).get("reason", "no LLM"))

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.batches += 1
        maybe_fault("TEACHER_BATCH", self.batches)  # tests/benchmarks only (raygen.faults)
        c = self.cfg
        rows = batch.select([f for f in _ITEM_FIELDS if f in batch.column_names]).to_pylist()
        results = extract_keywords(self.backend, rows, c.n_keywords, max_new_tokens=c.max_new_tokens,
                                   max_chars=c.keyword_max_chars, min_keywords=c.keyword_min_keywords,
                                   grounded=c.keyword_grounded, use_teacher=batch.column("use_teacher").to_pylist())
        out = pa.table(keywords_rows(batch.column("item_id").to_pylist(), results), schema=KEYWORDS_SCHEMA)
        if c.n_queries == 0:
            return _with_node(out, self.node)
        qs = extract_queries(self.backend, rows, c.n_queries, max_new_tokens=c.query_max_new_tokens,
                             max_chars=c.keyword_max_chars, use_teacher=batch.column("ask_queries").to_pylist())
        cols = {"queries": [q["queries"] for q in qs], "query_source": [q["source"] for q in qs],
                "query_n_teacher": [q["n_teacher"] for q in qs], "query_malformed": [q["malformed"] for q in qs]}
        for f in QUERY_FIELDS:
            out = out.append_column(f, pa.array(cols[f.name], f.type))
        return _with_node(out, self.node)


BLOCKS_PER_ACTOR = 16


def _blocks(table: pa.Table, batch_size: int, concurrency: int) -> list[pa.Table]:
    """Contiguous slices of whole batches, about BLOCKS_PER_ACTOR per actor: enough for load
    balancing and streaming progress, few enough that per-task overhead stays negligible."""
    n = table.num_rows
    rows = max(batch_size, math.ceil(n / (BLOCKS_PER_ACTOR * max(concurrency, 1)) / batch_size) * batch_size)
    return [table.slice(i, rows) for i in range(0, n, rows)]


def _by_length(table: pa.Table, lengths: list[int], first: np.ndarray | None = None) -> pa.Table:
    """Rows sorted longest text first (optionally ``first``-flagged rows before the others):
    batches of similar length pad less, as sentence-transformers' own encode() sorts."""
    neg = -np.asarray(lengths)
    order = np.argsort(neg, kind="stable") if first is None else np.lexsort((neg, ~first))  # last key = primary
    return table.take(pa.array(order))


def _collect(ds, ids: pa.Array, what: str, nodes: list[str] | None = None) -> pa.Table:
    """Materialise ``ds`` into one table sorted by item_id; it must hold exactly ``ids``. The actors' node
    ids (:data:`NODE_COLUMN`) are dropped and, when ``nodes`` is given, appended to it (distinct, sorted)."""
    import ray

    parts = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    out = pa.concat_tables(parts) if parts else None
    if out is not None and NODE_COLUMN in out.column_names:
        if nodes is not None:
            nodes.extend(sorted(set(out.column(NODE_COLUMN).to_pylist()) - set(nodes)))
        out = out.drop_columns([NODE_COLUMN])
    if out is None or out.num_rows != len(ids):
        raise RuntimeError(f"{what}: {0 if out is None else out.num_rows} rows came back for {len(ids)} items")
    out = out.sort_by("item_id")
    if not out.column("item_id").combine_chunks().equals(pa.array(np.sort(ids.to_numpy()), type=pa.int64())):
        raise RuntimeError(f"{what}: the item ids that came back differ from the input ids")
    return out.combine_chunks()


def embed_blocks(items: pa.Table, cfg: CorpusConfig) -> list[pa.Table]:
    """The (item_id, text) input blocks of the embedding pass: longest text first, whole batches."""
    texts = table_texts(items, cfg.embed_max_chars)
    table = _by_length(pa.table({"item_id": items.column("item_id"), "text": pa.array(texts, pa.string())}),
                       [len(t) for t in texts])
    return _blocks(table, cfg.embed_batch_size, cfg.embed_resources.count)


def embed_dataset(items: pa.Table, cfg: CorpusConfig):
    """The lazy Ray Dataset of (item_id, embedding) for an items table."""
    import ray
    from ray.data import ActorPoolStrategy

    res = cfg.embed_resources
    cpus = actor_cpus(res)
    ds = ray.data.from_arrow(embed_blocks(items, cfg))
    return ds.map_batches(
        EmbedActor, batch_size=cfg.embed_batch_size, batch_format="pyarrow",
        fn_constructor_kwargs={"model": cfg.embed_model, "batch_size": cfg.embed_batch_size,
                               "normalize": cfg.normalize, "num_threads": int(cpus), "num_gpus": res.gpus},
        compute=ActorPoolStrategy(size=res.count), num_cpus=cpus, num_gpus=res.gpus,
        udf_modifying_row_count=False)


def embed_items(items, cfg: CorpusConfig, nodes: list[str] | None = None) -> pa.Table:
    """(item_id, embedding fixed_size_list<float32>[D]) for every item, sorted by item_id; the Ray node
    ids of the embedding actors are appended to ``nodes`` when given."""
    items = _as_table(items)
    return _collect(embed_dataset(items, cfg), items.column("item_id").combine_chunks(), "embedding", nodes)


def keyword_items(items, cfg: CorpusConfig, nodes: list[str] | None = None) -> pa.Table:
    """(item_id, keywords, source) for every item, sorted by item_id, plus the :data:`QUERY_FIELDS`
    columns when ``cfg.n_queries > 0``.

    With ``cfg.keyword_max_items > 0`` only the first N items by item_id are sent to the
    teacher; the rest get fallback keywords (source 'fallback'); likewise ``cfg.query_max_items``
    for the queries. The teacher actors' Ray node ids are appended to ``nodes`` when given.
    """
    items = _as_table(items)
    return _collect(keyword_dataset(items, cfg), items.column("item_id").combine_chunks(), "keywords", nodes)


def keyword_dataset(items, cfg: CorpusConfig):
    """The lazy Ray Dataset of the teacher actors' output (see :func:`keyword_items`) for an items table."""
    import ray
    from ray.data import ActorPoolStrategy

    items = _as_table(items).sort_by("item_id")
    n = items.num_rows
    teach = np.ones(n, dtype=bool)
    if cfg.keyword_max_items > 0:
        teach[cfg.keyword_max_items:] = False
    cols = [c for c in ("item_id", *_ITEM_FIELDS) if c in items.column_names]
    ask = np.ones(n, dtype=bool)
    if cfg.query_max_items > 0:
        ask[cfg.query_max_items:] = False
    table = items.select(cols).append_column("use_teacher", pa.array(teach)).append_column("ask_queries",
                                                                                           pa.array(ask))
    table = _by_length(table, [len(t) for t in table_texts(items, cfg.keyword_max_chars)], first=teach | ask)
    res = cfg.keyword_resources
    cpus = actor_cpus(res)
    ds = ray.data.from_arrow(_blocks(table, cfg.keyword_batch_size, res.count))
    ds = ds.map_batches(
        KeywordActor, batch_size=cfg.keyword_batch_size, batch_format="pyarrow",
        fn_constructor_kwargs={"cfg": cfg, "num_threads": int(cpus)},
        compute=ActorPoolStrategy(size=res.count), num_cpus=cpus, num_gpus=res.gpus,
        udf_modifying_row_count=False, **fault_options())
    return ds


def _as_table(items) -> pa.Table:
    """An items table from a pyarrow.Table or a ray.data.Dataset (materialised; items are small)."""
    import ray

    if isinstance(items, ray.data.Dataset):
        items = pa.concat_tables(ray.get(items.to_arrow_refs()))
    if isinstance(items, pa.Table):
        if items.num_rows == 0:
            raise ValueError("no items to process")
        return items
    raise TypeError(f"expected a pyarrow.Table or ray.data.Dataset of items, got {type(items).__name__}")
