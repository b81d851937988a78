"""TIGER-style RQ-VAE: MLP encoder -> residual quantizer (L codebooks of K) -> MLP decoder.

Loss = reconstruction MSE + mean over levels of (codebook loss + beta * commitment loss), with
a straight-through estimator from the quantized latent to the encoder. Each level's codebook
is initialised by k-means on the residuals of the first training batch (as in TIGER and
LC-Rec), which avoids most dead codes without a reset heuristic.

Written by hand because the pieces are small and specific (no maintained library ships a
residual VQ with k-means init and the exact TIGER loss on plain MLPs); k-means is faiss's.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raygen.sid.quantizer import ResidualQuantizer, _as_2d
from raygen.sid.rqkmeans import kmeans

_ENCODE_CHUNK = 65536


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _sq_dists(r: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    return r.pow(2).sum(1, keepdim=True) - 2.0 * r @ cb.T + cb.pow(2).sum(1)[None, :]


class RQVAENet(nn.Module):
    """The torch module: ``encoder``, ``decoder`` and ``codebooks [L, K, latent_dim]``."""

    def __init__(self, in_dim: int, hidden_dims: list[int], latent_dim: int, levels: int, codebook_size: int):
        super().__init__()
        self.encoder = _mlp([in_dim, *hidden_dims, latent_dim])
        self.decoder = _mlp([latent_dim, *reversed(hidden_dims), in_dim])
        self.codebooks = nn.Parameter(torch.zeros(levels, codebook_size, latent_dim))

    @torch.no_grad()
    def init_codebooks(self, z: torch.Tensor, iters: int, seed: int) -> list[int]:
        """k-means each level's codebook on ``z``'s residuals. Where the batch has fewer distinct
        residuals than K, the remaining codewords are random residuals plus small noise.
        Returns the number of k-means clusters per level."""
        gen = torch.Generator().manual_seed(seed)
        r = z.detach().float().cpu()
        n_clusters = []
        for lvl in range(self.codebooks.shape[0]):
            k = self.codebooks.shape[1]
            cb = torch.from_numpy(kmeans(r.numpy(), k, iters, seed + lvl))
            n_clusters.append(len(cb))
            if len(cb) < k:
                fill = r[torch.randint(len(r), (k - len(cb),), generator=gen)]
                scale = r.std().clamp_min(1e-6) * 0.01
                cb = torch.cat([cb, fill + scale * torch.randn(fill.shape, generator=gen)])
            self.codebooks[lvl].copy_(cb.to(self.codebooks.device))
            r = r - cb[_sq_dists(r, cb).argmin(1)]
        return n_clusters

    def quantize(self, z: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the straight-through quantized latent, codes ``[B, L]`` and the mean over
        levels of codebook + beta * commitment loss."""
        r = z
        zq = torch.zeros_like(z)
        codes = []
        loss = z.new_zeros(())
        for cb in self.codebooks:
            idx = _sq_dists(r, cb).argmin(1)
            e = cb[idx]
            loss = loss + F.mse_loss(e, r.detach()) + beta * F.mse_loss(r, e.detach())
            zq = zq + e.detach()
            r = r - e.detach()
            codes.append(idx)
        zq_st = z + (zq - z).detach()
        return zq_st, torch.stack(codes, 1), loss / len(self.codebooks)

    def forward(self, x: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        zq, codes, qloss = self.quantize(self.encoder(x), beta)
        return self.decoder(zq), codes, qloss


class RQVAE(ResidualQuantizer):
    """Fit/encode/decode/save wrapper around :class:`RQVAENet`, deterministic for a seed on CPU."""

    method = "rqvae"

    def __init__(self, levels: int = 3, codebook_size: int = 256, latent_dim: int = 32,
                 hidden_dims: list[int] | None = None, epochs: int = 200, batch_size: int = 1024,
                 lr: float = 1e-3, beta: float = 0.25, kmeans_iters: int = 50, seed: int = 0,
                 in_dim: int | None = None, device: str = "cpu", num_threads: int = 1):
        super().__init__(levels, codebook_size)
        if epochs < 1:
            raise ValueError(f"RQ-VAE needs epochs >= 1, got {epochs}")
        self.latent_dim = latent_dim
        self.hidden_dims = list(hidden_dims if hidden_dims is not None else [256, 128])
        self.epochs, self.batch_size, self.lr, self.beta = epochs, batch_size, lr, beta
        self.kmeans_iters, self.seed, self.in_dim = kmeans_iters, seed, in_dim
        self.device, self.num_threads = device, num_threads
        self.net: RQVAENet | None = None
        self._cb_cache: list[np.ndarray] = []

    @classmethod
    def from_sid_config(cls, cfg: Any) -> "RQVAE":
        return cls(levels=cfg.levels, codebook_size=cfg.codebook_size, latent_dim=cfg.latent_dim,
                   hidden_dims=cfg.hidden_dims, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                   beta=cfg.beta, kmeans_iters=cfg.kmeans_iters, seed=cfg.seed, device=cfg.device,
                   num_threads=cfg.num_threads)

    def _torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def fit(self, X: np.ndarray) -> "RQVAE":
        threads = torch.get_num_threads()
        if self.num_threads > 0:
            torch.set_num_threads(self.num_threads)
        try:
            return self._fit(X)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, X: np.ndarray) -> "RQVAE":
        X = torch.from_numpy(_as_2d(X))
        n = len(X)
        if n == 0:
            raise ValueError("RQ-VAE fit on an empty array")
        self.in_dim = X.shape[1]
        dev = self._torch_device()
        t0 = time.time()
        # fork_rng keeps the caller's global RNG untouched while seeding weight init here.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = RQVAENet(self.in_dim, self.hidden_dims, self.latent_dim, self.levels, self.codebook_size).to(dev)
            gen = torch.Generator().manual_seed(self.seed)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr)
            X = X.to(dev)
            init_clusters: list[int] = []
            bs = max(1, min(self.batch_size, n))
            hist = []
            for _ in range(self.epochs):
                perm = torch.randperm(n, generator=gen).to(dev)
                tot = rec = 0.0
                for s in range(0, n, bs):
                    xb = X[perm[s:s + bs]]
                    if not init_clusters:
                        with torch.no_grad():
                            init_clusters = net.init_codebooks(net.encoder(xb), self.kmeans_iters, self.seed)
                    xh, _, qloss = net(xb, self.beta)
                    rloss = F.mse_loss(xh, xb)
                    loss = rloss + qloss
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    tot += loss.item() * len(xb)
                    rec += rloss.item() * len(xb)
                hist.append((tot / n, rec / n))
        self.net = net.cpu().eval()
        self._cb_cache = []
        self.fit_info = {
            "init_clusters_per_level": init_clusters,
            "final_loss": hist[-1][0] if hist else None,
            "final_recon_mse": hist[-1][1] if hist else None,
            "first_loss": hist[0][0] if hist else None,
            "train_seconds": round(time.time() - t0, 3),
        }
        return self

    def codebooks(self) -> list[np.ndarray]:
        if self.net is None:
            return []
        if not self._cb_cache:
            self._cb_cache = [cb.detach().double().numpy() for cb in self.net.codebooks]
        return self._cb_cache

    @torch.no_grad()
    def latent(self, X: np.ndarray) -> np.ndarray:
        X = torch.from_numpy(np.asarray(X, dtype=np.float32))
        if len(X) == 0:
            return np.zeros((0, self.latent_dim))
        parts = [self.net.encoder(X[s:s + _ENCODE_CHUNK]) for s in range(0, len(X), _ENCODE_CHUNK)]
        return torch.cat(parts).double().numpy()

    @torch.no_grad()
    def reconstruct(self, z: np.ndarray) -> np.ndarray:
        return self.net.decoder(torch.from_numpy(np.asarray(z, dtype=np.float32))).numpy()

    def state_dict(self) -> dict[str, np.ndarray]:
        if self.net is None:
            raise RuntimeError("RQVAE is not fitted")
        return {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}

    def config(self) -> dict[str, Any]:
        return {"levels": self.levels, "codebook_size": self.codebook_size, "latent_dim": self.latent_dim,
                "hidden_dims": self.hidden_dims, "epochs": self.epochs, "batch_size": self.batch_size,
                "lr": self.lr, "beta": self.beta, "kmeans_iters": self.kmeans_iters, "seed": self.seed,
                "in_dim": self.in_dim}

    @classmethod
    def from_state(cls, config: dict[str, Any], state: dict[str, np.ndarray]) -> "RQVAE":
        q = cls(**config)
        if q.in_dim is None:
            raise ValueError("RQ-VAE config lacks in_dim (was it fitted before saving?)")
        q.net = RQVAENet(q.in_dim, q.hidden_dims, q.latent_dim, q.levels, q.codebook_size)
        q.net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
        q.net.eval()
        return q
