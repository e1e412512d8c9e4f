"""Offline evaluation of similarity quality on the indexed catalog (``similarity_evaluate``).

The vectors are read once from the vector index and ranked with numpy (:mod:`.ranking`) under
the same fusion, exclusion and grouping rules as ``find_similar``. Relevance comes from the
spec's taxonomy at a depth, a labels file or a judgments file (:mod:`.catalog`). Query files (a
photo or a typed query whose answer is one object) go through the search services. Plots:
:mod:`.plots`.
"""

from .catalog import (
    DEFAULT_KS,
    RANKINGS,
    EvalCatalog,
    EvaluationError,
    Relevance,
    category_relevance,
    judgments_relevance,
    label_leak,
    labels_relevance,
    load_catalog,
)
from .plots import write_plots
from .ranking import (
    EvalResult,
    Ranker,
    evaluate,
    evaluate_query_file,
    mean_metrics,
    query_metrics,
    sample_queries,
    settings_snippet,
    sweep_weights,
    top_k,
)

__all__ = [
    "DEFAULT_KS", "RANKINGS", "EvalCatalog", "EvalResult", "EvaluationError", "Ranker", "Relevance",
    "category_relevance", "evaluate", "evaluate_query_file", "judgments_relevance", "label_leak",
    "labels_relevance", "load_catalog", "mean_metrics", "query_metrics", "sample_queries",
    "settings_snippet", "sweep_weights", "top_k", "write_plots",
]
