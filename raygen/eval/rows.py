"""Next-item evaluation rows: prompts, targets and histories of one split, and the SID catalog."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from raygen.data.schema import SkipLog
from raygen.lm.vocab import sid_matrix
from raygen.tasks.builders import next_item_prompt_ids, sids_by_item


@dataclass
class Catalog:
    item_ids: np.ndarray
    """int64 [n_items]: item id of each row of ``sid_matrix``."""
    sid_matrix: torch.Tensor
    """LongTensor [n_items, L]: SID token ids per item."""

    @classmethod
    def from_codes(cls, codes: pa.Table, tokenizer) -> "Catalog":
        item_ids = np.asarray(codes.column("item_id").to_numpy(), dtype=np.int64)
        matrix = np.asarray(codes.column("codes").to_pylist(), dtype=np.int64)
        return cls(item_ids=item_ids, sid_matrix=sid_matrix(tokenizer, matrix))

    def index_of(self) -> dict[int, int]:
        return {int(i): k for k, i in enumerate(self.item_ids)}


@dataclass
class Rows:
    row_ids: np.ndarray
    """Row numbers in samples.parquet."""
    prompt_ids: list[list[int]]
    targets: np.ndarray
    histories: list[list[int]]


def usable_rows(table: pa.Table, split: str, ok, columns: list[str], max_rows: int, seed: int,
                skips: SkipLog | None, reason: str, what: str) -> pa.Table:
    """The rows of ``split`` (with a ``row_id`` column: their row in ``table``) for which ``ok(row)`` holds,
    the others counted in ``skips`` under ``reason``; at most ``max_rows`` of them (a seeded sample,
    kept in table order)."""
    table = table.append_column("row_id", pa.array(np.arange(len(table)), pa.int64()))
    part = table.filter(pc.equal(table.column("split"), split))
    good = [bool(ok(r)) for r in part.select(columns).to_pylist()]
    if skips is not None:
        for rid, g in zip(part.column("row_id").to_pylist(), good):
            if not g:
                skips.add(reason, f"{what} {rid}")
    part = part.filter(pa.array(good, pa.bool_()))
    if max_rows and len(part) > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(part), max_rows, replace=False))
        part = part.take(pa.array(keep))
    return part


def split_rows(samples: pa.Table, codes: pa.Table, tokenizer, tasks_cfg, split: str, max_rows: int = 0,
               seed: int = 0, skips: SkipLog | None = None) -> Rows:
    """Prompts of ``split`` in the format SFT trains on (``tasks_cfg.seqrec_format``); at most ``max_rows`` (seeded sample)."""
    sids = sids_by_item(codes)
    part = usable_rows(samples, split, lambda r: all(h in sids for h in r["history"]) and r["target"] in sids
                       and len(r["history"]) > 0, ["history", "target"], max_rows, seed, skips,
                       f"eval {split}: row without SID or history", "samples row")
    histories = [list(h) for h in part.column("history").to_pylist()]
    return Rows(row_ids=np.asarray(part.column("row_id").to_numpy(), dtype=np.int64),
                prompt_ids=next_item_prompt_ids(tokenizer, histories, sids, tasks_cfg),
                targets=np.asarray(part.column("target").to_numpy(), dtype=np.int64),
                histories=histories)
