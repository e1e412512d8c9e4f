"""Change capture: outbox rows in the transaction, one dispatch per commit, nothing on rollback."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import serializers
from django.db import transaction

from catalog.models import Category, Product
from similarity import services
from similarity.models import IndexState, PendingChange
from tests import factories

LABEL = "catalog.product"


def pending_ids(action: str = "index") -> set[int]:
    return {
        int(key) for key in
        PendingChange.objects.filter(processed_at__isnull=True, action=action).values_list("object_id", flat=True)
    }


@pytest.mark.django_db(transaction=True)
def test_one_transaction_of_many_products_queues_one_batch(dispatched):
    with transaction.atomic():
        products = [factories.product(f"Product {i}") for i in range(50)]
        for p in products[:10]:
            p.price = 99
            p.save()
        assert dispatched == [], "nothing is queued before commit"
    assert len(dispatched) == 1
    label, index_ids, remove_ids = dispatched[0]
    assert label == LABEL
    assert sorted(index_ids) == sorted(p.pk for p in products)
    assert remove_ids == []
    assert pending_ids() == {p.pk for p in products}, "the outbox holds them until indexed"
    statuses = set(IndexState.objects.filter(object_id__in=index_ids).values_list("modality", "status"))
    assert statuses == {("text", "pending"), ("image", "pending")}, "the admin sees them waiting"


@pytest.mark.django_db(transaction=True)
def test_rolled_back_transaction_queues_nothing(dispatched):
    with pytest.raises(RuntimeError), transaction.atomic():
        factories.product("Never committed")
        raise RuntimeError("boom")
    assert dispatched == []
    assert PendingChange.objects.count() == 0
    kept = factories.product("Committed later")
    assert dispatched == [(LABEL, [kept.pk], [])], "a stale buffer does not leak into the next commit"


@pytest.mark.django_db(transaction=True)
def test_rolled_back_savepoint_keeps_the_outer_changes(dispatched):
    with transaction.atomic():
        outer = factories.product("Outer")
        try:
            with transaction.atomic():
                factories.product("Inner, rolled back")
                raise RuntimeError
        except RuntimeError:
            pass
        second = factories.product("Outer again")
    assert len(dispatched) == 1
    assert {outer.pk, second.pk} <= set(dispatched[0][1])
    assert pending_ids() == {outer.pk, second.pk}


@pytest.mark.django_db(transaction=True)
def test_autocommit_saves_dispatch_each(dispatched):
    a = factories.product("A")
    b = factories.product("B")
    assert [call[1] for call in dispatched] == [[a.pk], [b.pk]]


@pytest.mark.django_db(transaction=True)
def test_delete_queues_a_removal(dispatched):
    p = factories.product("Doomed", image=factories.png_bytes())
    dispatched.clear()
    pk = p.pk
    p.delete()
    assert dispatched == [(LABEL, [], [pk])]
    assert pending_ids("remove") == {pk}


@pytest.mark.django_db(transaction=True)
def test_image_changes_reindex_their_product(dispatched):
    p = factories.product("With picture")
    dispatched.clear()
    picture = factories.add_image(p, factories.png_bytes())
    assert dispatched == [(LABEL, [p.pk], [])]
    dispatched.clear()
    picture.delete()
    assert dispatched == [(LABEL, [p.pk], [])]


@pytest.mark.django_db(transaction=True)
def test_category_rename_or_move_reindexes_products_below(dispatched):
    shoe = factories.product("Shoe", category_path="Fashion > Footwear > Shoes")
    factories.product("Hat", category_path="Fashion > Hats")
    other = factories.product("Pan", category_path="Kitchen")
    dispatched.clear()
    footwear = Category.objects.get(name="Footwear")
    footwear.save()
    assert dispatched == [], "saving an unchanged category queues nothing"
    footwear.name = "Shoes & Boots"
    footwear.save()
    assert dispatched == [(LABEL, [shoe.pk], [])]
    dispatched.clear()
    footwear.parent = Category.objects.get(name="Kitchen")
    footwear.save()
    assert dispatched == [(LABEL, [shoe.pk], [])]
    assert other.pk not in dispatched[0][1]


@pytest.mark.django_db(transaction=True)
def test_fixture_loading_is_skipped(dispatched):
    p = factories.product("From fixture")
    data = serializers.serialize("json", [p])
    dispatched.clear()
    PendingChange.objects.all().delete()
    for obj in serializers.deserialize("json", data):
        obj.save()  # raw=True, like loaddata
    assert dispatched == []
    assert PendingChange.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_broker_down_never_breaks_a_save(settings, caplog):
    settings.SIMILARITY = {**settings.SIMILARITY, "DISPATCHER": "tests.test_changes.broken_broker"}
    p = factories.product("Saved while the broker is down")
    assert Product.objects.filter(pk=p.pk).exists()
    assert pending_ids() == {p.pk}
    assert "stay pending" in caplog.text
    # Later, the pending change is picked up.
    settings.SIMILARITY = {**settings.SIMILARITY, "DISPATCHER": "similarity.tasks.dispatch"}
    report = services.process_pending()
    assert report.indexed == 1
    assert pending_ids() == set()
    assert IndexState.objects.get(object_id=p.pk, modality="text").status == "indexed"


def broken_broker(label, index_ids, remove_ids):
    from kombu.exceptions import OperationalError

    raise OperationalError("[Errno 111] Connection refused")


class HungBroker:
    """A local port that accepts connections and never answers (a broker that hangs)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.held: list[Any] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.held.append(conn)  # read nothing, answer nothing

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.server.close()


@pytest.mark.parametrize("broker", ["closed", "hung"])
def test_real_broker_down_or_hung_never_breaks_or_hangs_a_save(tmp_path, broker):
    """A process configured with a Redis broker that is down (closed port) or hung (accepts, never
    answers): the save commits within seconds and the change stays pending (a subprocess, so the
    real Celery app is configured from the environment)."""
    import os
    import subprocess
    import sys

    hung = HungBroker() if broker == "hung" else None
    port = hung.port if hung else 9
    env = {**os.environ, "VAR_DIR": str(tmp_path), "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0",
           "QDRANT_URL": "http://127.0.0.1:9", "DJANGO_SETTINGS_MODULE": "config.settings"}
    env.pop("DATABASE_URL", None)
    script = (
        "import time; from catalog.models import Product; from similarity.models import PendingChange;"
        "started = time.monotonic();"
        "p = Product.objects.create(sku='R1', title='Saved with the broker down');"
        "print('save took %.2f s' % (time.monotonic() - started));"
        "print('saved', Product.objects.filter(pk=p.pk).exists(),"
        " list(PendingChange.objects.filter(processed_at=None).values_list('object_id', flat=True)) == [str(p.pk)])"
    )
    manage = [sys.executable, "manage.py"]
    try:
        subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, timeout=120)
        done = subprocess.run([*manage, "shell", "-v", "0", "-c", script], env=env, capture_output=True,
                              text=True, timeout=120)
    finally:
        if hung:
            hung.close()
    assert done.returncode == 0, done.stderr
    assert "saved True True" in done.stdout
    assert "stay pending" in done.stderr
    took = float(done.stdout.split("save took ")[1].split()[0])
    print(f"broker {broker}: the save took {took:.2f} s")
    assert took < 15, f"a {broker} broker held the save for {took:.1f} s"


@pytest.mark.django_db(transaction=True)
def test_vector_store_down_never_breaks_a_save(settings, caplog):
    """Embedded mode runs the task after commit; if the store fails the change stays pending."""
    settings.SIMILARITY = {
        **settings.SIMILARITY,
        "INDEX": {"BACKEND": "similarity.index.qdrant.QdrantServerIndex", "URL": "http://127.0.0.1:9",
                  "TIMEOUT": 1},
    }
    p = factories.product("Saved while Qdrant is down")
    assert Product.objects.filter(pk=p.pk).exists()
    assert pending_ids() == {p.pk}
    assert "unreachable" in caplog.text
