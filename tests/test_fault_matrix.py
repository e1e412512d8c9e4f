"""The fault matrix: each scenario causes its fault for real, recovers the way an operator would,
and ends with `similarity_reconcile --check` reporting zero drift (it raises on any).

Runs on the test database of the run (PostgreSQL in CI, through DATABASE_URL); the worker-process
faults (a killed pool child) are in test_celery_worker.py, the second process on the embedded
index in test_edge_processes.py, a hung broker in test_changes.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from catalog.importer import import_catalog
from catalog.models import Category, Product
from similarity import registry
from similarity.models import PendingChange
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

DRIFT: dict[str, int] = {}


def no_drift() -> None:
    call_command("similarity_reconcile", "--check", "--json", "/dev/null")  # CommandError on drift


def drift_count() -> int:
    from similarity.reconcile import reconcile

    return reconcile().total


def test_rolled_back_transaction() -> None:
    factories.product("Kept")
    with pytest.raises(RuntimeError), transaction.atomic():
        factories.product("Never committed")
        raise RuntimeError
    no_drift()


def test_stock_sync_by_queryset_update_and_bulk_create() -> None:
    made = Product.objects.bulk_create([Product(sku=f"S{n}", title=f"Sock {n}") for n in range(5)])
    Product.objects.filter(pk__in=[p.pk for p in made[:3]]).update(in_stock=False, price=3)
    no_drift()


def test_category_deleted_under_its_products() -> None:
    factories.product("Shoe", category_path="Fashion > Footwear > Shoes")
    Category.objects.get(name="Footwear").delete()
    no_drift()


def test_raw_sql_and_replaced_image_bytes_are_found_and_repaired() -> None:
    lamp = factories.product("Desk lamp", image=factories.png_bytes((200, 200, 0)))
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Product._meta.db_table} SET title = %s WHERE id = %s", ["Brass lamp", lamp.pk])
    Path(lamp.images.get().image.path).write_bytes(factories.png_bytes((0, 0, 200)))
    assert drift_count() == 2  # one object: its text and its image bytes
    call_command("similarity_reconcile", "--fix")
    no_drift()


def test_broker_down_during_saves_then_pending(settings: Any) -> None:
    settings.SIMILARITY = {**settings.SIMILARITY, "DISPATCHER": "tests.test_changes.broken_broker"}
    made = [factories.product(f"Saved while the broker is down {n}") for n in range(3)]
    assert PendingChange.objects.filter(processed_at__isnull=True).count() == 3
    assert drift_count() == 3
    call_command("similarity_reindex", "--pending")
    no_drift()
    assert made


def test_vector_store_down_during_a_save_then_pending(settings: Any) -> None:
    factories.product("Before")
    edge = settings.SIMILARITY["INDEX"]
    settings.SIMILARITY = {**settings.SIMILARITY, "INDEX": {
        "BACKEND": "similarity.index.qdrant.QdrantServerIndex", "URL": "http://127.0.0.1:9", "TIMEOUT": 1}}
    factories.product("Saved while Qdrant is down")  # the save commits; the task fails, the row stays
    settings.SIMILARITY = {**settings.SIMILARITY, "INDEX": edge}
    call_command("similarity_reindex", "--pending")
    no_drift()


def test_product_deleted_during_a_rebuild(dispatched: Any) -> None:
    products = [factories.product(f"Mug {n}") for n in range(6)]
    call_command("similarity_reindex", "--all", verbosity=0)
    import similarity.rebuild as rebuild

    real = rebuild.start_indexing
    deleted: list[int] = []

    def deleting(ids: Any, **kwargs: Any) -> Any:
        if not deleted:
            deleted.append(products[-1].pk)
            products[-1].delete()  # committed; the live path is only recorded (not run)
        return real(ids, **kwargs)

    rebuild.start_indexing = deleting
    try:
        call_command("similarity_reindex", "--all", "--restart", verbosity=0)
    finally:
        rebuild.start_indexing = real
    spec = registry.get_spec()
    assert registry.vector_index().retrieve([spec.point_id(deleted[0])]) == {}
    no_drift()


def test_change_committed_at_the_switch(dispatched: Any) -> None:
    lamp = factories.product("Lamp")
    call_command("similarity_reindex", "--all", verbosity=0)
    import similarity.rebuild as rebuild

    real = rebuild._hold_off_writers

    def edit_then_hold(checkpoint: Any) -> None:
        Product.objects.filter(pk=lamp.pk).update(title="Lamp, renamed at the switch", in_stock=False)
        real(checkpoint)

    rebuild._hold_off_writers = edit_then_hold
    try:
        call_command("similarity_reindex", "--all", "--restart", verbosity=0)
    finally:
        rebuild._hold_off_writers = real
    no_drift()


def test_model_change_is_found_and_reencoded() -> None:
    mug = factories.product("Mug")
    spec, index = registry.get_spec(), registry.vector_index()
    point_id = spec.point_id(mug.pk)
    payload = index.retrieve([point_id])[point_id].payload
    index.set_payload(point_id, {**payload, "model_versions": {"text": "all-MiniLM-L6-v2@older"}})
    assert drift_count() == 1
    call_command("similarity_reconcile", "--fix")
    no_drift()


def test_bad_import_rows_cost_only_themselves(tmp_path: Path) -> None:
    csv_path = tmp_path / "catalog.csv"
    csv_path.write_text(
        "sku,title,description,brand,category,price,image\n"
        "G1,Good lamp,,,Home > Lamps,10.00,\n"
        "B1,Bad price,,,Home > Lamps,1e309,\n"
        f"B2,{'x' * 100_000},,,Home,1.00,\n"
        "G2,Good chair,,,Home > Chairs,20.00,missing.jpg\n",
        encoding="utf-8",
    )
    report = import_catalog(csv_path)
    assert report.imported == 2
    no_drift()
