"""``{% load similarity %}``: similar products for any page, as data or as a strip of cards.

Both tags are adapters over :func:`similarity.services.similar_products`, which caches, never
encodes and never raises: a product that is not indexed yet, or an index that cannot be
reached, gives other products of the same category and a logged warning.
"""

from __future__ import annotations

from typing import Any

from django import template

from .. import services
from ..results import SimilarHit
from ..thumbnails import thumbnail_url

register = template.Library()


def _similar(
    product: Any, limit: int, same_category: int | bool | None, in_stock: bool, fallback: bool,
) -> Any:
    return services.similar_products(
        product, limit=int(limit), same_category=same_category, in_stock=bool(in_stock),
        fallback=fallback,
    )


@register.simple_tag
def similar_products(
    product: Any, limit: int = 8, same_category: int | bool | None = None, in_stock: bool = False,
    fallback: bool = True,
) -> list[SimilarHit]:
    """``{% similar_products product limit=8 same_category=True in_stock=True as items %}``

    ``items``: hits with ``object``, ``score`` and ``scores`` (per modality). Fallback hits
    (same category, index not answering) have ``score`` 0 and empty ``scores``.
    """
    if product is None or getattr(product, "pk", None) is None:
        return []
    return list(_similar(product, limit, same_category, in_stock, fallback))


@register.inclusion_tag("similarity/widget.html")
def similar_products_widget(
    product: Any, limit: int = 8, same_category: int | bool | None = None, in_stock: bool = False,
    title: str = "Similar products", thumb_size: int = 240,
) -> dict[str, Any]:
    """``{% similar_products_widget product limit=8 %}``: a responsive strip of product cards."""
    if product is None or getattr(product, "pk", None) is None:
        return {"cards": [], "title": title, "fallback": False}
    result = _similar(product, limit, same_category, in_stock, True)
    cards = [
        {
            "url": hit.object.get_absolute_url(),
            "title": str(getattr(hit.object, "title", hit.object)),
            "price": getattr(hit.object, "price", None),
            "thumbnail": product_thumbnail(hit.object, thumb_size),
            "score": hit.score,
            "pk": hit.pk,
        }
        for hit in result
    ]
    return {
        "cards": cards, "title": title, "fallback": not result.ok, "thumb_size": thumb_size,
        "product": product,
    }


@register.filter
def thumbnail(field_file: Any, size: int = 240) -> str:
    """``{{ image.image|thumbnail:480 }}``: URL of a cached, resized copy ("" when unusable)."""
    return thumbnail_url(field_file, int(size))


@register.simple_tag
def product_thumbnail(product: Any, size: int = 240) -> str:
    """URL of a thumbnail of the product's first image, from its (prefetched) ``images``."""
    images = getattr(product, "images", None)
    if images is None:
        return ""
    first = next(iter(images.all()), None)
    return thumbnail_url(first.image, int(size)) if first is not None else ""
