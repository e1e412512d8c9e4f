"""The backlog: changes still in the outbox, and objects whose indexing failed.

``similarity_reindex --pending`` and ``--failed`` drain them, in this process or through the
dispatcher (``--enqueue``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from django.db.models import F, QuerySet
from django.db.models.functions import Now
from django.utils.module_loading import import_string

from . import registry
from .conf import get_settings
from .exceptions import DispatchError
from .indexing import index_products, remove_products
from .models import IndexState, PendingChange, Status
from .results import IndexReport


def iter_batches(queryset: QuerySet[Any], batch_size: int, start_after: Any = None) -> Iterator[list[Any]]:
    """Primary keys of ``queryset`` in batches, by keyset pagination (never OFFSET)."""
    last = start_after
    while True:
        page = queryset if last is None else queryset.filter(pk__gt=last)
        batch = list(page.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not batch:
            return
        yield batch
        last = batch[-1]


def process_pending(
    *, model: Any = None, batch_size: int = 64, enqueue: bool = False,
    progress: Callable[[int], None] | None = None, older_than: timedelta | None = None,
) -> IndexReport:
    """Do (or hand to the dispatcher) every change still in the outbox; with ``older_than``,
    only those waiting longer than that (a task whose retries ran out, a lost message)."""
    spec = registry.get_spec(model)
    report = IndexReport()
    pending = PendingChange.objects.filter(model_label=spec.label, processed_at__isnull=True)
    if older_than is not None:
        pending = pending.filter(created_at__lt=Now() - older_than)
    last = 0
    while True:
        rows = list(pending.filter(pk__gt=last).order_by("pk")[:batch_size])
        if not rows:
            return report
        last = rows[-1].pk
        to_index = [r.object_id for r in rows if r.action == PendingChange.Action.INDEX]
        to_remove = [r.object_id for r in rows if r.action == PendingChange.Action.REMOVE]
        PendingChange.objects.filter(pk__in=[r.pk for r in rows]).update(attempts=F("attempts") + 1)
        if enqueue:
            try:
                import_string(get_settings().dispatcher)(spec.label, to_index, to_remove)
            except Exception as exc:  # the broker is down: say so in one line, the rows stay
                raise DispatchError(
                    f"could not hand {len(rows)} changes to the task queue ({exc.__class__.__name__}: {exc}); "
                    "they stay in the outbox. Is the broker running? Without one, drop --enqueue."
                ) from exc
        else:
            report.merge(index_products(to_index, model=spec))
            report.removed += remove_products(to_remove, model=spec)
        if progress:
            progress(len(rows))


def failed_keys(model: Any = None) -> list[str]:
    """Object keys with a modality whose indexing failed."""
    spec = registry.get_spec(model)
    return list(
        IndexState.objects.filter(model_label=spec.label, status=Status.FAILED)
        .order_by("object_id").values_list("object_id", flat=True).distinct()
    )
