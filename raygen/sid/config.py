from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from raygen.configbase import ConfigError


@dataclass
class SidConfig:
    method: Literal["rqvae", "rqkmeans"] = "rqkmeans"
    """Quantizer: TIGER-style RQ-VAE or residual k-means."""
    levels: int = 3
    """Number of code levels (before any collision-breaking extra level)."""
    codebook_size: int = 256
    """Codes per level (K). Presets: 3 x 256 (MiniOneRec), 4 x 256 (STAR)."""
    latent_dim: int = 32
    """RQ-VAE latent size."""
    hidden_dims: list[int] = field(default_factory=lambda: [256, 128])
    """RQ-VAE encoder MLP hidden sizes (decoder mirrors them)."""
    epochs: int = 200
    """RQ-VAE training epochs."""
    batch_size: int = 1024
    """RQ-VAE batch size."""
    lr: float = 1e-3
    """RQ-VAE learning rate."""
    beta: float = 0.25
    """Commitment loss weight."""
    device: str = "cpu"
    """Torch device for RQ-VAE training: 'cpu', 'cuda' or 'auto' (cuda when available).
    CPU training is bit-for-bit reproducible for a seed; CUDA may differ in the last bits."""
    num_threads: int = 1
    """CPU threads for RQ-VAE training (0 = torch's default). The model is small: one thread
    trains 3x256 on ~4k x 384 items in ~35 s, while extra threads spin-wait badly when the
    machine is busy (2 threads on a loaded 2-core box were >4x slower)."""
    kmeans_iters: int = 50
    """k-means iterations (RQ-KMeans levels and RQ-VAE codebook init)."""
    sinkhorn: bool = True
    """Sinkhorn-balanced re-assignment of the last level to remove collisions."""
    sinkhorn_epsilon: float = 0.05
    """Entropic regularisation of the Sinkhorn step."""
    sinkhorn_iters: int = 50
    """Sinkhorn iterations."""
    sinkhorn_rounds: int = 20
    """Rounds of collision-group re-assignment before falling back to the extra level."""
    extra_level: bool = True
    """Append a deterministic disambiguation level where collisions remain (final rate 0)."""
    n_token_keywords: int = 8
    """Ranked keywords kept per SID token (for SA-Init and TS-Align)."""
    seed: int = 0
    """Seed for k-means and RQ-VAE."""

    def validate(self) -> None:
        """Raise ConfigError (naming ``sids.<field>``) on values no run could use."""
        for name in ("levels", "latent_dim", "epochs", "batch_size", "kmeans_iters", "sinkhorn_iters",
                     "n_token_keywords"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sids.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("num_threads", "sinkhorn_rounds", "beta"):
            if getattr(self, name) < 0:
                raise ConfigError(f"sids.{name}: must be >= 0, got {getattr(self, name)}")
        if self.codebook_size < 2:
            raise ConfigError(f"sids.codebook_size: must be >= 2, got {self.codebook_size}")
        for i, d in enumerate(self.hidden_dims):
            if d < 1:
                raise ConfigError(f"sids.hidden_dims[{i}]: must be >= 1, got {d}")
        for name in ("lr", "sinkhorn_epsilon"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"sids.{name}: must be > 0, got {getattr(self, name)}")
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", self.device):
            raise ConfigError(f"sids.device: {self.device!r} is not 'cpu', 'cuda', 'cuda:N' or 'auto'")
