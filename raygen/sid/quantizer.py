"""What every SID quantizer shares: residual encoding over codebooks, decoding, save/load.

A quantizer maps item embeddings ``X [N, D]`` into a space (the identity for RQ-KMeans, an
MLP encoder's latent for RQ-VAE) and quantizes it *residually*: level ``l`` picks the
codeword nearest to what levels ``0..l-1`` left over. Subclasses provide ``fit``, the map into
that space (``latent``), back out of it (``reconstruct``) and their tensors; this base class
does encoding, decoding and the last-level distances that Sinkhorn re-assignment and
new-item assignment need.

Saved form: ``quantizer.safetensors`` (``state_dict()``, numpy arrays stored as torch
tensors) plus ``quantizer.json`` (``{"method": ..., "config": ..., "extra": ...}``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from raygen.io import load_tensors, read_json, save_tensors, write_json

_CHUNK = 65536
"""Rows per distance computation (bounds memory at N x K for large catalogs)."""


def sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[N, K]`` between rows of ``x`` and rows of ``c`` (float64)."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    d = (x * x).sum(1, keepdims=True) - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def residual_encode(z: np.ndarray, codebooks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Residually quantize ``z [N, d]``: returns codes ``[N, L]`` (int64) and the distances
    ``[N, K_last]`` of the residual entering the last level to every last-level codeword."""
    n = len(z)
    codes = np.zeros((n, len(codebooks)), dtype=np.int64)
    last = np.zeros((n, len(codebooks[-1])), dtype=np.float64)
    for s in range(0, n, _CHUNK):
        r = np.asarray(z[s:s + _CHUNK], dtype=np.float64)
        for lvl, cb in enumerate(codebooks):
            d = sq_dists(r, cb)
            idx = d.argmin(1)
            codes[s:s + _CHUNK, lvl] = idx
            if lvl == len(codebooks) - 1:
                last[s:s + _CHUNK] = d
            r = r - cb[idx]
    return codes, last


def residual_decode(codes: np.ndarray, codebooks: list[np.ndarray]) -> np.ndarray:
    """Sum of the chosen codewords: the quantized point in the quantizer's space."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] < len(codebooks):
        raise ValueError(f"codes must be [N, >={len(codebooks)}], got shape {codes.shape}")
    out = np.zeros((len(codes), codebooks[0].shape[1]), dtype=np.float64)
    for lvl, cb in enumerate(codebooks):
        if len(codes) and (codes[:, lvl].min() < 0 or codes[:, lvl].max() >= len(cb)):
            raise ValueError(f"level {lvl} codes outside [0, {len(cb)})")
        out += cb[codes[:, lvl]]
    return out


class ResidualQuantizer(ABC):
    """Base class of RQ-KMeans and RQ-VAE. ``levels`` x ``codebook_size`` codes."""

    method: str = ""

    def __init__(self, levels: int, codebook_size: int):
        if levels < 1 or codebook_size < 1:
            raise ValueError(f"need levels >= 1 and codebook_size >= 1, got {levels}, {codebook_size}")
        self.levels = levels
        self.codebook_size = codebook_size
        self.fit_info: dict[str, Any] = {}
        """Metrics from ``fit`` (clusters per level, losses, warnings) for metrics.json."""

    # -- subclass hooks -------------------------------------------------------------------
    @abstractmethod
    def fit(self, X: np.ndarray) -> "ResidualQuantizer":
        """Learn the codebooks (and encoder) from ``X [N, D]``; returns ``self``."""

    @abstractmethod
    def codebooks(self) -> list[np.ndarray]:
        """One ``[K_l, d]`` array per level (``K_l <= codebook_size``)."""

    @abstractmethod
    def latent(self, X: np.ndarray) -> np.ndarray:
        """Map embeddings into the quantized space."""

    @abstractmethod
    def reconstruct(self, z: np.ndarray) -> np.ndarray:
        """Map a point of the quantized space back to embedding space."""

    @abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays to save (safetensors)."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments."""

    @classmethod
    @abstractmethod
    def from_state(cls, config: dict[str, Any], state: dict[str, np.ndarray]) -> "ResidualQuantizer":
        """Rebuild a fitted quantizer from ``config()`` and ``state_dict()``."""

    # -- shared behaviour ------------------------------------------------------------------
    def encode(self, X: np.ndarray) -> np.ndarray:
        """Codes ``[N, levels]`` (int64)."""
        return self.encode_with_distances(X)[0]

    def encode_with_distances(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes ``[N, levels]`` and squared distances ``[N, K_last]`` of each item's last
        residual to every last-level codeword (the cost Sinkhorn and new-item assignment use)."""
        self._check_fitted()
        return residual_encode(self.latent(_as_2d(X)), self.codebooks())

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Reconstructed embeddings ``[N, D]`` from codes; columns beyond ``levels`` (an extra
        disambiguation level) are ignored."""
        self._check_fitted()
        return self.reconstruct(residual_decode(codes, self.codebooks())).astype(np.float32)

    def _check_fitted(self) -> None:
        if not self.codebooks():
            raise RuntimeError(f"{type(self).__name__} is not fitted")


def _as_2d(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("embeddings contain NaN or inf")
    return X


def quantizer_class(method: str) -> type[ResidualQuantizer]:
    if method == "rqkmeans":
        from raygen.sid.rqkmeans import RQKMeans

        return RQKMeans
    if method == "rqvae":
        from raygen.sid.rqvae import RQVAE

        return RQVAE
    raise ValueError(f"unknown SID method {method!r}; expected 'rqkmeans' or 'rqvae'")


def build_quantizer(cfg: Any) -> ResidualQuantizer:
    """An unfitted quantizer from a ``SidConfig``."""
    return quantizer_class(cfg.method).from_sid_config(cfg)


def save_quantizer(q: ResidualQuantizer, folder: str | Path, extra: dict | None = None) -> None:
    """Write ``quantizer.safetensors`` and ``quantizer.json`` into ``folder``."""
    import torch

    folder = Path(folder)
    save_tensors(folder / "quantizer.safetensors",
                 {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in q.state_dict().items()})
    write_json(folder / "quantizer.json", {"method": q.method, "config": q.config(), "extra": extra or {}})


def load_quantizer(folder: str | Path) -> ResidualQuantizer:
    """Load a quantizer saved by :func:`save_quantizer` (safetensors only, no pickle)."""
    folder = Path(folder)
    meta = read_json(folder / "quantizer.json")
    state = {k: v.numpy() for k, v in load_tensors(folder / "quantizer.safetensors").items()}
    return quantizer_class(meta["method"]).from_state(meta["config"], state)
