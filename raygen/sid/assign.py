"""SIDs for items that arrive after the quantizer was trained, without retraining.

Each new item is encoded with the saved quantizer; if its SID is taken (by an existing item
or a new item assigned before it, in item-id order) it tries the other last-level codes of the
same prefix, nearest first, then (when the catalog already has an extra level) the smallest
free extra-level code. Existing items' codes never change.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from raygen.sid.quantizer import ResidualQuantizer, load_quantizer


class AssignError(ValueError):
    """A new item cannot get a unique SID without changing existing ones."""


def assign_new_items(quantizer: ResidualQuantizer, X_new: np.ndarray, new_ids: np.ndarray,
                     existing_codes: np.ndarray, existing_ids: np.ndarray | None = None
                     ) -> tuple[np.ndarray, dict]:
    """Codes ``[M, L_final]`` for the new items (rows in ``new_ids`` order) and a report.

    ``existing_codes [N, L_final]`` are the catalog's unique SIDs; ``L_final`` is the
    quantizer's levels, plus one if the catalog has an extra disambiguation level.
    """
    new_ids = np.asarray(new_ids, dtype=np.int64)
    existing_codes = np.asarray(existing_codes, dtype=np.int64)
    if existing_codes.ndim != 2:
        raise ValueError(f"existing codes must be [N, L], got shape {existing_codes.shape}")
    if len(np.unique(new_ids)) != len(new_ids):
        raise ValueError("new item ids must be unique")
    if existing_ids is not None:
        clash = np.intersect1d(new_ids, existing_ids)
        if len(clash):
            raise ValueError(f"{len(clash)} new item ids already have SIDs, e.g. {clash[:5].tolist()}")
    levels = quantizer.levels
    extra = existing_codes.shape[1] - levels
    if extra not in (0, 1):
        raise ValueError(f"existing codes have {existing_codes.shape[1]} levels; the quantizer has {levels}")
    codes, dists = quantizer.encode_with_distances(X_new)
    taken = set(map(tuple, existing_codes.tolist()))
    out = np.zeros((len(new_ids), levels + extra), dtype=np.int64)
    moved = extra_used = 0
    for i in np.argsort(new_ids, kind="stable"):
        prefix = tuple(codes[i, :-1].tolist())
        candidates = np.argsort(dists[i], kind="stable").tolist()
        sid = next((prefix + (c,) + (0,) * extra for c in candidates
                    if prefix + (c,) + (0,) * extra not in taken), None)
        if sid is None:
            if not extra:
                raise AssignError(f"item {new_ids[i]}: every last-level code under prefix {list(prefix)} is "
                                  "taken and the catalog has no extra level; re-run the sids stage")
            base = prefix + (candidates[0],)
            e = next(e for e in range(len(taken) + 1) if base + (e,) not in taken)
            sid = base + (e,)
            extra_used += 1
        moved += sid[levels - 1] != codes[i, -1]
        taken.add(sid)
        out[i] = sid
    return out, {"n_new": len(new_ids), "n_moved_last_level": int(moved), "n_extra_level": extra_used}


def assign_from_run(sids_dir: str | Path, X_new: np.ndarray, new_ids: np.ndarray) -> tuple[np.ndarray, dict]:
    """:func:`assign_new_items` against a finished sids stage folder (quantizer + codes.parquet)."""
    from raygen.sid.stage import load_codes

    ids, existing = load_codes(sids_dir)
    return assign_new_items(load_quantizer(sids_dir), X_new, new_ids, existing, ids)
