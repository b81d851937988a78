from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

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
class TableConfig:
    """A team's own interactions table (and optional item table), for ``data.source: table``.

    Each location is a file, a folder (every non-hidden file under it) or a glob, a local path or a URI
    pyarrow.fs opens (``s3://``, ``gs://``, ``hdfs://``, ``file://``). Other columns are ignored."""

    interactions: str = ""
    """Where the interactions are (one row per user-item event)."""
    format: Literal["auto", "parquet", "csv", "jsonl"] = "auto"
    """File format of the interactions (and the item table); auto = from the file extension
    (.parquet/.pq, .csv/.tsv, .jsonl/.ndjson/.json)."""
    user_column: str = "user_id"
    """Interactions column with the user id (any type: strings or integers)."""
    item_column: str = "item_id"
    """Interactions column with the item id (any type: strings or integers)."""
    timestamp_column: str = "timestamp"
    """Interactions column with the time of the event: integer epochs (any unit, one unit per column),
    Arrow timestamps/dates, or ISO-8601 strings (naive = UTC)."""
    repeats: Literal["collapse", "keep"] = "collapse"
    """Consecutive events of the same user on the same item (in time order): collapse = keep the first
    and count the others (``consecutive_repeat``); keep = every event is an interaction."""
    items: str = ""
    """Where the item table is (optional; empty = items get the fallback title ``item <id>``, counted)."""
    item_id_column: str = "item_id"
    """Item table column with the item id (the ids of the interactions' item column)."""
    title_column: str = "title"
    """Item table column with the title; an empty title gets the fallback ``item <id>`` (counted)."""
    text_columns: list[str] = field(default_factory=list)
    """Item table columns joined (in this order) into the description, which the corpus stage embeds and
    the teacher reads; a list value (e.g. bullet features) is joined with spaces."""
    brand_column: str = ""
    """Item table column with the brand (optional)."""
    category_column: str = ""
    """Item table column with the categories (optional): a list of strings or one string."""
    batch_rows: int = 1_000_000
    """Rows per read batch and interactions per written samples chunk (bounds the data stage's memory)."""

    def validate(self) -> None:
        if self.batch_rows < 1:
            raise ConfigError(f"batch_rows must be >= 1, got {self.batch_rows}")
        for name in ("user_column", "item_column", "timestamp_column", "item_id_column", "title_column"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must not be empty")


@dataclass
class DataConfig:
    source: Literal["synthetic", "minionerec", "amazon2023", "table"] = "synthetic"
    """Where items and interactions come from: the generated catalog, the MiniOneRec release's files,
    raw Amazon Reviews 2023 files, or a team's own tables (``data.table``)."""
    path: str = ""
    """Folder of the source files (minionerec: folder with items.json/valid.csv/test.csv;
    amazon2023: folder with <Category>.jsonl[.gz] and meta_<Category>.jsonl[.gz]; table: unused, the
    locations are in data.table)."""
    category: str = ""
    """amazon2023 only: the category name in the file names (e.g. Industrial_and_Scientific)."""
    split: Literal["loo", "time"] = "loo"
    """amazon2023 and table: leave-one-out per user, or the MiniOneRec release's global-time 8:1:1 split
    (interactions ranked by time; a sample's split is its target's)."""
    min_interactions: int = 5
    """amazon2023 and table: k of the iterative k-core filter on users and items."""
    max_history: int = 20
    """Histories are truncated to the most recent max_history items."""
    max_description_chars: int = 2000
    """Longer descriptions are truncated (and counted in metrics.json)."""
    seed: int = 0
    """Seed for the synthetic generator."""
    KEY_NEUTRAL: ClassVar[tuple[str, ...]] = ("table",)
    """Fields that enter the stage key only once changed from their default (see raygen.runner)."""

    synthetic: SyntheticConfig = None  # type: ignore[assignment]
    """Synthetic catalog sizes (source=synthetic)."""
    table: TableConfig = None  # type: ignore[assignment]
    """The team's own tables (source=table)."""

    def __post_init__(self):
        if self.synthetic is None:
            self.synthetic = SyntheticConfig()
        if self.table is None:
            self.table = TableConfig()

    def validate(self) -> None:
        for name in ("min_interactions", "max_history", "max_description_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.source == "table" and not self.table.interactions:
            raise ConfigError("data.table.interactions is required for source 'table'")
        if self.source not in ("synthetic", "table") and not self.path:
            raise ConfigError(f"data.path is required for source {self.source!r}")
        if self.source == "amazon2023" and not self.category:
            raise ConfigError("data.category is required for source 'amazon2023' (e.g. Industrial_and_Scientific)")
