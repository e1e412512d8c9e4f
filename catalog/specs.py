"""How the example shop's products are indexed (a shop with its own models writes one of these)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Prefetch
from django.template.defaultfilters import floatformat

from similarity.conf import get_settings
from similarity.specs import Filter, ImageSource, IndexSpec, PayloadType, Watch, truncate_words


def _products_in_category(category: Any) -> list[int]:
    # A rename changes the text only for specs that encode the category path; a move changes
    # every product's ancestor ids. Either way the payload must follow.
    return _products_below(category) if category.changed_fields() else []


def _products_below(category: Any) -> list[int]:
    """Every product in the category or below it (a delete sets their category to NULL)."""
    from .models import Product

    return list(Product.objects.filter(category_id__in=category.descendant_ids()).values_list("pk", flat=True))


def _products_below_any(categories: Any) -> list[int]:
    return sorted({pk for category in categories for pk in _products_below(category)})


def _product_of_image(image: Any) -> list[int]:
    return [image.product_id] if image.product_id else []


class ProductSpec(IndexSpec):
    """The one place that knows the example shop's fields: categories, stock, brands, SKUs, prices.

    Text = title, brand and description (the category path only in :class:`ProductSpecWithCategory`,
    so that judging similarity against the category tree stays honest)."""

    model = "catalog.Product"
    #: characters of the description that go into the text
    description_chars = 300
    filters = {
        # find_similar(p, same_category=True) = p's own category; =2 = the same ancestor at depth 2
        "same_category": Filter("category_ids", PayloadType.INTEGER, relative_to="category_path"),
        # search_text("...", category=5): products in category 5 or below it
        "category": Filter("category_ids", PayloadType.INTEGER),
        "in_stock": Filter("in_stock", PayloadType.BOOL),
        "brand": Filter("brand", PayloadType.KEYWORD),
    }
    payload_schema = {"price": PayloadType.FLOAT, "sku": PayloadType.KEYWORD}
    lookup_field = "sku"
    fallback_title = "More in this category"
    currency = "₹"
    watches = (
        Watch("catalog.ProductImage", _product_of_image),
        Watch("catalog.Category", _products_in_category, on_delete=_products_below, bulk=_products_below_any),
    )

    def get_queryset(self) -> Any:
        from .models import Product, ProductImage

        return Product.objects.select_related(
            "category", "category__parent", "category__parent__parent"
        ).prefetch_related(Prefetch("images", queryset=ProductImage.objects.order_by("position", "pk")))

    def get_text(self, obj: Any) -> str:
        limit = get_settings().max_text_chars
        parts = [obj.title]
        if obj.brand and obj.brand.lower() not in obj.title.lower():
            parts.append(obj.brand)
        if self.text_includes_taxonomy and obj.category_id:
            parts.append(obj.category.path)
        if obj.description:
            # The title again and only the head of the description: the encoder mean-pools its
            # tokens, so this weighs the title more than a long spec sheet. On flipkart-1050 it
            # lifts text p@10 from 0.766 to 0.770 and fused from 0.779 to 0.783, and encodes 2x
            # faster (docs/evaluation.md).
            parts += [obj.title, truncate_words(obj.description, self.description_chars)]
        return truncate_words(". ".join(p.strip() for p in parts if p and p.strip()), limit)

    def get_text_views(self, obj: Any) -> list[str]:
        # The title (what shoppers type resembles it) and the head of the description: two
        # descriptions of one product in different words (docs/training.md, text-only catalogs).
        return [obj.title, truncate_words(obj.description or "", self.description_chars)]

    def get_images(self, obj: Any) -> list[ImageSource]:
        sources = []
        for image in obj.images.all():
            if image.image:
                field = image.image
                sources.append(ImageSource(name=field.name, open=lambda f=field: f.storage.open(f.name, "rb")))
        return sources

    def get_payload(self, obj: Any) -> dict[str, Any]:
        path = [c.pk for c in obj.category.ancestors()] if obj.category_id else []
        return {
            "sku": obj.sku,
            "category_ids": path,
            "category_path": path,
            "brand": obj.brand or "",
            "price": float(obj.price) if obj.price is not None else None,
            "in_stock": bool(obj.in_stock),
            "parent": obj.parent_id,
        }

    def get_group(self, obj: Any) -> str:
        return self.object_key(obj.parent_id or obj.pk)

    # -- what pages show ----------------------------------------------------------------------
    def filter_queryset(self, queryset: Any, filters: dict[str, Any]) -> Any:
        if filters.get("in_stock"):
            queryset = queryset.filter(in_stock=True)
        if filters.get("brand"):
            queryset = queryset.filter(brand=filters["brand"])
        return queryset

    def get_fallback_queryset(self, obj: Any, filters: dict[str, Any]) -> Any:
        """Other products of the same category, newest first (in stock only, when asked)."""
        if obj.category_id is None:
            return None
        return self.filter_queryset(self.get_queryset().filter(category_id=obj.category_id), filters).order_by("-pk")

    def get_thumbnail(self, obj: Any) -> Any:
        first = next(iter(obj.images.all()), None)  # prefetched by get_queryset and the views
        return first.image if first is not None else None

    def get_title(self, obj: Any) -> str:
        return str(obj.title)

    def format_price(self, obj: Any) -> str:
        if obj.price is None:
            return ""
        return f"{self.currency}{floatformat(obj.price, '-2g')}"

    def get_taxonomy(self, obj: Any) -> list[str]:
        return [c.name for c in obj.category.ancestors()] if obj.category_id else []


    # -- what staff tools write and explain --------------------------------------------------
    #: prices within this ratio of each other are "a similar price"
    price_band = 1.25

    def apply_category(self, obj: Any, path: list[str]) -> None:
        from .importer import CategoryCache

        category = CategoryCache().get(tuple(path))
        if category is not None and category.pk != obj.category_id:
            obj.category = category
            obj.save(update_fields=["category", "updated_at"])

    def link_variants(self, parent: Any, variant: Any) -> None:
        root = parent.parent or parent  # variants hang off one parent, never a chain
        if variant.pk != root.pk and variant.parent_id != root.pk:
            variant.parent = root
            variant.save(update_fields=["parent", "updated_at"])

    def shared_attributes(self, a: Any, b: Any) -> list[str]:
        shared = []
        if a.brand and a.brand.strip().lower() == (b.brand or "").strip().lower():
            shared.append("Same brand")
        common = [x for x, y in zip(self.get_taxonomy(a), self.get_taxonomy(b), strict=False) if x == y]
        if common:
            shared.append(f"Both in {common[-1]}")
        if a.price and b.price and max(a.price, b.price) <= min(a.price, b.price) * Decimal(str(self.price_band)):
            shared.append("Similar price")
        return shared


class ProductSpecWithCategory(ProductSpec):
    text_includes_taxonomy = True
