"""The behaviour widgets as template contexts: cached, never raising (a failure logs a warning and
shows nothing). The template tags in ``similarity.templatetags.similarity`` are adapters over these.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.urls import NoReverseMatch, reverse

from .. import cache_guard, registry
from ..pages import widget_cards
from ..results import ResultStatus, SimilarHit, SimilarResult
from .artifacts import live_artifact
from .recording import recent_views
from .serving import bought_together, bought_together_cart, recommended_from_views
from .trending import trending

logger = logging.getLogger(__name__)

CACHE_SECONDS = 3600


def _cached(spec: Any, parts: tuple[Any, ...], compute: Callable[[], SimilarResult],
            filters: dict[str, Any]) -> SimilarResult:
    """``compute()`` cached under the live model's version and ``parts``; objects reloaded (with
    the filters in the database) on a hit, so prices and stock are fresh."""
    artifact = live_artifact(spec)
    version = artifact.version if artifact is not None else "-"
    digest = hashlib.sha1(repr((version, parts, sorted(filters.items()))).encode(), usedforsecurity=False)
    key = f"similarity:behaviour:{spec.label}:{digest.hexdigest()[:20]}"
    entries = cache_guard.get(key)
    if entries is not None:
        objects = spec.filter_queryset(spec.get_queryset(), filters).in_bulk([pk for pk, _s in entries])
        hits = [SimilarHit(objects[pk], pk, score, {}) for pk, score in entries if pk in objects]
        return SimilarResult(ResultStatus.OK, hits)
    result = compute()
    if result.ok:
        cache_guard.set(key, [(hit.pk, hit.score) for hit in result.hits], CACHE_SECONDS)
    return result


def _safe(name: str, compute: Callable[[], SimilarResult]) -> SimilarResult:
    try:
        return compute()
    except Exception as exc:  # a widget must never break a page
        logger.warning("%s widget failed: %s", name, exc, exc_info=True)
        return SimilarResult(ResultStatus.UNAVAILABLE, [], str(exc))


def beacon_url() -> str:
    try:
        return reverse("similarity:beacon")
    except NoReverseMatch:  # the project did not include similarity.urls: no analytics
        return ""


def context(widget: str, result: SimilarResult, title: str, thumb_size: int, placement: str) -> dict[str, Any]:
    return {
        "cards": widget_cards(result, thumb_size), "title": title, "widget": widget, "placement": placement,
        "thumb_size": thumb_size, "beacon_url": beacon_url(),
    }


def bought_together_hits(obj: Any, limit: int, filters: dict[str, Any]) -> SimilarResult:
    if obj is None or getattr(obj, "pk", None) is None:
        return SimilarResult(ResultStatus.OK, [])
    spec = registry.get_spec(type(obj))
    return _safe("bought_together", lambda: _cached(
        spec, ("product", spec.object_key(obj.pk), limit),
        lambda: bought_together(obj, limit=limit, **filters), filters,
    ))


def cart_hits(items: Iterable[Any], limit: int, filters: dict[str, Any]) -> SimilarResult:
    objects = [getattr(item, "object", item) for item in items or ()]
    objects = [o for o in objects if o is not None and getattr(o, "pk", None) is not None]
    if not objects:
        return SimilarResult(ResultStatus.OK, [])
    spec = registry.get_spec(type(objects[0]))
    keys = tuple(sorted(spec.object_key(o.pk) for o in objects))
    return _safe("bought_together_cart", lambda: _cached(
        spec, ("cart", keys, limit), lambda: bought_together_cart(objects, limit=limit, **filters), filters,
    ))


def recommended_hits(request: Any, current: Any, limit: int, filters: dict[str, Any], model: Any = None,
                     fallback: bool = True) -> SimilarResult:
    """From the session's recent views; for a new visitor, the trending objects (``fallback``)."""
    def compute() -> SimilarResult:
        spec = registry.get_spec(type(current) if current is not None else model)
        keys = [key for key, _seen in recent_views(request, spec)]
        if not keys:
            return trending(spec, limit=limit, **filters) if fallback else SimilarResult(ResultStatus.OK, [])
        return _cached(
            spec, ("recent", tuple(keys), spec.object_key(current.pk) if current is not None else "", limit),
            lambda: recommended_from_views(spec, keys, current=current, limit=limit, **filters), filters,
        )

    return _safe("recommended_for_you", compute)


def trending_hits(limit: int, filters: dict[str, Any], model: Any = None) -> SimilarResult:
    return _safe("trending", lambda: trending(model, limit=limit, **filters))
