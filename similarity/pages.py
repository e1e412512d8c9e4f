"""What pages show: cached similar objects that never raise, a fallback, and widget cards.

:func:`similar_for_page` is :func:`~similarity.query.find_similar` for storefront pages and
template tags: cached under a key that changes when the object or any neighbour is re-indexed,
no encoder work, and the spec's fallback (with a logged warning) when the index cannot answer.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

from django.db.models import Count, Max

from . import cache_guard, merchandising, registry
from .conf import get_settings
from .exceptions import SimilarityError
from .models import IndexState
from .query import find_similar
from .results import ResultStatus, SimilarHit, SimilarResult
from .specs import IndexSpec
from .thumbnails import thumbnail_url

logger = logging.getLogger(__name__)

#: cached neighbour lists live this long at most, so objects indexed since then get their
#: chance to appear; re-indexing the object or any cached neighbour invalidates at once
SIMILAR_CACHE_SECONDS = 3600


def _index_stamp(spec: IndexSpec, pks: Iterable[Any]) -> str:
    """Changes whenever any of ``pks`` is (re-)indexed, removed or moved to another model
    version: one query over the index state rows."""
    row = IndexState.objects.filter(
        model_label=spec.label, object_id__in=[spec.object_key(pk) for pk in pks]
    ).aggregate(latest=Max("updated_at"), rows=Count("id"))
    latest = row["latest"].isoformat() if row["latest"] else "-"
    return f"{latest}/{row['rows']}"


def similar_cache_key(spec: IndexSpec, pk: Any, options: dict[str, Any]) -> str:
    conf = get_settings()
    fingerprint = repr((
        sorted(options.items()), conf.text_model, conf.image_model, conf.image_checkpoint,
        sorted(registry.fusion_weights(spec).items()), conf.candidates, conf.index.backend, conf.index.path,
        conf.index.url, spec.collection_name(conf.index.collection),
        merchandising.version(),  # a pin, block or rule change shows at once
    ))
    digest = hashlib.sha1(fingerprint.encode(), usedforsecurity=False).hexdigest()[:16]
    return f"similarity:similar:{spec.label}:{spec.object_key(pk)}:{digest}"


def fallback_hits(obj: Any, *, limit: int = 8, **filters: Any) -> list[SimilarHit]:
    """What a widget shows while the index cannot answer: the spec's fallback queryset
    (the example shop: other products of the same category). Scores are 0."""
    spec = registry.get_spec(type(obj))
    queryset = spec.get_fallback_queryset(obj, filters)
    if queryset is None:
        return []
    return [SimilarHit(other, other.pk, 0.0, {}) for other in queryset.exclude(pk=obj.pk)[:limit]]


def similar_for_page(
    obj: Any, *, limit: int = 8, fallback: bool = True, cache_timeout: int = SIMILAR_CACHE_SECONDS,
    **filters: Any,
) -> SimilarResult:
    """:func:`~similarity.query.find_similar` for pages: cached, and never raising.

    The cache entry keeps the neighbours' keys and an index stamp of the object and those
    neighbours; a hit is served only while the stamp is unchanged (one query), so re-indexing
    the object or any neighbour, or a new model version, shows at once. Results are reloaded
    from the database (the spec's queryset), so prices and titles are fresh. When the object is
    not indexed or the index is unavailable, the result keeps that status, carries the spec's
    fallback as ``hits`` (when ``fallback``) and a warning is logged; such results are not cached.
    """
    with merchandising.one_version():  # one check of the staff's decisions per render
        return _similar_for_page(obj, limit, fallback, cache_timeout, filters)


def _similar_for_page(
    obj: Any, limit: int, fallback: bool, cache_timeout: int, filters: dict[str, Any],
) -> SimilarResult:
    spec = registry.get_spec(type(obj))
    key = similar_cache_key(spec, obj.pk, {"limit": limit, **filters})
    cached = cache_guard.get(key)
    if cached is not None:
        entries, stamp = cached
        if _index_stamp(spec, [obj.pk, *(pk for pk, _s, _m in entries)]) == stamp:
            # the filters again, in the database: a neighbour may have gone out of stock since
            objects = spec.filter_queryset(spec.get_queryset(), filters).in_bulk([pk for pk, _s, _m in entries])
            return SimilarResult(
                ResultStatus.OK,
                [SimilarHit(objects[pk], pk, score, scores) for pk, score, scores in entries if pk in objects],
            )
    try:
        result = find_similar(obj, limit=limit, **filters)
    except SimilarityError as exc:  # misconfiguration, an unknown filter, a store error not mapped
        logger.warning("similar objects of %s: %s", obj.pk, exc, exc_info=True)
        result = SimilarResult(ResultStatus.UNAVAILABLE, message=str(exc))
    if result.ok:
        entries = [(hit.pk, hit.score, hit.scores) for hit in result.hits]
        cache_guard.set(key, (entries, _index_stamp(spec, [obj.pk, *(hit.pk for hit in result.hits)])), cache_timeout)
        return result
    logger.warning(
        "no similar objects for %s %s (%s: %s); showing %s", spec.label, obj.pk, result.status,
        result.message, "the spec's fallback" if fallback else "nothing",
    )
    hits = []
    if fallback:
        try:
            hits = fallback_hits(obj, limit=limit, **filters)
        except Exception:  # a fallback must never break a page
            logger.warning("fallback of %s %s failed", spec.label, obj.pk, exc_info=True)
    return SimilarResult(result.status, hits, result.message)


def thumbnail_of(obj: Any, size: int = 240) -> str:
    """The URL of a thumbnail of the spec's thumbnail source ("" when there is none)."""
    source = registry.get_spec(type(obj)).get_thumbnail(obj)
    return thumbnail_url(source, int(size)) if source else ""


def widget_cards(result: SimilarResult, thumb_size: int) -> list[dict[str, Any]]:
    """What the widget template shows per hit, in the spec's words."""
    cards = []
    for hit in result:
        spec = registry.get_spec(type(hit.object))
        url = getattr(hit.object, "get_absolute_url", None)
        cards.append({
            "url": url() if callable(url) else "",
            "title": spec.get_title(hit.object),
            "price": spec.format_price(hit.object),
            "thumbnail": thumbnail_of(hit.object, thumb_size),
            "score": hit.score,
            "scores": hit.scores,
            "pk": hit.pk,
            "object": hit.object,
        })
    return cards
