"""The one internal data form: an items table and a samples table (Arrow), plus bad-input bookkeeping.

items:   item_id int64, title string, description string, brand string, categories list<string>
samples: user_id string, history list<int64>, target int64, split string (train/valid/test)
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

ITEMS_SCHEMA = pa.schema([
    ("item_id", pa.int64()),
    ("title", pa.string()),
    ("description", pa.string()),
    ("brand", pa.string()),
    ("categories", pa.list_(pa.string())),
])

SAMPLES_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("history", pa.list_(pa.int64())),
    ("target", pa.int64()),
    ("split", pa.string()),
])

SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """Unusable input; the message names file, line and field."""

    def __init__(self, file: str, line: int | None, field: str | None, msg: str):
        where = f"{file}" + (f":{line}" if line is not None else "") + (f" field {field!r}" if field else "")
        super().__init__(f"{where}: {msg}")
        self.file, self.line, self.field = file, line, field


@dataclass
class SkipLog:
    """Counts skipped/repaired records by reason and keeps a few examples, for metrics.json."""

    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    max_examples: int = 5

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.max_examples:
            ex.append(where)

    def to_dict(self) -> dict:
        return {"counts": dict(self.counts), "examples": self.examples, "total": sum(self.counts.values())}


def items_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ITEMS_SCHEMA)


def samples_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA)


def item_text(row: dict, max_chars: int = 512) -> str:
    """The text an item is embedded/prompted with: title, brand, categories, description."""
    parts = [row.get("title") or ""]
    if row.get("brand"):
        parts.append(f"Brand: {row['brand']}")
    if row.get("categories"):
        parts.append("Categories: " + ", ".join(row["categories"]))
    if row.get("description"):
        parts.append(row["description"])
    return ". ".join(p for p in parts if p)[:max_chars]
