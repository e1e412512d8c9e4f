"""Storefront pages: categories, product pages with the similar-products widget, and search.

Everything about similarity goes through ``similarity.services`` (the widget through its
template tag); these views only read the catalog.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from similarity import services

from .models import Category, Product, ProductImage

PAGE_SIZE = 24
SEARCH_LIMIT = 24


def _products() -> QuerySet[Product]:
    """Products with what a card or a page shows: the category chain and the images."""
    return Product.objects.select_related(
        "category", "category__parent", "category__parent__parent", "category__parent__parent__parent"
    ).prefetch_related(Prefetch("images", queryset=ProductImage.objects.order_by("position", "pk")))


def home(request: HttpRequest) -> HttpResponse:
    roots = Category.objects.filter(parent=None).prefetch_related("children")
    return render(request, "catalog/home.html", {"categories": roots})


def category(request: HttpRequest, pk: int) -> HttpResponse:
    node = get_object_or_404(Category.objects.select_related("parent", "parent__parent"), pk=pk)
    products = _products().filter(category_id__in=node.descendant_ids()).order_by("title", "pk")
    page = Paginator(products, PAGE_SIZE).get_page(request.GET.get("page"))
    children = node.children.all()
    return render(request, "catalog/category.html", {"category": node, "page": page, "children": children})


def product_detail(request: HttpRequest, pk: int) -> HttpResponse:
    product = get_object_or_404(_products(), pk=pk)
    services.record_view(request, product)  # session / views cache, no cookie of ours (recommended_for_you)
    return render(request, "catalog/product.html", {"product": product})


def search(request: HttpRequest) -> HttpResponse:
    """Semantic search: the typed words against the products' text vectors."""
    query = " ".join(request.GET.get("q", "").split())[:200]
    result = services.search_text(query, limit=SEARCH_LIMIT) if query else None
    products = []
    if result is not None and result.ok:
        # Reload with images for the cards, keeping the ranking.
        loaded = _products().in_bulk([hit.pk for hit in result])
        products = [loaded[hit.pk] for hit in result if hit.pk in loaded]
    return render(
        request, "catalog/search.html",
        {"query": query, "result": result, "products": products,
         "unavailable": result is not None and not result.ok},
    )
