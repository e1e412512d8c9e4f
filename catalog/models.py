"""The example shop: a category tree, products (with variants) and their images."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.urls import reverse

from similarity.managers import IndexedManager


class Category(models.Model):
    parent = models.ForeignKey(
        "self", null=True, blank=True, related_name="children", on_delete=models.CASCADE
    )
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=220)

    # bulk writes (update, bulk_create, bulk_update) reach the similarity index like saves
    objects = IndexedManager()

    class Meta:
        verbose_name_plural = "categories"
        constraints = [models.UniqueConstraint(fields=["parent", "slug"], name="uniq_category_slug")]
        ordering = ["name"]

    def __str__(self) -> str:
        return " > ".join(c.name for c in self.ancestors())

    def get_absolute_url(self) -> str:
        return reverse("catalog:category", args=[self.pk])

    @classmethod
    def from_db(cls, db: Any, field_names: Any, values: Any, **kwargs: Any) -> Category:  # type: ignore[override]
        instance = super().from_db(db, field_names, values, **kwargs)
        # Remember what was loaded, so a save can tell whether products' text/paths changed.
        instance._loaded = (instance.__dict__.get("name"), instance.__dict__.get("parent_id"))  # type: ignore[attr-defined]
        return instance

    def changed_fields(self) -> set[str]:
        loaded = getattr(self, "_loaded", None)
        if loaded is None:
            return {"name", "parent"}
        name, parent_id = loaded
        return {f for f, old, new in (("name", name, self.name), ("parent", parent_id, self.parent_id)) if old != new}

    def ancestors(self) -> list[Category]:
        """Root first, self last."""
        chain: list[Category] = []
        node: Category | None = self
        seen = set()
        while node is not None and node.pk not in seen:
            seen.add(node.pk)
            chain.append(node)
            node = node.parent
        return chain[::-1]

    def descendant_ids(self) -> list[int]:
        ids, frontier = [self.pk], [self.pk]
        while frontier:
            frontier = list(Category.objects.filter(parent_id__in=frontier).values_list("pk", flat=True))
            ids += frontier
        return ids

    @property
    def path(self) -> str:
        return str(self)


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    brand = models.CharField(max_length=120, blank=True, db_index=True)
    category = models.ForeignKey(
        Category, null=True, blank=True, related_name="products", on_delete=models.SET_NULL
    )
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    in_stock = models.BooleanField(default=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, related_name="variants", on_delete=models.CASCADE,
        help_text="The parent product when this is a variant (size, colour...).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = IndexedManager()

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.title} ({self.sku})"

    def get_absolute_url(self) -> str:
        return reverse("catalog:product", args=[self.pk])


def product_image_path(instance: ProductImage, filename: str) -> str:
    return f"products/{instance.product.sku}/{filename}"


class ProductImage(models.Model):
    product = models.ForeignKey(Product, related_name="images", on_delete=models.CASCADE)
    image = models.ImageField(upload_to=product_image_path, max_length=300)
    position = models.PositiveIntegerField(default=0)

    objects = IndexedManager()

    class Meta:
        ordering = ["position", "pk"]

    def __str__(self) -> str:
        return f"{self.product.sku} #{self.position}"
