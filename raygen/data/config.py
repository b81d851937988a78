from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class SyntheticConfig:
    n_items: int = 300
    """Number of products in the generated catalog."""
    n_users: int = 400
    """Number of users; each gets one interaction sequence."""
    n_categories: int = 8
    """Top-level product categories; each has its own attributes and vocabulary."""
    n_tastes: int = 6
    """Latent user tastes (mixtures over categories and brands) that drive sequences."""
    min_seq_len: int = 5
    """Shortest user sequence (items), before splitting."""
    max_seq_len: int = 14
    """Longest user sequence (items)."""
    transition_prob: float = 0.6
    """Probability that the next item follows the item-to-item transition graph of the previous item."""


@dataclass
class DataConfig:
    source: Literal["synthetic", "minionerec", "amazon2023"] = "synthetic"
    """Where items and interactions come from."""
    path: str = ""
    """Folder of the source files (minionerec: folder with items.json/valid.csv/test.csv;
    amazon2023: folder with <Category>.jsonl[.gz] and meta_<Category>.jsonl[.gz])."""
    category: str = ""
    """amazon2023 only: the category name in the file names (e.g. Industrial_and_Scientific)."""
    split: Literal["loo", "time"] = "loo"
    """amazon2023 only: leave-one-out per user, or global-time 8:1:1 over interactions."""
    min_interactions: int = 5
    """amazon2023 only: k of the k-core filter on users and items."""
    max_history: int = 20
    """Histories are truncated to the most recent max_history items."""
    max_description_chars: int = 2000
    """Longer descriptions are truncated (and counted in metrics.json)."""
    seed: int = 0
    """Seed for the synthetic generator."""
    synthetic: SyntheticConfig = None  # type: ignore[assignment]
    """Synthetic catalog sizes (source=synthetic)."""

    def __post_init__(self):
        if self.synthetic is None:
            self.synthetic = SyntheticConfig()
