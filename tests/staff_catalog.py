"""A small real catalog for the staff-tool tests: flipkart-1050 rows imported through the real
importer (the commit indexes them with the real encoders into the test's Qdrant Edge shard)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache

from catalog.importer import import_catalog
from catalog.models import Product
from similarity import merchandising
from similarity.models import IndexState, Status


def pick(rows: list[dict[str, str]], tops: dict[str, int]) -> list[dict[str, str]]:
    """The first ``n`` rows with a photo of each top-level category in ``tops``."""
    out: list[dict[str, str]] = []
    for top, n in tops.items():
        out += [r for r in rows if r["image"] and r["category"].split(" > ")[0] == top][:n]
    return out


def import_rows(rows: list[dict[str, str]], folder: Path, image_root: Path, name: str = "subset.csv") -> int:
    """Import ``rows`` (image paths relative to ``image_root``); every product gets indexed."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "image": str(image_root / row["image"])})
    before = IndexState.objects.filter(modality="text", status=Status.INDEXED).count()
    report = import_catalog(path, image_roots=[image_root])
    assert report.imported == len(rows), report.errors
    indexed = IndexState.objects.filter(modality="text", status=Status.INDEXED).count() - before
    assert indexed == len(rows), "the import's commit should have indexed every product"
    return len(rows)


def product(sku: str) -> Any:
    return Product.objects.select_related("category").get(sku=sku)


@pytest.fixture(autouse=True)
def fresh_merchandising() -> Iterator[None]:
    """The merchandising version lives in the database, which each test empties (a new database
    starts a new token), and, with a shared cache, in the cache, which outlives a test: dropped
    around each test, so no pin or rule of one test reaches another."""
    cache.delete(merchandising.VERSION_KEY)
    yield
    cache.delete(merchandising.VERSION_KEY)
