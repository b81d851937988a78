"""Prefix trie of the valid SIDs, over codes or (after ``to_token_ids``) over LM token ids.

    trie = SidTrie(codes, item_ids)            # codes [n_items, L], unique rows
    trie.allowed([12])                         # codes that may follow <a_12>
    tok = trie.to_token_ids({(l, c): id, ...}) # same trie over token ids
    tok.sequences_tensor()                     # LongTensor [n_items, L] for tensorised masks

Saved as JSON (``{"levels", "item_ids", "sequences"}``); the trie is rebuilt on load.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from raygen.io import read_json, write_json

_LEAF = -1
"""Key under which a complete sequence's node stores its row index."""


class SidTrie:
    def __init__(self, sequences: np.ndarray | Sequence[Sequence[int]], item_ids: Sequence[int] | None = None):
        seqs = np.asarray(sequences, dtype=np.int64)
        if seqs.ndim != 2 or seqs.shape[1] == 0:
            raise ValueError(f"sequences must be [n_items, L>0], got shape {seqs.shape}")
        if (seqs < 0).any():
            raise ValueError("sequence symbols must be >= 0")
        if item_ids is None:
            item_ids = np.arange(len(seqs))
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        if self.item_ids.shape != (len(seqs),):
            raise ValueError(f"{len(self.item_ids)} item ids for {len(seqs)} sequences")
        self.sequences = seqs
        self.root: dict = {}
        for row, seq in enumerate(seqs.tolist()):
            node = self.root
            for sym in seq:
                node = node.setdefault(sym, {})
            if _LEAF in node:
                raise ValueError(f"duplicate SID {seq} (items {self.item_ids[node[_LEAF]]} and "
                                 f"{self.item_ids[row]}); SIDs must be unique")
            node[_LEAF] = row

    @property
    def levels(self) -> int:
        return self.sequences.shape[1]

    def __len__(self) -> int:
        return len(self.sequences)

    def _node(self, prefix: Sequence[int]) -> dict | None:
        node = self.root
        for sym in prefix:
            node = node.get(int(sym))
            if node is None:
                return None
        return node

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Sorted symbols that may follow ``prefix``; ``[]`` for an invalid or complete prefix."""
        node = self._node(prefix)
        return sorted(k for k in node if k != _LEAF) if node is not None else []

    def contains(self, seq: Sequence[int]) -> bool:
        """Whether ``seq`` is a complete valid SID."""
        node = self._node(seq)
        return node is not None and _LEAF in node

    def item_of(self, seq: Sequence[int]) -> int | None:
        """Item id of a complete SID, None if ``seq`` is not one."""
        node = self._node(seq)
        return int(self.item_ids[node[_LEAF]]) if node is not None and _LEAF in node else None

    def to_token_ids(self, table: Mapping[tuple[int, int], int]) -> "SidTrie":
        """The same trie with code ``c`` at level ``l`` replaced by ``table[(l, c)]``."""
        out = np.empty_like(self.sequences)
        for lvl in range(self.levels):
            for c in np.unique(self.sequences[:, lvl]):
                key = (lvl, int(c))
                if key not in table:
                    raise KeyError(f"no token id for SID level {lvl} code {int(c)}")
                out[self.sequences[:, lvl] == c, lvl] = table[key]
        return SidTrie(out, self.item_ids)

    def sequences_tensor(self):
        """All valid sequences as a ``torch.LongTensor [n_items, L]`` (rows in item order)."""
        import torch

        return torch.from_numpy(self.sequences.copy())

    def to_json(self) -> dict:
        return {"levels": self.levels, "item_ids": self.item_ids.tolist(), "sequences": self.sequences.tolist()}

    @classmethod
    def from_json(cls, obj: dict) -> "SidTrie":
        return cls(obj["sequences"], obj["item_ids"])

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "SidTrie":
        return cls.from_json(read_json(path))
