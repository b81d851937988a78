"""The sids stage: corpus embeddings -> unique semantic IDs, token keywords, saved quantizer.

Reads ``<run>/corpus/{embeddings,keywords}.parquet`` and writes into the stage folder:
``codes.parquet`` (item_id, codes), ``tokens.parquet`` (level, code, token, keywords,
description), ``quantizer.safetensors`` + ``quantizer.json``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raygen.data.schema import DataError, SkipLog
from raygen.io import read_parquet, write_parquet
from raygen.runner import StageContext
from raygen.sid.collisions import CollisionReport, resolve_collisions
from raygen.sid.metrics import perplexity, recon_error, recon_rel, utilization
from raygen.sid.quantizer import ResidualQuantizer, build_quantizer, load_quantizer, save_quantizer
from raygen.sid.token_keywords import token_keyword_rows, tokens_table

log = logging.getLogger("raygen")

__all__ = ["run_sids", "compute_sids", "fit_unique_codes", "load_quantizer", "read_embeddings", "read_keywords", "codes_table", "load_codes",
           "CODES_SCHEMA"]

CODES_SCHEMA = pa.schema([("item_id", pa.int64()), ("codes", pa.list_(pa.int32()))])


def _require(table: pa.Table, path: Path, columns: list[str]) -> None:
    for c in columns:
        if c not in table.column_names:
            raise DataError(str(path), None, c, f"missing column (has {table.column_names})")


def read_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids int64 [N], embeddings float32 [N, D]) from embeddings.parquet, validated."""
    path = Path(path)
    table = read_parquet(path)
    _require(table, path, ["item_id", "embedding"])
    if table.num_rows == 0:
        raise DataError(str(path), None, None, "no items")
    ids_col = table.column("item_id")
    if ids_col.null_count:
        raise DataError(str(path), _first_null(ids_col), "item_id", "null item id")
    ids = ids_col.to_numpy().astype(np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        raise DataError(str(path), int(np.flatnonzero(ids == dup)[1]), "item_id", f"duplicate item id {dup}")
    emb = table.column("embedding").combine_chunks()
    if emb.null_count:
        raise DataError(str(path), _first_null(emb), "embedding", "null embedding")
    lengths = pc.list_value_length(emb).to_numpy()
    if (lengths != lengths[0]).any() or lengths[0] == 0:
        bad = int(np.flatnonzero(lengths != lengths[0])[0]) if (lengths != lengths[0]).any() else 0
        raise DataError(str(path), bad, "embedding", f"embedding length {lengths[bad]} (row 0 has {lengths[0]})")
    X = np.asarray(emb.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(ids), -1)
    finite = np.isfinite(X).all(1)
    if not finite.all():
        raise DataError(str(path), int(np.flatnonzero(~finite)[0]), "embedding", "NaN or inf in embedding")
    return ids, X


def _first_null(arr: pa.Array | pa.ChunkedArray) -> int:
    return int(np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))[0])


def read_keywords(path: str | Path, item_ids: np.ndarray) -> tuple[list[list[str]], SkipLog]:
    """Keyword lists aligned with ``item_ids``. Items without a row get ``[]`` and rows for unknown
    items are ignored; both are counted in the returned SkipLog."""
    path = Path(path)
    table = read_parquet(path)
    _require(table, path, ["item_id", "keywords"])
    skips = SkipLog()
    pos = {int(i): n for n, i in enumerate(item_ids)}
    out: list[list[str]] = [[] for _ in item_ids]
    seen = np.zeros(len(item_ids), dtype=bool)
    for row, (iid, kws) in enumerate(zip(table.column("item_id").to_pylist(), table.column("keywords").to_pylist())):
        n = pos.get(iid)
        if n is None:
            skips.add("keywords_for_unknown_item", f"{path.name} row {row} item_id {iid}")
            continue
        out[n] = [k for k in (kws or []) if k]
        seen[n] = True
    for n in np.flatnonzero(~seen):
        skips.add("item_without_keywords", f"item_id {int(item_ids[n])}")
    return out, skips


def codes_table(item_ids: np.ndarray, codes: np.ndarray) -> pa.Table:
    return pa.Table.from_pydict({"item_id": np.asarray(item_ids, dtype=np.int64),
                                 "codes": [list(map(int, c)) for c in codes]}, schema=CODES_SCHEMA)


def fit_unique_codes(cfg, ids: np.ndarray, X: np.ndarray) -> tuple[ResidualQuantizer, np.ndarray, np.ndarray,
                                                                     CollisionReport, float]:
    """Fit ``cfg``'s quantizer (a ``SidConfig``) on ``X`` and give every item of ``ids`` a unique SID:
    ``(quantizer, raw codes, unique codes, collision report, fit seconds)``. The sids stage's core; also
    used on a part of a catalog (benchmarks/new_items.py: the items known before training)."""
    t0 = time.time()
    q = build_quantizer(cfg).fit(X)
    fit_seconds = time.time() - t0
    raw, last_dists = q.encode_with_distances(X)
    codes, rep = resolve_collisions(raw, last_dists, ids, sinkhorn_enabled=cfg.sinkhorn,
                                    epsilon=cfg.sinkhorn_epsilon, iters=cfg.sinkhorn_iters,
                                    max_rounds=cfg.sinkhorn_rounds, extra_level=cfg.extra_level)
    return q, raw, codes, rep, fit_seconds


def run_sids(ctx: StageContext) -> dict:
    """The sids stage. In a pipeline (Ray is up) or with a CUDA device asked for, the work runs as ONE Ray task
    on a worker holding the device (``sids.device: cuda`` reserves a GPU there; the driver needs none): the
    task gets the corpus stage's location, materializes it on its node, fits in a scratch folder and sends
    the files back to be written here. Otherwise (a direct call without Ray) it runs in this process."""
    cfg = ctx.cfg.sids
    if not _remote_wanted(cfg):
        return compute_sids(cfg, ctx.input("corpus"), ctx.out)
    import ray

    from raygen.ray_utils import init_ray

    init_ray()
    gpus = _task_gpus(cfg.device)
    task = ray.remote(_sids_task).options(num_cpus=max(1, cfg.num_threads), num_gpus=gpus, max_retries=0)
    log.info("sids: fitting on a Ray worker (%s GPU, device %s)", gpus, cfg.device)
    files, metrics, node = ray.get(task.remote(cfg, ctx.input_location("corpus"), (ctx.keys or {}).get("corpus")))
    for name, data in files.items():
        (ctx.out / name).write_bytes(data)
    return {**metrics, "nodes": {"sids": [node]}}


def _remote_wanted(cfg) -> bool:
    """Run as a Ray task when Ray is already up (a pipeline run) or a CUDA device is asked for."""
    import ray

    return ray.is_initialized() or cfg.device.startswith("cuda")


def _task_gpus(device: str) -> float:
    """GPUs the sids task reserves: 1 for 'cuda'/'cuda:N'; for 'auto' 1 when the cluster has a GPU, else 0."""
    import ray

    if device.startswith("cuda"):
        return 1.0
    return 1.0 if device == "auto" and ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def _sids_task(cfg, corpus_location: str, corpus_key: str | None) -> tuple[dict[str, bytes], dict, str]:
    """The Ray task body: ``({file name: bytes}, metrics, node id)`` of :func:`compute_sids` on the corpus at
    ``corpus_location``, materialized on this node."""
    import tempfile

    import ray

    from raygen.storage import materialize

    corpus = materialize(corpus_location, corpus_key)
    with tempfile.TemporaryDirectory(prefix="raygen-sids-") as tmp:
        out = Path(tmp)
        metrics = compute_sids(cfg, corpus, out)
        files = {f.name: f.read_bytes() for f in sorted(out.iterdir()) if f.is_file()}
    return files, metrics, ray.get_runtime_context().get_node_id()


def compute_sids(cfg, corpus: Path, out: Path) -> dict:
    """The sids stage's work: ``corpus``'s embeddings and keywords -> codes, tokens and the quantizer in
    ``out``; returns the metrics."""
    corpus = Path(corpus)
    ids, X = read_embeddings(corpus / "embeddings.parquet")
    order = np.argsort(ids, kind="stable")  # item-id order: results do not depend on file order
    ids, X = ids[order], X[order]
    keywords, skips = read_keywords(corpus / "keywords.parquet", ids)

    q, raw, codes, rep, fit_seconds = fit_unique_codes(cfg, ids, X)
    X_hat = q.decode(codes)
    token_rows = token_keyword_rows(codes, keywords, cfg.n_token_keywords)

    write_parquet(out / "codes.parquet", codes_table(ids, codes))
    write_parquet(out / "tokens.parquet", tokens_table(token_rows))
    save_quantizer(q, out, extra={"levels_final": codes.shape[1], "extra_level_added": rep.extra_level_added})

    base = codes[:, :q.levels]
    return {
        "method": cfg.method,
        "n_items": len(ids),
        "dim": int(X.shape[1]),
        **rep.to_dict(),
        "utilization": utilization(base, cfg.codebook_size),
        "perplexity": perplexity(base),
        "recon_error": recon_error(X, X_hat),
        "recon_error_before": recon_error(X, q.decode(raw)),
        "recon_rel": recon_rel(X, X_hat),
        "levels_final": int(codes.shape[1]),
        "n_tokens": len(token_rows),
        "fit_seconds": round(fit_seconds, 3),
        "fit": q.fit_info,
        "skipped": skips.to_dict(),
    }


def load_codes(sids_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids, codes [N, L_final]) from a finished sids stage folder."""
    table = read_parquet(Path(sids_dir) / "codes.parquet")
    return table.column("item_id").to_numpy(), np.array(table.column("codes").to_pylist(), dtype=np.int64)
