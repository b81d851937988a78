from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raygen.configbase import ConfigError


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
    transition_prob: float = 0.7
    """Probability that the next item follows the previous item's successors (the item-to-item
    transition graph) instead of a fresh draw from the user's tastes."""
    n_successors: int = 3
    """Likely next items of each item (same or complementary subcategory): the transition graph."""
    successor_decay: float = 0.4
    """Successor k of an item is followed with weight successor_decay**k (1 = all alike)."""
    popularity_sigma: float = 0.7
    """Spread of the lognormal item popularity (0 = all items equally popular)."""

    def validate(self) -> None:
        from raygen.data.synthetic import MAX_CATEGORIES

        if not 1 <= self.n_categories <= MAX_CATEGORIES:
            raise ConfigError(f"data.synthetic.n_categories must be in 1..{MAX_CATEGORIES}, got {self.n_categories}")
        if self.n_items < max(self.n_categories, self.max_seq_len):
            raise ConfigError("data.synthetic.n_items must be >= n_categories and >= max_seq_len")
        if self.n_users < 1 or self.n_tastes < 1:
            raise ConfigError("data.synthetic.n_users and n_tastes must be >= 1")
        if not 2 <= self.min_seq_len <= self.max_seq_len:
            raise ConfigError("data.synthetic needs 2 <= min_seq_len <= max_seq_len")
        if not 0.0 <= self.transition_prob <= 1.0:
            raise ConfigError("data.synthetic.transition_prob must be in [0, 1]")
        if self.n_successors < 1:
            raise ConfigError("data.synthetic.n_successors must be >= 1")
        if not 0.0 < self.successor_decay <= 1.0:
            raise ConfigError("data.synthetic.successor_decay must be in (0, 1]")
        if self.popularity_sigma < 0.0:
            raise ConfigError("data.synthetic.popularity_sigma must be >= 0")


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

    def validate(self) -> None:
        for name in ("min_interactions", "max_history", "max_description_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.source != "synthetic" and not self.path:
            raise ConfigError(f"data.path is required for source {self.source!r}")
        if self.source == "amazon2023" and not self.category:
            raise ConfigError("data.category is required for source 'amazon2023' (e.g. Industrial_and_Scientific)")
