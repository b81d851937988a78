"""Loader for raw Amazon Reviews 2023 files: ``<Category>.jsonl[.gz]`` and ``meta_<Category>.jsonl[.gz]``.

Reviews (one JSON object per line) give ``user_id``, ``parent_asin`` and ``timestamp`` (ms);
metadata lines give ``parent_asin``, ``title``, ``description`` (list of str), ``store`` (the
brand), ``categories`` and ``features``. Pipeline:

1. read reviews; drop interactions whose item has no metadata or no title (counted skips);
2. drop exact duplicate ``(user, item, timestamp)`` interactions (counted);
3. iterative k-core: repeatedly drop users and items with fewer than ``min_interactions``
   interactions until none is left (a filter, reported under ``kcore``);
4. map ``parent_asin`` to contiguous int64 ids in sorted-asin order (deterministic);
5. order each user's interactions by (timestamp, file line) and cut samples with the
   ``loo`` or ``time`` split (see :func:`time_split_samples`); samples are grouped by user,
   users in sorted order.

A malformed line or a missing/mistyped review field is a DataError naming file and line.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from raygen.data.common import (INT64_MAX, INT64_MIN, clean_categories, clean_description, clean_text, input_file,
                                iter_records, loo_samples, make_report, non_finite, sample)
from raygen.data.config import DataConfig
from raygen.data.schema import DataError, SkipLog, items_table, samples_table



def find_file(root: Path, stem: str) -> Path:
    """``root/<stem>.jsonl`` or ``root/<stem>.jsonl.gz`` (plain preferred), else DataError."""
    for suffix in (".jsonl", ".jsonl.gz"):
        if os.path.lexists(root / f"{stem}{suffix}"):  # a broken or looping link too: input_file names it
            return input_file(root / f"{stem}{suffix}")
    if os.path.lexists(root) and not root.is_dir():
        input_file(root)  # a looping or dangling link is named as such
        raise DataError(str(root), None, "data.path", "a file, not a folder")
    raise DataError(str(root / f"{stem}.jsonl[.gz]"), None, None, "file not found")


def _get(rec: dict, name: str, types: tuple, path: Path, lineno: int):
    value = rec.get(name)
    if value is None:
        raise DataError(path.name, lineno, name, "missing field")
    if not isinstance(value, types) or isinstance(value, bool):
        raise DataError(path.name, lineno, name, f"expected {'/'.join(t.__name__ for t in types)}, got {value!r}")
    return value


def read_reviews(path: Path, skips: SkipLog) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """Interactions as integer columns: ``(user_names, asins, {"user", "item", "ts", "line"})``."""
    users: dict[str, int] = {}
    asins: dict[str, int] = {}
    cols: dict[str, list[int]] = {"user": [], "item": [], "ts": [], "line": []}
    for lineno, rec in iter_records(path, skips):
        user = _get(rec, "user_id", (str,), path, lineno)
        asin = _get(rec, "parent_asin", (str,), path, lineno)
        ts = _get(rec, "timestamp", (int, float), path, lineno)
        if non_finite(ts) or not INT64_MIN <= ts <= INT64_MAX:
            raise DataError(path.name, lineno, "timestamp", f"expected milliseconds within the int64 range, got {ts!r}")
        cols["user"].append(users.setdefault(user, len(users)))
        cols["item"].append(asins.setdefault(asin, len(asins)))
        cols["ts"].append(int(ts))
        cols["line"].append(lineno)
    arrays = {k: np.asarray(v, dtype=np.int64) for k, v in cols.items()}
    return list(users), list(asins), arrays


def read_meta(path: Path, wanted: set[str], max_chars: int, skips: SkipLog) -> tuple[dict[str, dict], set[str]]:
    """Item rows (without id) for the asins in ``wanted`` with a usable title, and the asins without one.

    Items without a title are counted (``item_missing_title``); a repeated asin keeps its
    first record (``meta_duplicate_asin``). Records of unreviewed items are not read further.
    """
    meta: dict[str, dict] = {}
    seen: set[str] = set()
    no_title: set[str] = set()
    for lineno, rec in iter_records(path, skips):
        asin = _get(rec, "parent_asin", (str,), path, lineno)
        if asin not in wanted:
            continue
        where = f"{path.name}:{lineno}"
        if asin in seen:
            skips.add("meta_duplicate_asin", where)
            continue
        seen.add(asin)
        title = rec.get("title")
        if not isinstance(title, str) or not title.strip():
            skips.add("item_missing_title", where)
            no_title.add(asin)
            continue
        # Many 2023 items have an empty description but informative bullet features.
        desc = clean_description(rec.get("description"), max_chars, skips, where)
        if not desc:
            desc = clean_description(rec.get("features"), max_chars, skips, where, field="features")
        cats = (clean_categories(rec.get("categories"), skips, where)
                or clean_categories(rec.get("main_category"), skips, where, field="main_category"))
        meta[asin] = {
            "title": " ".join(title.split()),
            "description": desc,
            "brand": clean_text(rec.get("store"), skips, where, "store"),
            "categories": cats,
        }
    return meta, no_title


def _skip_rows(cols: dict[str, np.ndarray], bad: np.ndarray, reason: str, file: str, skips: SkipLog) -> dict:
    """Count the interactions in mask ``bad`` as skipped for ``reason``; return the others."""
    lines = cols["line"][bad]
    for line in lines[: skips.max_examples]:
        skips.add(reason, f"{file}:{line}")
    skips.counts[reason] += max(0, len(lines) - skips.max_examples)  # the rest, counted in bulk
    return _take(cols, ~bad)


def _take(cols: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in cols.items()}


def kcore(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the interactions in the k-core: every kept user and item has >= k of them."""
    keep = np.ones(len(user), dtype=bool)
    while True:
        u_cnt = np.bincount(user[keep], minlength=user.max(initial=-1) + 1)
        i_cnt = np.bincount(item[keep], minlength=item.max(initial=-1) + 1)
        new = keep & (u_cnt[user] >= k) & (i_cnt[item] >= k)
        if new.sum() == keep.sum():
            return new
        keep = new


def time_split_samples(user_names: list[str], user: np.ndarray, item: np.ndarray, ts: np.ndarray,
                       line: np.ndarray, max_history: int) -> list[dict]:
    """Global-time 8:1:1 split.

    All interactions are ranked by (timestamp, line); ranks below ``n*8//10`` are train
    targets, below ``n*9//10`` valid, the rest test (integer cuts, no float rounding). Every interaction except a user's first becomes a sample
    whose history is all earlier interactions of that user and whose split is its target's.
    """
    split = time_split_labels(ts, line)
    names = ("train", "valid", "test")
    rows = []
    for u, idx in _per_user(user, ts, line):
        seq = item[idx].tolist()
        rows += [sample(user_names[u], seq[:i], seq[i], names[split[idx[i]]], max_history) for i in range(1, len(seq))]
    return rows


def time_split_labels(ts: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Each interaction's split under the global-time 8:1:1 protocol (0 train, 1 valid, 2 test): ranked by
    (timestamp, line), ranks below ``n*8//10`` train, below ``n*9//10`` valid, the rest test."""
    n = len(ts)
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((line, ts))] = np.arange(n)
    return np.where(rank < n * 8 // 10, 0, np.where(rank < n * 9 // 10, 1, 2)).astype(np.int8)


def _per_user(user: np.ndarray, ts: np.ndarray, line: np.ndarray):
    """Yield ``(user, interaction indices in chronological order)`` for each user, by user index."""
    order = np.lexsort((line, ts, user))
    bounds = np.flatnonzero(np.diff(user[order])) + 1
    for idx in np.split(order, bounds):
        if len(idx):
            yield int(user[idx[0]]), idx


def _kcore_filter(cols: dict[str, np.ndarray], k: int) -> tuple[dict[str, np.ndarray], dict]:
    """Apply :func:`kcore`; return the kept interactions and before/after counts for the report."""
    keep = kcore(cols["user"], cols["item"], k)
    kept = _take(cols, keep)
    report = {"k": k}
    for name, key in (("interactions", None), ("users", "user"), ("items", "item")):
        before, after = (len(c["user"]) if key is None else len(np.unique(c[key])) for c in (cols, kept))
        report[f"{name}_before"], report[f"{name}_after"] = before, after
    return kept, report


def load_amazon2023(cfg: DataConfig) -> tuple[pa.Table, pa.Table, dict]:
    """Items and samples from Amazon Reviews 2023 files of ``cfg.category`` under ``cfg.path``."""
    if not cfg.category:
        raise DataError("config", None, "data.category", "amazon2023 needs a category (e.g. Industrial_and_Scientific)")
    root = Path(cfg.path)
    reviews_path, meta_path = find_file(root, cfg.category), find_file(root, f"meta_{cfg.category}")
    file = reviews_path.name
    skips = SkipLog()
    user_names, asins, cols = read_reviews(reviews_path, skips)
    # Renumber users in sorted-name order, so samples come out grouped by user name.
    rank = np.empty(len(user_names), dtype=np.int64)
    rank[np.argsort(np.array(user_names, dtype=object), kind="stable")] = np.arange(len(user_names))
    user_names, cols["user"] = sorted(user_names), rank[cols["user"]]
    n_read = len(cols["user"])
    meta, no_title = read_meta(meta_path, set(asins), cfg.max_description_chars, skips)

    item_status = np.array([0 if a in meta else 1 if a in no_title else 2 for a in asins], dtype=np.int64)
    cols = _skip_rows(cols, item_status[cols["item"]] == 1, "interaction_item_missing_title", file, skips)
    cols = _skip_rows(cols, item_status[cols["item"]] == 2, "interaction_item_without_meta", file, skips)
    _, first = np.unique(np.stack([cols["user"], cols["item"], cols["ts"]], axis=1), axis=0, return_index=True)
    dup = np.ones(len(cols["user"]), dtype=bool)
    dup[first] = False
    cols = _skip_rows(cols, dup, "interaction_exact_duplicate", file, skips)
    cols, kcore_report = _kcore_filter(cols, cfg.min_interactions)
    if not len(cols["user"]):
        raise DataError(file, None, None, f"no interactions left after the {cfg.min_interactions}-core filter")

    kept_asins = sorted({asins[i] for i in np.unique(cols["item"])})
    new_id = {a: i for i, a in enumerate(kept_asins)}
    item = np.array([new_id.get(a, -1) for a in asins], dtype=np.int64)[cols["item"]]
    user, ts, line = cols["user"], cols["ts"], cols["line"]
    if cfg.split == "loo":
        rows = [s for u, idx in _per_user(user, ts, line) for s in loo_samples(user_names[u], item[idx].tolist(), cfg.max_history)]
    else:
        rows = time_split_samples(user_names, user, item, ts, line, cfg.max_history)

    items = items_table([{"item_id": i, **meta[a]} for i, a in enumerate(kept_asins)])
    samples = samples_table(rows)
    report = make_report("amazon2023", items, samples, skips, path=str(root), category=cfg.category,
                         split=cfg.split, interactions_read=n_read, kcore=kcore_report)
    # A user whose only interaction is their first gives no sample (possible when k < 2).
    report["users_without_samples"] = kcore_report["users_after"] - report["users"]
    return items, samples, report
