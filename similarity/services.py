"""The public service layer: tasks, commands, admin, views and template tags call these.

A thin facade over the modules that each do one job, in the order a product travels:

=============  ==========================================================================
``changes``    capture a save/delete: outbox row in the transaction, dispatch after commit
``tasks``      the Celery tasks the dispatcher queues (the app's own)
``indexing``   encode a batch and write its points and index state
``backlog``    drain the outbox (``--pending``) and retry failures (``--failed``)
``rebuild``    fill a new generation and switch to it atomically (``--all``)
``query``      ``find_similar``: filters, candidates, fusion, one per group
``pages``      cached results for pages, the fallback, widget cards
``search``     search by words or by photo
``health``     counts, versions, the outbox and recent errors
``reconcile``  compare the database with the index, queue the difference
=============  ==========================================================================
"""

from __future__ import annotations

from .backlog import failed_keys, iter_batches, process_pending
from .changes import capture_changes, dispatch_committed
from .conf import get_settings
from .exceptions import SimilarityError
from .fusion import fuse_scores
from .health import index_health
from .indexing import ensure_index, index_products, remove_products
from .pages import fallback_hits, similar_for_page, widget_cards
from .query import find_similar, rank_candidates
from .rebuild import rebuild_index
from .reconcile import Drift, reconcile
from .results import IndexReport, SimilarHit, SimilarResult
from .search import search_image, search_text

__all__ = [
    "Drift", "IndexReport", "SimilarHit", "SimilarResult", "SimilarityError", "capture_changes",
    "dispatch_committed", "ensure_index", "failed_keys", "fallback_hits", "find_similar", "fuse_scores",
    "get_settings", "index_health", "index_products", "iter_batches", "process_pending", "rank_candidates",
    "rebuild_index", "reconcile", "remove_products", "search_image", "search_text", "similar_for_page",
    "widget_cards",
]
