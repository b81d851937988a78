"""Batch layouts for encoded examples ``{"input_ids": [...], "labels": [...]}`` (labels -100 on prompt).

- :func:`pad_collate`: right-pad to the micro-batch's longest example (labels -100, attention 0 on pads).
- :func:`pack_collate`: first-fit-decreasing packing of the micro-batch's examples into as few rows
  of at most ``max_len`` tokens as possible. ``position_ids`` restart at 0 for every example (and for
  the tail padding), and no ``attention_mask`` is returned: transformers (>= 4.53) then derives a
  block-diagonal causal mask from the position resets, so packed examples never attend to each other.

Both return ``num_tokens`` (real, non-pad tokens), the unit of every tokens/s figure, and accept a
list of example dicts or a dict of columns (what Ray Data's ``iter_torch_batches`` passes to a
``collate_fn``: numpy object arrays of per-row arrays).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

IGNORE_INDEX = -100


def _examples(batch: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    if isinstance(batch, Mapping):
        ids_col, lab_col = batch["input_ids"], batch["labels"]
        rows = list(zip(ids_col, lab_col))
    else:
        rows = [(ex["input_ids"], ex["labels"]) for ex in batch]
    out = []
    for i, (ids, labels) in enumerate(rows):
        ids = np.asarray(ids, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        if ids.ndim != 1 or ids.shape != labels.shape or len(ids) == 0:
            raise ValueError(f"example {i} of the batch: input_ids and labels must be equal-length non-empty "
                             f"1-D lists, got shapes {ids.shape} and {labels.shape}")
        out.append((ids, labels))
    return out


def _check_len(examples: list[tuple[np.ndarray, np.ndarray]], max_len: int) -> None:
    for i, (ids, _) in enumerate(examples):
        if len(ids) > max_len:
            raise ValueError(f"example {i} of the batch has {len(ids)} tokens > max_len={max_len}; encode examples "
                             "with the same max_len (raygen.tasks.encode_example truncates the prompt)")


def pad_collate(batch, pad_id: int, max_len: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids, labels, attention_mask [B, L]; num_tokens []."""
    ex = _examples(batch)
    _check_len(ex, max_len)
    width = max(len(ids) for ids, _ in ex)
    input_ids = np.full((len(ex), width), pad_id, dtype=np.int64)
    labels = np.full((len(ex), width), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((len(ex), width), dtype=np.int64)
    for r, (ids, lab) in enumerate(ex):
        input_ids[r, :len(ids)] = ids
        labels[r, :len(ids)] = lab
        mask[r, :len(ids)] = 1
    return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels),
            "attention_mask": torch.from_numpy(mask), "num_tokens": torch.tensor(int(mask.sum()))}


def pack_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing bin packing: lists of example indices whose lengths sum to <= capacity."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"example of {n} tokens does not fit a packed row of {capacity}")
        for b, free in enumerate(room):
            if n <= free:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(capacity - n)
    return bins


def pack_collate(batch, pad_id: int, max_len: int) -> dict[str, torch.Tensor]:
    """Pack into rows of <= max_len tokens: input_ids, labels, position_ids [R, L]; num_tokens []."""
    ex = _examples(batch)
    _check_len(ex, max_len)
    bins = pack_bins([len(ids) for ids, _ in ex], max_len)
    width = max(sum(len(ex[i][0]) for i in b) for b in bins)
    input_ids = np.full((len(bins), width), pad_id, dtype=np.int64)
    labels = np.full((len(bins), width), IGNORE_INDEX, dtype=np.int64)
    positions = np.zeros((len(bins), width), dtype=np.int64)
    total = 0
    for r, b in enumerate(bins):
        col = 0
        for i in b:
            ids, lab = ex[i]
            n = len(ids)
            input_ids[r, col:col + n] = ids
            labels[r, col:col + n] = lab
            positions[r, col:col + n] = np.arange(n)
            col += n
        total += col
        positions[r, col:] = np.arange(width - col)  # tail padding is its own (ignored) segment
    return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels),
            "position_ids": torch.from_numpy(positions), "num_tokens": torch.tensor(total)}


def make_collate(pad_to: str, pad_id: int, max_len: int) -> Callable[[Any], dict[str, torch.Tensor]]:
    """The collate function for ``TrainConfig.pad_to`` ('longest' or 'packing')."""
    if pad_to == "longest":
        fn = pad_collate
    elif pad_to == "packing":
        fn = pack_collate
    else:
        raise ValueError(f"pad_to must be 'longest' or 'packing', got {pad_to!r}")
    return functools.partial(fn, pad_id=pad_id, max_len=max_len)
