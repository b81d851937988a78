"""The one SID trie: the catalog's semantic IDs as a level-wise prefix structure, on tensors.

Used by every constrained decoder (:mod:`raygen.generation.beam`, ``constrained_sample`` in
:mod:`raygen.generation.backends`) and by validation; one ``searchsorted`` per level answers "which
codes may follow these prefixes" for a whole batch of prefixes.

The catalog ``sid_matrix`` [n_items, L] is encoded level by level. ``code[t][i]`` is the index of
``sid_matrix[i, t]`` among the sorted distinct tokens of level ``t``; the prefix id of
``sid_matrix[i, :t+1]`` is the rank of the integer key ``prefix[t-1][i] * n_codes[t] + code[t][i]``
among the distinct keys of level ``t``. So a beam with prefix id ``p`` may emit code ``c`` iff the key
``p * n_codes[t] + c`` is in ``keys[t]`` (sorted), and the matching position is the child's prefix id.
Memory is O(n_items * L), whatever the code-book size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SidTrie"]


@dataclass
class SidTrie:
    """Level-wise prefix encoding of a catalog of equal-length token sequences (see module doc)."""

    level_tokens: list[torch.Tensor]
    """Per level, the sorted distinct token ids used at that level (``n_codes[t]`` of them)."""
    keys: list[torch.Tensor]
    """Per level, the sorted distinct keys ``parent_prefix * n_codes[t] + code``; rank = prefix id."""
    leaf_item: torch.Tensor
    """Item row index of each final-level prefix id (a full SID)."""

    @classmethod
    def build(cls, sid_matrix: torch.Tensor) -> "SidTrie":
        sid = torch.as_tensor(sid_matrix, dtype=torch.long)
        if sid.ndim != 2 or sid.shape[0] == 0 or sid.shape[1] == 0:
            raise ValueError(f"sid_matrix must be a non-empty [n_items, L] matrix, got shape {tuple(sid.shape)}")
        n_items, n_levels = sid.shape
        level_tokens, keys = [], []
        parent = torch.zeros(n_items, dtype=torch.long)
        for t in range(n_levels):
            toks = torch.unique(sid[:, t])  # sorted
            code = torch.searchsorted(toks, sid[:, t].contiguous())
            uniq, parent = torch.unique(parent * len(toks) + code, return_inverse=True)
            level_tokens.append(toks)
            keys.append(uniq)
        if len(keys[-1]) != n_items:
            raise ValueError(f"sid_matrix has duplicate rows: {n_items} items but {len(keys[-1])} distinct SIDs; "
                             "constrained decoding needs one item per SID (dedupe or resolve collisions first)")
        leaf_item = torch.empty(n_items, dtype=torch.long)
        leaf_item[parent] = torch.arange(n_items)
        return cls(level_tokens, keys, leaf_item)

    @property
    def n_levels(self) -> int:
        return len(self.keys)

    def to(self, device: torch.device | str) -> "SidTrie":
        return SidTrie([x.to(device) for x in self.level_tokens], [x.to(device) for x in self.keys],
                       self.leaf_item.to(device))

    def children(self, t: int, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Child prefix ids [N, n_codes[t]] of prefixes ``prefix`` [N] at level ``t`` and a validity mask."""
        n_codes = len(self.level_tokens[t])
        cand = prefix[:, None] * n_codes + torch.arange(n_codes, device=prefix.device)[None, :]
        pos = torch.searchsorted(self.keys[t], cand).clamp_(max=len(self.keys[t]) - 1)
        return pos, self.keys[t][pos] == cand
