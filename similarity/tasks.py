"""The app's Celery tasks and its default dispatcher (``SIMILARITY["DISPATCHER"]``).

Each task is a thin adapter over :mod:`similarity.services`. Models load lazily inside the task
on first use, so nothing heavy happens before the prefork pool forks; a child also drops what it
inherited (``worker_process_init``). Tasks carry object keys only, never model instances.
The project routes ``similarity.*`` to a queue of its own (see docs/your-shop.md).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from celery.signals import task_postrun, worker_process_init

from . import registry, services
from .conf import get_settings
from .exceptions import IndexUnavailable

logger = logging.getLogger(__name__)

RETRY = {
    "autoretry_for": (IndexUnavailable,),
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 8,
    "acks_late": True,
}


@shared_task(name="similarity.index_products", **RETRY)
def index_products(ids: list[Any], model: str | None = None) -> dict[str, Any]:
    """Index ``ids`` in batches of ``SIMILARITY['BATCH_SIZE']``."""
    size = max(get_settings().batch_size, 1)
    report = services.IndexReport()
    for start in range(0, len(ids), size):
        report.merge(services.index_products(ids[start : start + size], model=model))
    return {"indexed": report.indexed, "removed": report.removed, "encoded": report.encoded,
            "failed": report.failed}


@shared_task(name="similarity.remove_products", **RETRY)
def remove_products(ids: list[Any], model: str | None = None) -> int:
    return services.remove_products(ids, model=model)


#: outbox rows waiting longer than this are handed to the queue again by the periodic task
STALLED_AFTER = timedelta(minutes=30)


@shared_task(name="similarity.reconcile")
def reconcile(fix: bool = True) -> dict[str, Any]:
    """The periodic guard (Celery beat): re-queue changes stalled in the outbox, then compare
    every spec's index with the database and queue what differs."""
    out: dict[str, Any] = {}
    for spec in registry.specs().values():
        services.process_pending(model=spec, enqueue=True, older_than=STALLED_AFTER)
        out[spec.label] = services.reconcile(spec, fix=fix).counts()
    return out


@shared_task(name="similarity.scan_duplicates")
def scan_duplicates() -> dict[str, Any]:
    """The periodic duplicate scan (Celery beat): refresh every spec's review queue; decided
    pairs stay decided."""
    return {spec.label: services.refresh_duplicate_queue(spec) for spec in registry.specs().values()}


@shared_task(name="similarity.train_behaviour", **RETRY)
def train_behaviour() -> dict[str, Any]:
    """The periodic behaviour training (Celery beat): every spec with events gets a new model,
    live before the task returns (docs/behaviour.md)."""
    from .behaviour.train import NoEvents

    out: dict[str, Any] = {}
    for spec in registry.specs().values():
        try:
            row = services.train_behaviour(spec)
        except NoEvents as exc:
            out[spec.label] = str(exc)
            continue
        out[spec.label] = {"version": row.version, "algorithm": row.algorithm, "items": row.items}
    return out


@shared_task(name="similarity.flush_widget_stats")
def flush_widget_stats() -> dict[str, Any]:
    """The periodic move of the widget beacon's counts from the cache into ``WidgetStat``
    (Celery beat, every minute; the admin page flushes too)."""
    return services.flush_widget_stats()


def dispatch(label: str, index_ids: list[Any], remove_ids: list[Any]) -> None:
    """The default ``SIMILARITY['DISPATCHER']``: one task per kind of change, keys only, on
    ``SIMILARITY['QUEUE']``."""
    queue = get_settings().queue
    if remove_ids:
        remove_products.apply_async(([str(k) for k in remove_ids], label), queue=queue, retry=False)
    if index_ids:
        index_products.apply_async(([str(k) for k in index_ids], label), queue=queue, retry=False)


@worker_process_init.connect
def _fresh_process(**_: Any) -> None:
    registry.reset(encoders=True)


@task_postrun.connect
def _let_go_of_edge(sender: Any = None, **_: Any) -> None:
    """Qdrant Edge allows one process per shard: a separate worker lets go after each task."""
    from django.conf import settings

    if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False) or "Edge" not in get_settings().index.backend:
        return
    for index in registry.open_indexes():
        index.close()
