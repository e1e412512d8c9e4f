"""Storefront pages (minimal; the widget and search arrive with issue #3)."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from similarity import services

from .models import Category, Product


def home(request: HttpRequest) -> HttpResponse:
    roots = Category.objects.filter(parent=None)
    return render(request, "catalog/home.html", {"categories": roots})


def category(request: HttpRequest, pk: int) -> HttpResponse:
    node = get_object_or_404(Category, pk=pk)
    products = Product.objects.filter(category_id__in=node.descendant_ids()).prefetch_related("images")
    page = Paginator(products, 24).get_page(request.GET.get("page"))
    return render(request, "catalog/category.html", {"category": node, "page": page})


def product_detail(request: HttpRequest, pk: int) -> HttpResponse:
    product = get_object_or_404(Product.objects.prefetch_related("images"), pk=pk)
    similar = services.find_similar(product, limit=8)
    return render(request, "catalog/product.html", {"product": product, "similar": similar})
