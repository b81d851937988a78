"""``data.source: table``: a team's own interactions table (and optional item table) into items + samples.

Steps (every drop counted in the report's skip log or filter counts):

1. scan the interactions batch by batch (:mod:`raygen.data.table_read`); rows with a null user, item or
   timestamp, or an unparsable timestamp, are counted skips with ``file:row`` examples;
2. map user and item ids (strings or integers) to dense int64 indices in sorted id order (Arrow
   ``unique`` + ``sort`` + ``index_in``), so the mapping is deterministic;
3. order each user's interactions by (timestamp, read position); ``data.table.repeats: collapse`` drops an
   interaction whose item is the user's previous item (``consecutive_repeat``);
4. iterative k-core on users and items (``data.min_interactions``; the ``kcore`` report);
5. re-index the kept items and users densely (sorted external id order) and write the maps;
6. cut samples with ``data.split``: ``loo`` (:func:`raygen.data.common.loo_samples`' rule) or ``time``
   (:func:`raygen.data.amazon2023.time_split_labels`, the MiniOneRec release's global-time 8:1:1);
   samples are written to Parquet in chunks of whole users (``data.table.batch_rows`` interactions).

Per interaction the driver holds a few int64 numpy columns (ids, time, position); samples are built with
numpy per chunk rather than as Python dicts, which at 10^7+ rows is what keeps the stage within memory and
minutes (the split rules are the shared ones; tests check the output equals ``loo_samples`` /
``time_split_samples`` on the same data).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raygen.data.amazon2023 import kcore, time_split_labels
from raygen.data.common import clean_categories, clean_description, clean_text
from raygen.data.config import DataConfig
from raygen.data.idmap import ITEM_MAP, USER_MAP, write_id_map
from raygen.data.schema import ITEMS_SCHEMA, SAMPLES_SCHEMA, SPLITS, DataError, SkipLog
from raygen.data.table_read import Interactions, check_columns, id_array, open_table, scan_interactions
from raygen.io import atomic_path


def encode_ids(chunks: list[pa.Array]) -> tuple[np.ndarray, pa.Array]:
    """``(codes, values)``: each id's index in ``values``, the sorted distinct ids (int64 if every chunk is
    integer, else string)."""
    if any(not pa.types.is_integer(c.type) for c in chunks):
        chunks = [c.cast(pa.string()) for c in chunks]
    col = pa.chunked_array(chunks, type=chunks[0].type if chunks else pa.string())
    values = pc.unique(col)
    values = values.take(pc.sort_indices(values))
    codes = pc.index_in(col, value_set=values)
    return codes.to_numpy().astype(np.int64), values


def collapse_repeats(user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Mask of the interactions to keep: not the same item as the same user's previous one (rows in user,
    time order)."""
    keep = np.ones(len(user), dtype=bool)
    keep[1:] = (user[1:] != user[:-1]) | (item[1:] != item[:-1])
    return keep


def _redensify(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(new codes, kept old codes)``: codes renumbered 0..m-1 in their sorted order (linear: codes are dense)."""
    present = np.bincount(codes) > 0
    new_of_old = np.cumsum(present) - 1
    return new_of_old[codes].astype(np.int64), np.flatnonzero(present)


def _distinct(codes: np.ndarray) -> int:
    return int(np.count_nonzero(np.bincount(codes))) if len(codes) else 0


def split_labels(user: np.ndarray, ts: np.ndarray, pos: np.ndarray, split: str) -> np.ndarray:
    """Each interaction's split as its target (0 train, 1 valid, 2 test); rows grouped by user in time order.
    loo: a user's last interaction is test, the one before valid, the rest train (``loo_samples``); time: the
    global 8:1:1 rank cut (``time_split_labels``)."""
    if split == "time":
        return time_split_labels(ts, pos)
    n = len(user)
    last = np.ones(n, dtype=bool)
    last[:-1] = user[1:] != user[:-1]
    second = np.zeros(n, dtype=bool)
    second[:-1] = last[1:] & (user[:-1] == user[1:])
    return np.where(last, 2, np.where(second, 1, 0)).astype(np.int8)


def window_samples(user: np.ndarray, item: np.ndarray, label: np.ndarray, user_ids: pa.Array,
                   max_history: int) -> pa.Table:
    """Samples of whole users' rows (grouped by user, time order): every interaction but a user's first is a
    target, its history the user's previous ``max_history`` items (all when ``max_history`` <= 0)."""
    n = len(user)
    first = np.ones(n, dtype=bool)
    first[1:] = user[1:] != user[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    rank = np.arange(n) - start
    tgt = np.flatnonzero(rank >= 1)
    length = rank[tgt] if max_history <= 0 else np.minimum(rank[tgt], max_history)
    offsets = np.zeros(len(tgt) + 1, dtype=np.int32 if length.sum() < 2 ** 31 else np.int64)
    np.cumsum(length, out=offsets[1:])
    within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1].astype(np.int64), length)
    values = item[np.repeat(tgt - length, length) + within]
    list_type = pa.list_(pa.int64()) if offsets.dtype == np.int32 else pa.large_list(pa.int64())
    history = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int64()), type=list_type)
    return pa.table([user_ids.take(pa.array(user[tgt])).cast(pa.string()), history.cast(pa.list_(pa.int64())),
                     pa.array(item[tgt], pa.int64()), pa.array(np.array(SPLITS, dtype=object)[label[tgt]], pa.string())],
                    schema=SAMPLES_SCHEMA)


def _text(row: dict, col: str, skips: SkipLog, where: str, max_chars: int) -> str:
    return clean_description(row.get(col), max_chars, skips, where, field=col) if col else ""


def item_rows(cfg: DataConfig, catalog: pa.Array, skips: SkipLog) -> tuple[pa.Table, dict]:
    """The items table of the catalog (external ids, index order): text from the item table when given,
    else (or where missing) the fallback title ``item <id>`` (counted)."""
    t = cfg.table
    n = len(catalog)
    rows: list[dict | None] = [None] * n
    info = {"item_table_rows": 0, "item_table_unused": 0}
    if t.items:
        paths, dataset = open_table(t.items, t.format)
        cols = [t.item_id_column, t.title_column, *t.text_columns, *(c for c in (t.brand_column, t.category_column) if c)]
        cols = list(dict.fromkeys(cols))
        check_columns(dataset, paths, {"item_id_column": t.item_id_column, "title_column": t.title_column,
                                       **{f"text_columns[{i}]": c for i, c in enumerate(t.text_columns)},
                                       **({"brand_column": t.brand_column} if t.brand_column else {}),
                                       **({"category_column": t.category_column} if t.category_column else {})})
        try:
            table = dataset.to_table(columns=cols)
        except (OSError, pa.ArrowException) as e:
            raise DataError(t.items, None, None, f"unreadable: {str(e).splitlines()[0]}") from None
        info["item_table_rows"] = table.num_rows
        ids = id_array(table.column(t.item_id_column).combine_chunks())
        keys = catalog
        if ids.type != catalog.type:  # e.g. integer ids in the interactions, text in a CSV item table
            ids, keys = ids.cast(pa.string()), catalog.cast(pa.string())
        found = pc.index_in(keys, value_set=ids)  # the first row of each id
        distinct = len(pc.unique(ids.drop_null()))
        if len(ids) - ids.null_count > distinct:  # the first row of an id is used
            skips.counts["item_table_duplicate_id"] += len(ids) - ids.null_count - distinct
        wanted = np.flatnonzero(found.is_valid().to_numpy(zero_copy_only=False))
        info["item_table_unused"] = distinct - len(wanted)
        sub = table.take(found.drop_null()).to_pylist()
        for k, rec in zip(wanted, sub):
            rec["_where"] = f"{_label(t.items)} item {catalog[int(k)].as_py()}"
            rows[k] = rec
    out = []
    for k in range(n):
        ext = catalog[k].as_py()
        rec = rows[k]
        if rec is None:
            skips.add("item_missing_from_item_table" if t.items else "item_without_text", f"item {ext}")
            out.append({"item_id": k, "title": f"item {ext}", "description": "", "brand": "", "categories": []})
            continue
        where, mc = rec["_where"], cfg.max_description_chars
        title = " ".join(str(rec.get(t.title_column) or "").split())
        if not title:
            skips.add("item_empty_title", where)
            title = f"item {ext}"
        desc = " ".join(p for p in (_text(rec, c, skips, where, mc) for c in t.text_columns) if p)
        if len(desc) > mc:
            skips.add("description_truncated", where)
            desc = desc[:mc].rstrip()
        out.append({"item_id": k, "title": title, "description": desc,
                    "brand": clean_text(rec.get(t.brand_column), skips, where, t.brand_column) if t.brand_column else "",
                    "categories": clean_categories(rec.get(t.category_column), skips, where, t.category_column)
                    if t.category_column else []})
    return pa.Table.from_pylist(out, schema=ITEMS_SCHEMA), info


def _label(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1] or location


def build_table(cfg: DataConfig, out: str | Path) -> dict:
    """Run the table source into folder ``out``: ``items.parquet``, ``samples.parquet`` (streamed),
    ``item_ids.parquet`` and ``user_ids.parquet``; return the data report."""
    from raygen.data.load import validate_tables

    t, out, skips = cfg.table, Path(out), SkipLog()
    scan = scan_interactions(t.interactions, t.format, {"user": t.user_column, "item": t.item_column,
                                                        "timestamp": t.timestamp_column}, skips, t.batch_rows)
    user, user_vals = encode_ids(scan.users)
    item, item_vals = encode_ids(scan.items)
    scan.users = scan.items = []  # the Arrow id columns are not needed past here
    ts = np.concatenate(scan.ts) if scan.ts else np.zeros(0, np.int64)
    pos = np.concatenate(scan.pos) if scan.pos else np.zeros(0, np.int64)
    n_read = len(user)
    order = np.lexsort((pos, ts, user))
    user, item, ts, pos = user[order], item[order], ts[order], pos[order]
    del order
    if t.repeats == "collapse":
        keep = collapse_repeats(user, item)
        scan.skip(skips, "consecutive_repeat", pos[~keep])
        user, item, ts, pos = user[keep], item[keep], ts[keep], pos[keep]
    report_kcore = {"k": cfg.min_interactions, "interactions_before": len(user),
                    "users_before": _distinct(user), "items_before": _distinct(item)}
    keep = kcore(user, item, cfg.min_interactions)
    user, item, ts, pos = user[keep], item[keep], ts[keep], pos[keep]
    if not len(user):
        raise DataError(_label(t.interactions), None, None,
                        f"no interactions left after the {cfg.min_interactions}-core filter ({n_read} read)")
    user, kept_users = _redensify(user)
    item, kept_items = _redensify(item)
    user_vals, item_vals = user_vals.take(pa.array(kept_users)), item_vals.take(pa.array(kept_items))
    report_kcore.update(interactions_after=len(user), users_after=len(user_vals), items_after=len(item_vals))

    items, item_info = item_rows(cfg, item_vals, skips)
    out.mkdir(parents=True, exist_ok=True)
    write_id_map(out / ITEM_MAP, "item_id", item_vals)
    write_id_map(out / USER_MAP, "user_index", user_vals)
    with atomic_path(out / "items.parquet") as tmp:
        pq.write_table(items, tmp)

    label = split_labels(user, ts, pos, cfg.split)
    del ts, pos
    counts = dict.fromkeys(SPLITS, 0)
    users_with_samples = 0
    bounds = np.flatnonzero(np.r_[True, user[1:] != user[:-1], True])  # start of each user, then n
    with atomic_path(out / "samples.parquet") as tmp, pq.ParquetWriter(tmp, SAMPLES_SCHEMA) as writer:
        lo = 0
        while lo < len(user):
            hi = int(bounds[min(np.searchsorted(bounds, lo + t.batch_rows), len(bounds) - 1)])
            hi = hi if hi > lo else int(bounds[np.searchsorted(bounds, lo, side="right")])
            chunk = window_samples(user[lo:hi], item[lo:hi], label[lo:hi], user_vals, cfg.max_history)
            if chunk.num_rows:
                validate_tables(items, chunk)
                writer.write_table(chunk)
                for d in pc.value_counts(chunk["split"]).to_pylist():
                    counts[d["values"]] += d["counts"]
                users_with_samples += len(pc.unique(chunk["user_id"]))
            lo = hi
    if not sum(counts.values()):
        raise DataError(_label(t.interactions), None, None, "there are no samples (every user has one interaction)")
    return {"source": "table", "items": items.num_rows, "samples": counts, "users": users_with_samples,
            "skips": skips.to_dict(), "interactions": t.interactions, "split": cfg.split,
            "repeats": t.repeats, "interactions_read": scan.rows_read, "interactions_valid": n_read,
            "kcore": report_kcore, "users_without_samples": report_kcore["users_after"] - users_with_samples,
            "id_types": {"user": "int64" if pa.types.is_integer(user_vals.type) else "string",
                         "item": "int64" if pa.types.is_integer(item_vals.type) else "string"},
            **item_info}


def load_table(cfg: DataConfig) -> tuple[pa.Table, pa.Table, dict]:
    """``(items, samples, report)`` in memory (small tables: tests, notebooks); the data stage calls
    :func:`build_table` instead, which streams the samples to its folder."""
    with tempfile.TemporaryDirectory(prefix="raygen-table-") as tmp:
        report = build_table(cfg, tmp)
        items, samples = pq.read_table(Path(tmp) / "items.parquet"), pq.read_table(Path(tmp) / "samples.parquet")
    return items, samples, report


__all__ = ["build_table", "load_table", "encode_ids", "collapse_repeats", "split_labels", "window_samples",
           "Interactions"]
