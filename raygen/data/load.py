"""Entry point of the data stage's pure core: pick the loader for ``cfg.source`` and check its output."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from raygen.data.config import DataConfig
from raygen.data.schema import ITEMS_SCHEMA, SAMPLES_SCHEMA, SPLITS, DataError


def load_data(cfg: DataConfig) -> tuple[pa.Table, pa.Table, dict]:
    """Load ``(items, samples, report)`` from the configured source and validate them.

    ``report`` is JSON-able: source, item count, samples per split, user count and the
    skip log (counts and examples of every skipped or repaired record, by reason).
    """
    if cfg.source == "synthetic":
        from raygen.data.synthetic import load_synthetic as loader
    elif cfg.source == "minionerec":
        from raygen.data.minionerec import load_minionerec as loader
    elif cfg.source == "amazon2023":
        from raygen.data.amazon2023 import load_amazon2023 as loader
    elif cfg.source == "table":
        from raygen.data.table import load_table as loader
    else:
        raise DataError("config", None, "data.source", f"unknown source {cfg.source!r}")
    items, samples, report = loader(cfg)
    validate_tables(items, samples)
    from raygen.data.common import split_warnings  # an empty valid split, valid == test: loaded, but warned

    report["warnings"] = [*report.get("warnings", []), *split_warnings(samples)]
    return items, samples, report


def _first(mask: pa.ChunkedArray | pa.Array) -> int:
    """Row index of the first true value of a boolean mask."""
    return int(pc.index(mask, True).as_py())


def validate_tables(items: pa.Table, samples: pa.Table) -> None:
    """Raise DataError (naming table, row and field) unless items and samples are consistent.

    Checks: exact schemas; no null or duplicate item ids; non-empty titles; samples have a
    user id, a known split, a non-empty history, and only catalog ids in history and target.
    """
    if items.schema != ITEMS_SCHEMA:
        raise DataError("items", None, None, f"schema {items.schema} != expected {ITEMS_SCHEMA}")
    if samples.schema != SAMPLES_SCHEMA:
        raise DataError("samples", None, None, f"schema {samples.schema} != expected {SAMPLES_SCHEMA}")
    if items.num_rows == 0:
        raise DataError("items", None, None, "the catalog is empty")

    ids = items["item_id"]
    if ids.null_count:
        raise DataError("items", _first(pc.is_null(ids)), "item_id", "null item id")
    if len(pc.unique(ids)) != items.num_rows:
        counts = pc.value_counts(ids)
        dup = counts.field("values").filter(pc.greater(counts.field("counts"), 1))[0].as_py()
        raise DataError("items", _first(pc.equal(ids, dup)), "item_id", f"duplicate item id {dup}")
    empty_title = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(items["title"]), ""), True)
    if pc.any(empty_title).as_py():
        row = _first(empty_title)
        raise DataError("items", row, "title", f"empty title for item {ids[row].as_py()}")

    if samples.num_rows == 0:
        raise DataError("samples", None, None, "there are no samples")
    if samples["user_id"].null_count:
        raise DataError("samples", _first(pc.is_null(samples["user_id"])), "user_id", "null user id")
    bad_split = pc.invert(pc.fill_null(pc.is_in(samples["split"], value_set=pa.array(SPLITS)), False))
    if pc.any(bad_split).as_py():
        row = _first(bad_split)
        raise DataError("samples", row, "split", f"unknown split {samples['split'][row].as_py()!r}")
    empty_hist = pc.fill_null(pc.equal(pc.list_value_length(samples["history"]), 0), True)
    if pc.any(empty_hist).as_py():
        raise DataError("samples", _first(empty_hist), "history", "empty history")

    catalog = pa.array(ids.to_numpy(), pa.int64())
    unknown_target = pc.invert(pc.fill_null(pc.is_in(samples["target"], value_set=catalog), False))
    if pc.any(unknown_target).as_py():
        row = _first(unknown_target)
        raise DataError("samples", row, "target", f"target {samples['target'][row].as_py()} not in the catalog")
    flat = pc.list_flatten(samples["history"])
    unknown_hist = pc.invert(pc.fill_null(pc.is_in(flat, value_set=catalog), False))
    if pc.any(unknown_hist).as_py():
        pos = _first(unknown_hist)
        parents = pc.list_parent_indices(samples["history"])
        row = int(parents[pos].as_py())
        raise DataError("samples", row, "history", f"history item {flat[pos].as_py()} not in the catalog")
