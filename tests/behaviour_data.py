"""Small, real behaviour fixtures: slices of ../shared/datasets/online-retail (never copied into
the repo): the most sold products of its first weeks and their real baskets."""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings

from similarity import services

from . import factories

RETAIL = Path(django_settings.BASE_DIR).parent / "shared" / "datasets" / "online-retail"
TRAIN_LINES = 30000  # 2010-12-01 .. 2010-12-14
EVAL_LINES = 12000  # the lines right after
ITEMS = 60
HEADER = ["invoice", "sku", "quantity", "time", "unit_price", "customer", "country"]
COLUMNS = "order=invoice,visitor=customer,price=unit_price"


def _lines(start: int, count: int) -> list[dict[str, str]]:
    with open(RETAIL / "transactions.csv", newline="", encoding="utf-8") as fh:
        return list(itertools.islice(csv.DictReader(fh), start, start + count))


def top_skus(rows: list[dict[str, str]], n: int = ITEMS) -> list[str]:
    return [sku for sku, _n in Counter(r["sku"] for r in rows).most_common(n)]


def titles() -> dict[str, str]:
    with open(RETAIL / "catalog.csv", newline="", encoding="utf-8") as fh:
        return {row["sku"]: row["title"] for row in csv.DictReader(fh)}


def write(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows({k: r[k] for k in HEADER} for r in rows)
    return path


def build(tmp_path: Path, *, cold: int = 2, index: bool = True) -> dict[str, Any]:
    """Products for the top skus (and ``cold`` more without any event), indexed by text; the
    training and evaluation slices as files in the dataset's own format."""
    train_rows = _lines(0, TRAIN_LINES)
    skus = top_skus(train_rows)
    names = titles()
    sold = {r["sku"] for r in train_rows}
    cold_skus = [s for s in names if s not in sold][:cold]
    products = {}
    for n, sku in enumerate(skus + cold_skus):
        path = "Gifts > Home" if n % 2 == 0 else "Gifts > Party"
        products[sku] = factories.product(names.get(sku, sku).title(), sku=sku, category_path=path)
    if index:
        services.index_products([p.pk for p in products.values()])
    wanted = set(skus)
    train = write(tmp_path / "train.csv", [r for r in train_rows if r["sku"] in wanted])
    later = write(tmp_path / "later.csv", [r for r in _lines(TRAIN_LINES, EVAL_LINES) if r["sku"] in wanted])
    return {"products": products, "skus": skus, "cold": cold_skus, "train": train, "later": later}
