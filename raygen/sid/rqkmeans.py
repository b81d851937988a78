"""Residual k-means (RQ-KMeans): level ``l`` runs k-means on what levels ``0..l-1`` left over.

k-means itself comes from faiss (fast, multi-threaded); scikit-learn's KMeans is the fallback
where faiss is not installed (e.g. a GPU image with faiss-gpu missing).
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from raygen.sid.quantizer import ResidualQuantizer, _as_2d, sq_dists

log = logging.getLogger("raygen")


def n_distinct_rows(x: np.ndarray) -> int:
    return int(len(np.unique(np.asarray(x), axis=0))) if len(x) else 0


def kmeans(x: np.ndarray, k: int, iters: int = 50, seed: int = 0) -> np.ndarray:
    """Centroids ``[k', d]`` with ``k' = min(k, distinct rows of x)`` (k-means cannot place more
    centroids than there are distinct points; callers record the cap)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) == 0:
        raise ValueError("k-means on an empty array")
    k = min(k, n_distinct_rows(x))
    if k == 1:
        return x.mean(0, keepdims=True)
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency; sklearn is the fallback
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k, max_iter=iters, n_init=1, random_state=seed).fit(x)
        return km.cluster_centers_.astype(np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=1 << 30)
    km.train(x)
    return np.asarray(km.centroids, dtype=np.float32).copy()


class RQKMeans(ResidualQuantizer):
    """``levels`` rounds of k-means with ``codebook_size`` clusters on the running residual."""

    method = "rqkmeans"

    def __init__(self, levels: int = 3, codebook_size: int = 256, iters: int = 50, seed: int = 0):
        super().__init__(levels, codebook_size)
        self.iters = iters
        self.seed = seed
        self._codebooks: list[np.ndarray] = []

    @classmethod
    def from_sid_config(cls, cfg: Any) -> "RQKMeans":
        return cls(cfg.levels, cfg.codebook_size, cfg.kmeans_iters, cfg.seed)

    def fit(self, X: np.ndarray) -> "RQKMeans":
        r = _as_2d(X).astype(np.float64)
        self._codebooks = []
        clusters = []
        for lvl in range(self.levels):
            cb = kmeans(r, self.codebook_size, self.iters, self.seed + lvl)
            if len(cb) < self.codebook_size:
                msg = (f"RQ-KMeans level {lvl}: only {len(cb)} distinct residuals among {len(r)} items, "
                       f"so {len(cb)} < codebook_size={self.codebook_size} clusters")
                warnings.warn(msg, stacklevel=2)
                log.warning(msg)
            self._codebooks.append(cb.astype(np.float64))
            clusters.append(len(cb))
            r = r - self._codebooks[-1][sq_dists(r, self._codebooks[-1]).argmin(1)]
        self.fit_info = {"clusters_per_level": clusters,
                         "clusters_capped": any(c < self.codebook_size for c in clusters)}
        return self

    def codebooks(self) -> list[np.ndarray]:
        return self._codebooks

    def latent(self, X: np.ndarray) -> np.ndarray:
        return X

    def reconstruct(self, z: np.ndarray) -> np.ndarray:
        return z

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"codebook_{i}": cb.astype(np.float32) for i, cb in enumerate(self._codebooks)}

    def config(self) -> dict[str, Any]:
        return {"levels": self.levels, "codebook_size": self.codebook_size, "iters": self.iters, "seed": self.seed}

    @classmethod
    def from_state(cls, config: dict[str, Any], state: dict[str, np.ndarray]) -> "RQKMeans":
        q = cls(**config)
        q._codebooks = [np.asarray(state[f"codebook_{i}"], dtype=np.float64) for i in range(q.levels)]
        return q
