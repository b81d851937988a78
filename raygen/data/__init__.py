"""Data stage, pure core: load a catalog and train/valid/test samples into the Arrow tables of
:mod:`raygen.data.schema` (synthetic default, MiniOneRec Amazon-18 release, raw Amazon Reviews 2023)."""
from raygen.data.config import DataConfig, SyntheticConfig
from raygen.data.load import load_data, validate_tables
from raygen.data.schema import ITEMS_SCHEMA, SAMPLES_SCHEMA, SPLITS, DataError, SkipLog, item_text

__all__ = [
    "DataConfig", "SyntheticConfig", "load_data", "validate_tables",
    "ITEMS_SCHEMA", "SAMPLES_SCHEMA", "SPLITS", "DataError", "SkipLog", "item_text",
]
