"""Celery tasks: thin adapters, routed to the similarity queue, retried while the store is down."""

from __future__ import annotations

import pytest
from celery.exceptions import Retry

from similarity import tasks
from similarity.exceptions import IndexUnavailable
from similarity.models import IndexState, PendingChange
from tests import factories
from workers.celery import app


def test_tasks_are_routed_acked_late_and_retried():
    for task in (tasks.index_products, tasks.remove_products):
        assert task.acks_late is True
        assert IndexUnavailable in task.autoretry_for
        assert task.retry_backoff and task.max_retries == 8
        queue = app.amqp.router.route({}, task.name)["queue"].name
        assert queue == "similarity"


@pytest.mark.django_db(transaction=True)
def test_index_task_asks_for_a_retry_while_qdrant_is_down_and_the_change_stays_pending(
    dispatched, settings, monkeypatch
):
    p = factories.product("Waiting for Qdrant")
    settings.SIMILARITY = {**settings.SIMILARITY, "INDEX": {
        "BACKEND": "similarity.index.qdrant.QdrantServerIndex", "URL": "http://127.0.0.1:9", "TIMEOUT": 1}}
    attempts = []
    real = tasks.services.index_products

    def counting(ids, **kwargs):
        attempts.append(ids)
        return real(ids, **kwargs)

    monkeypatch.setattr(tasks.services, "index_products", counting)
    # Run eagerly, the task asks Celery for a retry (a worker would re-run it with backoff).
    with pytest.raises(Retry) as info:
        tasks.index_products.apply(args=([p.pk],), throw=True)
    assert isinstance(info.value.exc, IndexUnavailable)
    assert len(attempts) == 1
    assert PendingChange.objects.filter(object_id=p.pk, processed_at__isnull=True).exists()
    assert IndexState.objects.get(object_id=p.pk, modality="text").status == "pending"


@pytest.mark.django_db(transaction=True)
def test_index_task_processes_in_batches_of_the_configured_size(dispatched, settings, monkeypatch):
    settings.SIMILARITY = {**settings.SIMILARITY, "BATCH_SIZE": 2}
    products = [factories.product(f"Item {i}") for i in range(5)]
    batches = []
    real = tasks.services.index_products

    def recording(ids, **kwargs):
        batches.append(list(ids))
        return real(ids, **kwargs)

    monkeypatch.setattr(tasks.services, "index_products", recording)
    outcome = tasks.index_products.apply(args=([p.pk for p in products],)).get()
    assert [len(b) for b in batches] == [2, 2, 1]
    assert outcome["indexed"] == 5
