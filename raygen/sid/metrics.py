"""SID quality metrics: collisions, codebook utilization and perplexity, reconstruction error."""
from __future__ import annotations

import numpy as np


def tuple_ids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of each item's code tuple among the distinct tuples, count of each distinct tuple)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [N, L], got shape {codes.shape}")
    if codes.shape[1] == 0:  # every item has the empty tuple
        return np.zeros(len(codes), dtype=np.int64), np.array([len(codes)] if len(codes) else [])
    _, inv, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return inv.reshape(-1), counts


def collision_rate(codes: np.ndarray) -> float:
    """Fraction of items whose full code tuple is shared with at least one other item."""
    if len(codes) == 0:
        return 0.0
    inv, counts = tuple_ids(codes)
    return float((counts[inv] > 1).mean())


def collision_groups(codes: np.ndarray) -> list[np.ndarray]:
    """Row indices of each set of >= 2 items sharing a code tuple (ascending, deterministic)."""
    if len(codes) == 0:
        return []
    inv, counts = tuple_ids(codes)
    order = np.argsort(inv, kind="stable")
    starts = np.searchsorted(inv[order], np.arange(len(counts) + 1))
    return [order[starts[t]:starts[t + 1]] for t in np.flatnonzero(counts > 1)]


def utilization(codes: np.ndarray, codebook_size: int) -> list[float]:
    """Per level: distinct codes used / codebook_size."""
    codes = np.asarray(codes)
    return [len(np.unique(codes[:, lvl])) / codebook_size for lvl in range(codes.shape[1])]


def perplexity(codes: np.ndarray) -> list[float]:
    """Per level: exp of the entropy of the code-usage distribution (= K when perfectly balanced)."""
    codes = np.asarray(codes)
    out = []
    for lvl in range(codes.shape[1]):
        _, counts = np.unique(codes[:, lvl], return_counts=True)
        p = counts / counts.sum()
        out.append(float(np.exp(-(p * np.log(p)).sum())))
    return out


def recon_error(X: np.ndarray, X_hat: np.ndarray) -> float:
    """Mean over items of the squared L2 distance between an embedding and its reconstruction."""
    X = np.asarray(X, dtype=np.float64)
    X_hat = np.asarray(X_hat, dtype=np.float64)
    if X.shape != X_hat.shape:
        raise ValueError(f"shape mismatch {X.shape} vs {X_hat.shape}")
    return float(((X - X_hat) ** 2).sum(1).mean()) if len(X) else 0.0


def recon_rel(X: np.ndarray, X_hat: np.ndarray) -> float:
    """Reconstruction error relative to the embeddings' total variance (0 perfect, 1 = the mean)."""
    X = np.asarray(X, dtype=np.float64)
    var = float(((X - X.mean(0)) ** 2).sum(1).mean()) if len(X) else 0.0
    return recon_error(X, X_hat) / var if var > 0 else 0.0
