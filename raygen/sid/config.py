from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
