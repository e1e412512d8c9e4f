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
    obj: Any, limit: int = 8, title: str = "Similar products", thumb_size: int = 240, why: bool = False,
    **filters: Any,
) -> dict[str, Any]:
    """``{% similar_products_widget product limit=8 %}``: a responsive strip of cards (title,
    thumbnail and price from the spec; override ``similarity/widget.html`` to change them).
    ``why=True``: each card's tooltip says why it is shown ("Same brand · similar look")."""
    if obj is None or getattr(obj, "pk", None) is None:
        return {"cards": [], "title": title, "fallback": False}
    result = _similar(obj, limit, True, filters)
    cards = services.widget_cards(result, thumb_size)
    if why and result.ok:
        for card, explanation in zip(cards, services.explain_hits(obj, list(result)), strict=True):
            card["why"] = explanation.summary
    return {
        "cards": cards, "title": title, "fallback": not result.ok,
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


# -- behaviour widgets (docs/behaviour.md): adapters over similarity.behaviour.widgets ---------
@register.inclusion_tag("similarity/behaviour_widget.html")
def bought_together(obj: Any, limit: int = 8, title: str = "Bought together", thumb_size: int = 240,
                    placement: str = "product", **filters: Any) -> dict[str, Any]:
    """``{% bought_together product %}``: complements of a product (never itself or its variants),
    content neighbours while it has no history."""
    from ..behaviour import widgets

    result = widgets.bought_together_hits(obj, int(limit), filters)
    return widgets.context("bought_together", result, title, thumb_size, placement)


@register.inclusion_tag("similarity/behaviour_widget.html")
def bought_together_cart(items: Any, limit: int = 8, title: str = "Goes well with your cart",
                         thumb_size: int = 240, placement: str = "cart", **filters: Any) -> dict[str, Any]:
    """``{% bought_together_cart cart.items %}``: complements of a cart (objects, or lines with
    ``.object``), never the items already in it."""
    from ..behaviour import widgets

    result = widgets.cart_hits(items, int(limit), filters)
    return widgets.context("bought_together_cart", result, title, thumb_size, placement)


@register.inclusion_tag("similarity/behaviour_widget.html", takes_context=True)
def recommended_for_you(context: Any, current: Any = None, limit: int = 8, title: str = "Recommended for you",
                        thumb_size: int = 240, placement: str = "", model: str | None = None,
                        **filters: Any) -> dict[str, Any]:
    """``{% recommended_for_you current=product %}``: from the visitor's recent views (session),
    recency-weighted, never ``current``; trending for a visitor with no views yet."""
    from ..behaviour import widgets

    result = widgets.recommended_hits(context.get("request"), current, int(limit), filters, model=model)
    return widgets.context("recommended_for_you", result, title, thumb_size, placement or "page")


@register.inclusion_tag("similarity/behaviour_widget.html")
def trending(category: Any = None, limit: int = 8, title: str = "Trending now", thumb_size: int = 240,
             placement: str = "", model: str | None = None, **filters: Any) -> dict[str, Any]:
    """``{% trending %}`` / ``{% trending category.pk %}``: most bought and viewed lately (time
    decay); a category goes to the spec's ``category`` filter."""
    from ..behaviour import widgets

    if category not in (None, ""):
        filters["category"] = getattr(category, "pk", category)
    result = widgets.trending_hits(int(limit), filters, model=model)
    return widgets.context("trending", result, title, thumb_size, placement or "page")
