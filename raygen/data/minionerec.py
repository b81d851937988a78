"""Loader for the MiniOneRec release of Amazon-18 Industrial_and_Scientific (items.json, valid.csv, test.csv).

The release has no training file. Following the data README, training samples are rebuilt
without leaking evaluation targets: for each user, the history of that user's earliest row in
valid.csv (else test.csv) happened before every evaluation target of that user, so each of its
prefixes ``history[:i] -> history[i]`` (i >= 1) is a training sample. Rows are in time order
within each file, and all valid rows precede all test rows, so "earliest" is the first row
(of that user) that survived checking, in file order.
"""
from __future__ import annotations

import csv
import io
import json
import re
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from raygen.data.common import (clean_categories, clean_description, clean_text, input_file, make_report,
                                parse_int64, parse_int_list, prefix_samples, read_text, sample)
from raygen.data.config import DataConfig
from raygen.data.schema import DataError, SkipLog, items_table, samples_table

CSV_COLUMNS = ("user_id", "history_item_id", "item_id")
CSV_FIELD_LIMIT = 2 ** 31 - 1
"""Largest CSV field read (the csv module's default, 128 KiB, raises on a long title)."""


def _key_lines(text: str, key: str) -> list[int]:
    """Line numbers of the places ``"key":`` occurs in a JSON text (raw or ASCII-escaped form)."""
    forms = {json.dumps(key), json.dumps(key, ensure_ascii=False)}
    hits = sorted(m.start() for f in forms for m in re.finditer(re.escape(f) + r"\s*:", text))
    return [text.count("\n", 0, h) + 1 for h in hits]


def _no_duplicate_keys(file: str, text: str):
    """json object_pairs_hook that refuses duplicate keys (json.loads would silently keep the last).

    For a duplicate item id the error names the line of its second occurrence (found by a
    text search, since the json module does not report positions to hooks).
    """

    def hook(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                line = None
                if k.isdigit():  # an item id: its key text is unique enough to locate
                    lines = _key_lines(text, k)
                    line = lines[1] if len(lines) > 1 else None
                raise DataError(file, line, k, f"duplicate key {k!r}")
            out[k] = v
        return out

    return hook


def read_items(path: Path, max_description_chars: int, skips: SkipLog) -> tuple[list[dict], set[int]]:
    """Parse items.json into item rows; returns ``(rows, ids_skipped_for_missing_title)``."""
    text = read_text(path, skips)
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicate_keys(path.name, text))
    except json.JSONDecodeError as e:
        raise DataError(path.name, e.lineno, None, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}")
    except DataError:  # from the duplicate-key hook
        raise
    except (ValueError, RecursionError) as e:  # a number of > 4300 digits, nesting deeper than Python's stack
        raise DataError(path.name, None, None, f"unreadable JSON: {type(e).__name__}: {e}") from None
    if not isinstance(raw, dict):
        raise DataError(path.name, None, None, "expected a JSON object mapping item id -> item")
    rows, no_title = [], set()
    for key, rec in raw.items():
        item_id = parse_int64(key)
        if item_id is None:
            line = (_key_lines(text, key) or [None])[0]
            what = ("outside the int64 range" if re.fullmatch(r"\s*-?[0-9]+\s*", key)
                    else "not an integer (ASCII digits, optionally a leading '-')")
            raise DataError(path.name, line, key, f"item id {key!r} is {what}")
        where = f"{path.name} item {key}"
        if not isinstance(rec, dict):
            raise DataError(path.name, None, key, f"item {key} is not a JSON object")
        title = rec.get("title")
        if not isinstance(title, str) or not title.strip():
            skips.add("item_missing_title", where)
            no_title.add(item_id)
            continue
        rows.append({
            "item_id": item_id,
            "title": title.strip(),
            "description": clean_description(rec.get("description"), max_description_chars, skips, where),
            "brand": clean_text(rec.get("brand"), skips, where, "brand"),
            "categories": clean_categories(rec.get("categories"), skips, where),
        })
    rows.sort(key=lambda r: r["item_id"])
    return rows, no_title


def _texts(value) -> list[str]:
    """The strings of a DictReader value (a field, or the list of a row's extra fields)."""
    return [value] if isinstance(value, str) else [v for v in value or [] if isinstance(v, str)]


@contextmanager
def _csv_field_limit(limit: int):
    """Raise the csv module's (process-wide) field size limit while reading, then restore it."""
    old = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def read_rows(path: Path, known: set[int], no_title: set[int], skips: SkipLog) -> list[tuple[str, list[int], int]]:
    """Checked ``(user_id, history, target)`` rows of valid.csv/test.csv, in file order.

    A row is skipped (counted, with ``file:line``) when its history literal does not parse,
    its history is empty, its target is not an ASCII integer, or it references an item that is
    not in the catalog (``sample_unknown_item``) or was dropped for a missing title
    (``sample_references_skipped_item``). A record over more than one line (a field holding a line
    break: an unterminated quote folds every following row into one field) is a DataError, so no
    row is lost silently.
    """
    with _csv_field_limit(CSV_FIELD_LIMIT):
        return _read_rows(path, known, no_title, skips)


def _read_rows(path: Path, known: set[int], no_title: set[int], skips: SkipLog) -> list[tuple[str, list[int], int]]:
    lines = list(io.StringIO(read_text(path, skips), newline=""))  # physical lines, split as csv splits them
    reader = csv.DictReader(iter(lines))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(path.name, 1, missing[0], f"missing column(s) {missing}; header is {reader.fieldnames}")
    rows = []
    end = reader.line_num  # last physical line of the previous record
    for rec in reader:
        start, end = end + 1, reader.line_num
        while start < end and not lines[start - 1].strip("\r\n"):
            start += 1  # blank lines before the record (csv skips them)
        if end > start:
            broken = [k for k, v in rec.items() if any("\n" in t or "\r" in t for t in _texts(v))]
            if broken:
                raise DataError(path.name, start, broken[0] if broken[0] is not None else "(extra column)",
                                f"holds a line break (record spans lines {start}-{end}): an unterminated "
                                "quote? every row must be one line")
        where = f"{path.name}:{reader.line_num}"
        user = (rec.get("user_id") or "").strip()
        hist = parse_int_list(rec.get("history_item_id") or "")
        raw_target = (rec.get("item_id") or "").strip()
        target = parse_int64(raw_target)
        if not user:
            skips.add("sample_missing_user", where)
        elif hist is None:
            skips.add("sample_bad_history_literal", where)
        elif not hist:
            skips.add("sample_empty_history", where)
        elif target is None:  # an ASCII integer outside int64 cannot be a catalog id
            skips.add("sample_unknown_item" if re.fullmatch(r"-?[0-9]+", raw_target) else "sample_bad_target", where)
        elif any(i in no_title for i in (*hist, target)):
            skips.add("sample_references_skipped_item", where)
        elif any(i not in known for i in (*hist, target)):
            skips.add("sample_unknown_item", where)
        else:
            rows.append((user, hist, target))
    return rows


def load_minionerec(cfg: DataConfig) -> tuple[pa.Table, pa.Table, dict]:
    """Items and train/valid/test samples from a MiniOneRec-format folder."""
    root = Path(cfg.path)
    for name in ("items.json", "valid.csv", "test.csv"):
        input_file(root / name, "data.path must hold items.json, valid.csv, test.csv")
    skips = SkipLog()
    item_rows, no_title = read_items(root / "items.json", cfg.max_description_chars, skips)
    known = {r["item_id"] for r in item_rows}
    evals = {split: read_rows(root / f"{split}.csv", known, no_title, skips) for split in ("valid", "test")}

    first_history: dict[str, list[int]] = {}
    for split in ("valid", "test"):
        for user, hist, _ in evals[split]:
            first_history.setdefault(user, hist)
    rows = [s for user, hist in first_history.items() for s in prefix_samples(user, hist, cfg.max_history)]
    for split in ("valid", "test"):
        rows += [sample(user, hist, target, split, cfg.max_history) for user, hist, target in evals[split]]

    items, samples = items_table(item_rows), samples_table(rows)
    return items, samples, make_report("minionerec", items, samples, skips, path=str(root))
