"""``{% load similarity %}``: similar objects for any page, as data or as a strip of cards.

Both tags are adapters over :func:`similarity.services.similar_for_page`, which caches, never
encodes and never raises: an object that is not indexed yet, or an index that cannot be
reached, gives the spec's fallback and a logged warning. Filter options are the spec's named
filters (the example shop: ``same_category``, ``in_stock``, ``brand``).
"""

from __future__ import annotations

from typing import Any

from django import template

from .. import registry, services
from ..pages import thumbnail_of
from ..results import SimilarHit, SimilarResult
from ..thumbnails import thumbnail_url

register = template.Library()


def _similar(obj: Any, limit: int, fallback: bool, filters: dict[str, Any]) -> SimilarResult:
    return services.similar_for_page(obj, limit=int(limit), fallback=fallback, **filters)


@register.simple_tag
def similar_products(obj: Any, limit: int = 8, fallback: bool = True, **filters: Any) -> list[SimilarHit]:
    """``{% similar_products product limit=8 same_category=True in_stock=True as items %}``

    ``items``: hits with ``object``, ``score`` and ``scores`` (per modality). Fallback hits
    (index not answering) have ``score`` 0 and empty ``scores``.
    """
    if obj is None or getattr(obj, "pk", None) is None:
        return []
    return list(_similar(obj, limit, fallback, filters))


@register.inclusion_tag("similarity/widget.html")
def similar_products_widget(
    obj: Any, limit: int = 8, title: str = "Similar products", thumb_size: int = 240, **filters: Any,
) -> dict[str, Any]:
    """``{% similar_products_widget product limit=8 %}``: a responsive strip of cards (title,
    thumbnail and price from the spec; override ``similarity/widget.html`` to change them)."""
    if obj is None or getattr(obj, "pk", None) is None:
        return {"cards": [], "title": title, "fallback": False}
    result = _similar(obj, limit, True, filters)
    return {
        "cards": services.widget_cards(result, thumb_size), "title": title, "fallback": not result.ok,
        "thumb_size": thumb_size, "product": obj,
        "fallback_title": registry.get_spec(type(obj)).fallback_title,
    }


@register.filter
def thumbnail(field_file: Any, size: int = 240) -> str:
    """``{{ image.image|thumbnail:480 }}``: URL of a cached, resized copy ("" when unusable)."""
    return thumbnail_url(field_file, int(size))


@register.simple_tag
def product_thumbnail(obj: Any, size: int = 240) -> str:
    """URL of a thumbnail of the spec's thumbnail source for ``obj`` ("" when there is none)."""
    return thumbnail_of(obj, size)
