"""Load the canonical catalog CSV: ``sku,title,description,brand,category,price,image``."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils.text import slugify

from .models import Category, Product, ProductImage

REQUIRED_COLUMNS = ("sku", "title", "description", "brand", "category", "price", "image")


class CatalogFormatError(ValueError):
    """The file is not in the canonical format at all (not a row-level problem)."""


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged


@dataclass
class _Row:
    number: int
    sku: str
    title: str
    description: str
    brand: str
    category: str
    price: Decimal | None
    image: tuple[str, bytes] | None


def _parse(number: int, raw: dict[str, str], base: Path) -> _Row:
    sku = (raw.get("sku") or "").strip()
    title = (raw.get("title") or "").strip()
    if not sku:
        raise ValueError("missing sku")
    if not title:
        raise ValueError("missing title")
    price_text = (raw.get("price") or "").strip()
    price = None
    if price_text:
        try:
            price = Decimal(price_text)
        except InvalidOperation:
            raise ValueError(f"bad price {price_text!r}") from None
        if not price.is_finite() or price < 0:
            raise ValueError(f"bad price {price_text!r}")
    image = None
    image_text = (raw.get("image") or "").strip()
    if image_text:
        path = (base / image_text).resolve()
        try:
            image = (path.name, path.read_bytes())
        except OSError as exc:
            raise ValueError(f"unreadable image {image_text!r} ({exc.strerror or exc})") from None
    return _Row(number, sku, title, (raw.get("description") or "").strip(), (raw.get("brand") or "").strip(),
                (raw.get("category") or "").strip(), price, image)


class CategoryCache:
    """Creates category paths (``A > B > C``) once per import."""

    def __init__(self) -> None:
        self._by_path: dict[tuple[str, ...], Category] = {}

    def get(self, path_text: str) -> Category | None:
        names = tuple(part.strip() for part in path_text.split(">") if part.strip())
        if not names:
            return None
        parent: Category | None = None
        for depth in range(1, len(names) + 1):
            key = names[:depth]
            if key not in self._by_path:
                name = names[depth - 1]
                slug = slugify(name)[:200] or "category"
                category, _ = Category.objects.get_or_create(parent=parent, slug=slug, defaults={"name": name})
                self._by_path[key] = category
            parent = self._by_path[key]
        return parent


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise CatalogFormatError(f"{path} lacks the columns {', '.join(missing)}; the header must be "
                                     f"{','.join(REQUIRED_COLUMNS)}")
        yield from enumerate(reader, start=2)  # row 1 is the header


def import_catalog(
    path: str | Path, *, batch_size: int = 200, progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Create or update products by sku; one transaction (and one indexing batch) per batch."""
    path = Path(path)
    if not path.is_file():
        raise CatalogFormatError(f"{path} does not exist")
    base = path.parent
    report = ImportReport()
    categories = CategoryCache()
    batch: list[tuple[int, dict[str, str]]] = []
    for item in _rows(path):
        batch.append(item)
        if len(batch) >= batch_size:
            _import_batch(batch, base, categories, report)
            if progress:
                progress(len(batch))
            batch = []
    if batch:
        _import_batch(batch, base, categories, report)
        if progress:
            progress(len(batch))
    return report


def _import_batch(batch: list[tuple[int, dict[str, str]]], base: Path, categories: CategoryCache,
                  report: ImportReport) -> None:
    parsed: list[_Row] = []
    for number, raw in batch:
        try:
            parsed.append(_parse(number, raw, base))
        except ValueError as exc:
            report.errors.append((number, str(exc)))
    with transaction.atomic():
        existing = {p.sku: p for p in Product.objects.filter(sku__in=[r.sku for r in parsed])
                    .prefetch_related("images")}
        for row in parsed:
            _upsert(row, existing.get(row.sku), categories, report)


def _upsert(row: _Row, product: Product | None, categories: CategoryCache, report: ImportReport) -> None:
    category = categories.get(row.category)
    values: dict[str, Any] = {
        "title": row.title, "description": row.description, "brand": row.brand,
        "category": category, "price": row.price,
    }
    if product is None:
        product = Product.objects.create(sku=row.sku, **values)
        _sync_image(product, row.image)
        report.created += 1
        return
    changed = any(getattr(product, key) != value for key, value in values.items())
    if changed:
        for key, value in values.items():
            setattr(product, key, value)
        product.save()
    image_changed = _sync_image(product, row.image)
    if changed or image_changed:
        report.updated += 1
    else:
        report.unchanged += 1


def _sync_image(product: Product, image: tuple[str, bytes] | None) -> bool:
    current = list(product.images.all())
    if image is None:
        if current:
            for old in current:
                old.image.delete(save=False)
                old.delete()
            return True
        return False
    name, data = image
    digest = hashlib.sha256(data).hexdigest()
    if len(current) == 1:
        try:
            with current[0].image.open("rb") as fh:
                if hashlib.sha256(fh.read()).hexdigest() == digest:
                    return False
        except OSError:
            pass
    for old in current:
        old.image.delete(save=False)
        old.delete()
    picture = ProductImage(product=product, position=0)
    picture.image.save(name, ContentFile(data), save=False)
    picture.save()
    return True
