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
from .query import find_similar
from .rebuild import rebuild_index
from .reconcile import Drift, reconcile
from .results import IndexReport, SimilarHit, SimilarResult
from .search import search_image, search_text

__all__ = [
    "Drift", "IndexReport", "SimilarHit", "SimilarResult", "SimilarityError", "capture_changes",
    "dispatch_committed", "ensure_index", "failed_keys", "fallback_hits", "find_similar", "fuse_scores",
    "get_settings", "index_health", "index_products", "iter_batches", "process_pending",
    "rebuild_index", "reconcile", "remove_products", "search_image", "search_text", "similar_for_page",
    "widget_cards",
]

# Staff tools (docs/staff-tools.md): category suggestions, duplicates, "why", merchandising.
from .categories import CategorySuggestion, suggest_categories, suggest_category  # noqa: E402
from .categories import apply_suggestion as apply_category_suggestion  # noqa: E402
from .duplicate_queue import decide as decide_duplicate  # noqa: E402
from .duplicate_queue import possible_duplicates  # noqa: E402
from .duplicate_queue import refresh_queue as refresh_duplicate_queue  # noqa: E402
from .duplicates import DEFAULT_THRESHOLD as DUPLICATE_THRESHOLD  # noqa: E402
from .duplicates import DuplicatePair, find_duplicates  # noqa: E402
from .explain import Explanation, explain_hits  # noqa: E402
from .merchandising import block as block_hit  # noqa: E402
from .merchandising import clear as clear_hit  # noqa: E402
from .merchandising import decisions_for as merchandising_decisions  # noqa: E402
from .merchandising import pin as pin_hit  # noqa: E402

__all__ += [
    "DUPLICATE_THRESHOLD", "CategorySuggestion", "DuplicatePair", "Explanation", "apply_category_suggestion",
    "block_hit", "clear_hit", "decide_duplicate", "explain_hits", "find_duplicates", "merchandising_decisions",
    "pin_hit", "possible_duplicates", "refresh_duplicate_queue", "suggest_categories", "suggest_category",
]

# Adapters learned from the catalog (docs/training.md): train, make live, roll back.
from .training.service import activate_adapter, train_adapter  # noqa: E402
from .training.service import rollback as rollback_adapter  # noqa: E402

__all__ += ["activate_adapter", "rollback_adapter", "train_adapter"]

# Behaviour (docs/behaviour.md): events, item–item models, bought together, recommended, trending.
from .behaviour.analytics import flush as flush_widget_stats  # noqa: E402
from .behaviour.importer import import_events  # noqa: E402
from .behaviour.recording import recent_views, record_purchase, record_view  # noqa: E402
from .behaviour.serving import bought_together, bought_together_cart, recommended_from_views  # noqa: E402
from .behaviour.train import train as train_behaviour  # noqa: E402
from .behaviour.trending import trending  # noqa: E402

__all__ += [
    "bought_together", "bought_together_cart", "flush_widget_stats", "import_events", "recent_views",
    "recommended_from_views", "record_purchase", "record_view", "train_behaviour", "trending",
]
