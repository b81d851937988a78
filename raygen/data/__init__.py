"""Data stage, pure core: load a catalog and train/valid/test samples into the Arrow tables of
:mod:`raygen.data.schema` (synthetic default, MiniOneRec Amazon-18 release, raw Amazon Reviews 2023)."""
from raygen.lazy import exports_of, lazy_exports

_EXPORTS = exports_of(**{
    "raygen.data.config": ('DataConfig', 'SyntheticConfig'),
    "raygen.data.load": ('load_data', 'validate_tables'),
    "raygen.data.schema": ('ITEMS_SCHEMA', 'SAMPLES_SCHEMA', 'SPLITS', 'DataError', 'SkipLog', 'item_text'),
})
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
