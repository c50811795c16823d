"""Re-ID evaluation: test-time features, blockwise distances, Market-protocol metrics, re-ranking."""

from ddrn.evaluation.distance import pairwise_distance
from ddrn.evaluation.features import extract_features
from ddrn.evaluation.rank import (
           QueryMetrics,
           RankResult,
           evaluate_rank,
           evaluate_rank_per_query,
           evaluate_rank_reference,
)
from ddrn.evaluation.rerank import re_ranking

__all__ = ["QueryMetrics", "RankResult", "evaluate_rank", "evaluate_rank_per_query",
           "evaluate_rank_reference", "extract_features",
           "pairwise_distance", "re_ranking"]
