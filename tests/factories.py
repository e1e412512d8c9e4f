"""Test data builders, in one place."""

from __future__ import annotations

import csv
import io
import itertools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.core.files.base import ContentFile
from PIL import Image

from catalog.importer import CategoryCache
from catalog.models import Category, Product, ProductImage

_seq = itertools.count(1)


def category(path: str) -> Category:
    result = CategoryCache().get(path)
    assert result is not None
    return result


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def product(
    title: str = "", *, sku: str = "", description: str = "", brand: str = "",
    category_path: str = "", price: str | Decimal | None = "10.00", in_stock: bool = True,
    parent: Product | None = None, image: bytes | Path | None = None, image_name: str = "image.png",
    **extra: Any,
) -> Product:
    n = next(_seq)
    obj = Product.objects.create(
        sku=sku or f"SKU-{n}", title=title or f"Product {n}", description=description, brand=brand,
        category=category(category_path) if category_path else None,
        price=Decimal(price) if price is not None else None, in_stock=in_stock, parent=parent, **extra,
    )
    if image is not None:
        add_image(obj, image, image_name)
    return obj


def add_image(obj: Product, image: bytes | Path, name: str = "image.png", position: int = 0) -> ProductImage:
    data = image.read_bytes() if isinstance(image, Path) else image
    if isinstance(image, Path):
        name = image.name
    picture = ProductImage(product=obj, position=position)
    picture.image.save(name, ContentFile(data), save=False)
    picture.save()
    return picture


#: the canonical catalog CSV header (catalog.importer)
CSV_HEADER = ["sku", "title", "description", "brand", "category", "price", "image"]


def write_csv(folder: Path, rows: list[dict[str, str]], *, encoding: str = "utf-8",
              name: str = "catalog.csv") -> Path:
    """A catalog CSV in ``folder`` (missing columns left empty)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with open(path, "w", newline="", encoding=encoding) as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_HEADER)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in CSV_HEADER})
    return path


def catalog_subset(dataset: Path, rows: list[dict[str, str]], folder: Path, wanted: dict[str, int],
                   name: str = "subset.csv") -> Path:
    """A catalog CSV of the first rows of ``rows`` (a dataset's ``catalog.csv``) in each category
    of ``wanted`` (``{"Top > Sub": how many}``, matched on the first two levels), with image
    paths made absolute under ``dataset``."""
    left = dict(wanted)
    chosen: list[dict[str, str]] = []
    for row in rows:
        key = " > ".join(row["category"].split(" > ")[:2])
        if left.get(key, 0) > 0:
            left[key] -= 1
            chosen.append({**row, "image": str(dataset / row["image"])})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return path


@contextmanager
def private_redis_cache(url: str, name: str) -> Iterator[dict[str, Any]]:
    """A ``CACHES`` entry on the real Redis at ``url`` under a key prefix of its own (the test is
    skipped when Redis is not reachable); only that prefix's keys are deleted afterwards."""
    import pytest
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"Redis is not reachable at {url}")
    prefix = f"{name}-test-{uuid.uuid4().hex[:8]}"
    try:
        yield {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url, "KEY_PREFIX": prefix}
    finally:
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
