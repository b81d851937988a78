"""Evaluation core: ranking metrics and baselines; the beam search it ranks with is in :mod:`raygen.generation`.

Pure torch/numpy modules (``metrics``, ``baselines``, ``sasrec``) plus a thin Ray layer (``ray_layer``,
the generation pool in beam mode, imported on demand so that this package does not import Ray).
"""
from raygen.lazy import exports_of, lazy_exports

_EXPORTS = exports_of(**{
    "raygen.eval.baselines": ('most_popular', 'popularity_counts', 'popularity_rank'),
    "raygen.eval.sasrec": ('SASRecConfig', 'fit_sasrec', 'sasrec_rank'),
    "raygen.eval.metrics": ('DEFAULT_KS', 'collapse_stats', 'count_invalid', 'evaluate_rankings', 'hit_ranks', 'indices_to_item_ids', 'predictions_table', 'ranking_metrics', 'write_predictions'),
})
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
