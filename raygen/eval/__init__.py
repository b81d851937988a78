"""Evaluation core: catalog-constrained beam search, ranking metrics and baselines.

Pure torch/numpy modules (``beam``, ``metrics``, ``baselines``, ``sasrec``) plus a thin Ray layer
(``ray_layer``, imported on demand so that this package does not import Ray).
"""
from raygen.eval.baselines import most_popular, popularity_counts, popularity_rank
from raygen.eval.beam import SidTrie, constrained_beam_search
from raygen.eval.sasrec import SASRecConfig, fit_sasrec, sasrec_rank
from raygen.eval.metrics import (DEFAULT_KS, collapse_stats, count_invalid, evaluate_rankings, hit_ranks,
                                 indices_to_item_ids, predictions_table, ranking_metrics, write_predictions)

__all__ = [
    "DEFAULT_KS", "SidTrie", "collapse_stats", "constrained_beam_search", "count_invalid", "evaluate_rankings",
    "hit_ranks",
    "indices_to_item_ids", "most_popular", "popularity_counts", "popularity_rank", "predictions_table",
    "ranking_metrics", "write_predictions", "SASRecConfig", "fit_sasrec", "sasrec_rank",
]
