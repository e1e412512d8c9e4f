"""Trending: what shoppers did most lately, each event's weight halving every ``HALF_LIFE``.

Read from the events themselves (not the trained model), so it follows the shop within the
cache time. "Lately" is relative to the newest event, so a shop whose events stopped (or a demo
on an old dataset) still has a trend. Purchases weigh more than carts, carts more than views.
The spec's filters (a category, in stock) apply through the behaviour collection, as elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import math
from datetime import timedelta
from typing import Any

from django.db.models import Count, Max
from django.db.models.functions import TruncDate

from .. import cache_guard, registry
from ..exceptions import IndexUnavailable, SimilarityError
from ..query import load_hits
from ..results import ResultStatus, SimilarResult
from .models import Event, EventKind
from .serving import _filtered

logger = logging.getLogger(__name__)

HALF_LIFE = timedelta(days=7)
#: events older than this many half-lives are not read (their weight is under 1/16)
WINDOW_HALF_LIVES = 4
KIND_WEIGHT = {EventKind.PURCHASE: 3.0, EventKind.CART: 2.0, EventKind.VIEW: 1.0}
CACHE_SECONDS = 600


def trending_scores(spec: Any = None) -> dict[str, float]:
    """Object key → time-decayed event weight, over the window before the newest event."""
    spec = registry.get_spec(spec)
    events = Event.objects.filter(model_label=spec.label)
    newest = events.aggregate(newest=Max("time"))["newest"]
    if newest is None:
        return {}
    since = newest - HALF_LIFE * WINDOW_HALF_LIVES
    rows = (
        events.filter(time__gt=since).annotate(day=TruncDate("time"))
        .values_list("object_id", "kind", "day").annotate(n=Count("id"))
    )
    scores: dict[str, float] = {}
    for object_id, kind, day, n in rows:
        age_days = max((newest.date() - day).days, 0)
        decay = math.pow(0.5, age_days / (HALF_LIFE.total_seconds() / 86400))
        scores[object_id] = scores.get(object_id, 0.0) + n * KIND_WEIGHT.get(kind, 1.0) * decay
    return scores


def trending(spec: Any = None, *, limit: int = 8, **filters: Any) -> SimilarResult:
    """The trending objects passing the spec's ``filters`` (cached ``CACHE_SECONDS``)."""
    spec = registry.get_spec(spec)
    digest = hashlib.sha1(repr(sorted(filters.items())).encode(), usedforsecurity=False).hexdigest()[:12]
    key = f"similarity:trending:{spec.label}:{limit}:{digest}"
    keys = cache_guard.get(key)
    if keys is None:
        scores = trending_scores(spec)
        ranked = sorted(scores, key=lambda k: -scores[k])[: limit * 8]
        try:
            keys = _filtered(spec, ranked, None, None, filters) if filters else ranked
        except (IndexUnavailable, SimilarityError) as exc:
            logger.warning("trending of %s: %s", spec.label, exc)
            return SimilarResult(ResultStatus.UNAVAILABLE, [], str(exc))
        keys = [(k, scores[k]) for k in keys[: limit * 2]]
        cache_guard.set(key, keys, CACHE_SECONDS)
    hits = load_hits(spec, [(score, {}, k) for k, score in keys], filters)
    return SimilarResult(ResultStatus.OK, hits[:limit])
