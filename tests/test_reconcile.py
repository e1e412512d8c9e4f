"""similarity_reconcile: every kind of drift, caused for real behind the app's back, is found by
--check (exit 1, JSON), repaired by --fix through the normal tasks, and shown in the admin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from catalog.models import Product
from similarity import registry, tasks
from similarity.models import PendingChange, ReconcileRun
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def reconcile(*args: str) -> tuple[int, str]:
    from io import StringIO

    out = StringIO()
    try:
        call_command("similarity_reconcile", *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def sql(statement: str, *params: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement.format(table=Product._meta.db_table), list(params))


@pytest.fixture
def shop() -> dict[str, Product]:
    return {
        "watch": factories.product("Steel wrist watch", price="100.00", image=factories.png_bytes((90, 90, 90))),
        "towel": factories.product("Cotton bath towel", price="5.00"),
        "lamp": factories.product("Desk lamp", price="20.00"),
        "mug": factories.product("Ceramic mug", price="8.00"),
        "chair": factories.product("Office chair", price="80.00"),
        "gone": factories.product("Discontinued kettle"),
    }


def test_no_drift_after_normal_saves(shop: dict[str, Product]) -> None:
    code, out = reconcile("--check")
    assert code == 0 and "No drift" in out
    run = ReconcileRun.objects.get()
    assert (run.checked, run.points, run.drift) == (6, 6, 0)


def test_every_kind_of_drift_is_found_then_fixed(shop: dict[str, Product], tmp_path: Path) -> None:
    spec = registry.get_spec()
    index = registry.vector_index()
    key = {name: str(p.pk) for name, p in shop.items()}
    # Behind the app's back:
    index.delete([spec.point_id(shop["towel"].pk)])                                    # missing
    sql("DELETE FROM {table} WHERE id = %s", shop["gone"].pk)                          # ghost
    sql("UPDATE {table} SET title = %s WHERE id = %s", "Brass desk lamp", shop["lamp"].pk)  # stale text
    sql("UPDATE {table} SET price = 9, in_stock = %s WHERE id = %s", False, shop["mug"].pk)  # stale payload
    picture = shop["watch"].images.get().image
    Path(picture.path).write_bytes(factories.png_bytes((10, 200, 10)))                 # stale image bytes
    chair_id = spec.point_id(shop["chair"].pk)
    old = index.retrieve([chair_id])[chair_id].payload
    index.set_payload(chair_id, {**old, "model_versions": {"text": "an-old-model@123"}})  # old model

    report = tmp_path / "drift.json"
    code, out = reconcile("--check", "--json", str(report))
    assert code == 1 and "6 objects differ from the index" in out
    drift = json.loads(report.read_text())[0]
    assert drift["counts"] == {"missing": 1, "ghost": 1, "stale_text": 1, "stale_image": 1, "stale_payload": 1,
                               "stale_model": 1}
    assert drift["keys"]["missing"] == [key["towel"]] and drift["keys"]["ghost"] == [key["gone"]]
    assert drift["keys"]["stale_text"] == [key["lamp"]] and drift["keys"]["stale_payload"] == [key["mug"]]
    assert drift["keys"]["stale_image"] == [key["watch"]] and drift["keys"]["stale_model"] == [key["chair"]]

    code, out = reconcile("--fix")
    assert code == 0 and "6 objects queued for repair" in out
    assert not PendingChange.objects.filter(processed_at__isnull=True).exists(), "repaired by the normal tasks"
    code, out = reconcile("--check")
    assert code == 0 and "No drift" in out, out
    assert index.retrieve([spec.point_id(shop["gone"].pk)]) == {}
    assert index.retrieve([spec.point_id(shop["mug"].pk)])[spec.point_id(shop["mug"].pk)].payload["in_stock"] is False


def test_the_periodic_task_requeues_and_repairs(shop: dict[str, Product]) -> None:
    sql("UPDATE {table} SET title = %s WHERE id = %s", "Brass desk lamp", shop["lamp"].pk)
    assert tasks.reconcile.apply().get() == {"catalog.product": {
        "missing": 0, "ghost": 0, "stale_text": 1, "stale_image": 0, "stale_payload": 0, "stale_model": 0}}
    assert reconcile("--check")[0] == 0


def test_the_admin_health_page_shows_the_last_result(shop: dict[str, Product], admin_client: Any) -> None:
    html = admin_client.get("/admin/similarity/indexstate/health/").content.decode()
    assert "Never run" in html
    sql("UPDATE {table} SET price = 1 WHERE id = %s", shop["mug"].pk)
    reconcile("--check")
    html = admin_client.get("/admin/similarity/indexstate/health/").content.decode()
    assert 'data-drift="1"' in html and "stale_payload 1" in html


def test_pending_enqueue_with_the_broker_down_is_one_clean_line(shop: dict[str, Product], settings: Any) -> None:
    settings.SIMILARITY = {**settings.SIMILARITY, "DISPATCHER": "tests.test_changes.broken_broker"}
    factories.product("Saved while the broker is down")
    with pytest.raises(CommandError, match="could not hand 1 changes to the task queue .* Is the broker running"):
        call_command("similarity_reindex", "--pending", "--enqueue")
    assert PendingChange.objects.filter(processed_at__isnull=True).count() == 1
