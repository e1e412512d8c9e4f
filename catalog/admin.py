from __future__ import annotations

from django.contrib import admin

from similarity.admin import IndexStatusFilter, SimilarityAdminMixin

from .models import Category, Product, ProductImage


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["__str__", "slug"]
    search_fields = ["name"]
    prepopulated_fields = {"slug": ["name"]}
    autocomplete_fields = ["parent"]


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    extra = 1


@admin.register(Product)
class ProductAdmin(SimilarityAdminMixin, admin.ModelAdmin):
    list_display = ["sku", "title", "brand", "category", "price", "in_stock"]
    list_filter = ["in_stock", IndexStatusFilter]
    search_fields = ["sku", "title", "brand"]
    autocomplete_fields = ["category", "parent"]
    inlines = [ProductImageInline]
    list_select_related = ["category", "category__parent", "category__parent__parent"]
