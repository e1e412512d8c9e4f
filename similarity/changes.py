"""Change capture and the outbox.

Every save or delete of an indexed model (or of a model a spec watches) goes through
:func:`capture_changes`: it writes outbox rows (:class:`~similarity.models.PendingChange`) in the
committing transaction and adds the ids to a per-connection buffer. The first change of a
transaction registers one ``on_commit`` callback, which hands the whole buffer to the dispatcher
(:func:`dispatch_committed`), so a transaction touching 500 products queues one batch. A
rolled-back transaction discards the callback (and the outbox rows); the buffer notices and
starts afresh. The indexing side marks rows done with :func:`settle_outbox`.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, router, transaction
from django.db.models import Min, QuerySet
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.module_loading import import_string

from . import registry
from .conf import get_settings
from .models import IndexState, Modality, PendingChange, Status

logger = logging.getLogger(__name__)
_local = threading.local()

#: processed outbox rows are kept this long, so a rebuild can catch up with what changed
OUTBOX_RETENTION_HOURS = 24


def write_outbox(label: str, index_keys: Iterable[str] = (), remove_keys: Iterable[str] = ()) -> None:
    """Write outbox rows in the current transaction, and mark the objects' index state
    ``pending`` so the admin shows what is waiting (two queries per call). Times are the
    database's (``Now()``), never this process's clock; each row gets a fresh token."""
    remove = set(remove_keys)
    waiting = set(index_keys) - remove
    rows = [
        PendingChange(model_label=label, object_id=key, action=action, created_at=Now(), token=uuid.uuid4().hex)
        for keys, action in ((waiting, PendingChange.Action.INDEX), (remove, PendingChange.Action.REMOVE))
        for key in keys
    ]
    if rows:
        upsert(PendingChange, rows, unique_fields=["model_label", "object_id"],
               update_fields=["action", "created_at", "processed_at", "token"])
    if waiting:
        upsert(
            IndexState,
            [IndexState(model_label=label, object_id=key, modality=modality, status=Status.PENDING, updated_at=Now())
             for key in waiting for modality in Modality.values],
            unique_fields=["model_label", "object_id", "modality"], update_fields=["status", "updated_at"],
        )


def upsert(model: Any, rows: list[Any], *, unique_fields: list[str], update_fields: list[str]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE on every backend: PostgreSQL and SQLite name the unique
    fields; MySQL and MariaDB cannot (their ON DUPLICATE KEY UPDATE uses every unique key)."""
    connection = connections[router.db_for_write(model)]
    target = unique_fields if connection.features.supports_update_conflicts_with_target else None
    model._default_manager.bulk_create(rows, update_conflicts=True, unique_fields=target, update_fields=update_fields)


def dispatch_committed(label: str, index_keys: Iterable[str] = (), remove_keys: Iterable[str] = ()) -> None:
    """Hand committed changes to ``SIMILARITY["DISPATCHER"]`` (the task queue). Never raises:
    the outbox keeps what fails, for ``similarity_reindex --pending``."""
    remove = sorted(set(remove_keys))
    index = sorted(set(index_keys) - set(remove))
    dispatcher = import_string(get_settings().dispatcher)
    try:
        dispatcher(label, index, remove)
    except Exception:  # broker down, or an eager task that found Qdrant down
        logger.warning(
            "could not process %d changes of %s now; they stay pending for "
            "`similarity_reindex --pending`", len(index) + len(remove), label, exc_info=True,
        )


def pending_tokens(label: str, keys: list[str], *, action: str | None = None) -> list[str]:
    """The tokens of the changes waiting for ``keys``: read *before* the objects are read."""
    rows = PendingChange.objects.filter(model_label=label, object_id__in=keys, processed_at__isnull=True)
    if action is not None:
        rows = rows.filter(action=action)
    return [token for token in rows.values_list("token", flat=True) if token]


def settle_outbox(tokens: list[str]) -> None:
    """Mark done the changes whose tokens were read before their objects were indexed. A change
    recorded since has a new token, so it stays pending, whatever the clocks say."""
    if tokens:
        PendingChange.objects.filter(token__in=tokens, processed_at__isnull=True).update(processed_at=Now())
    purge_outbox()


def purge_outbox() -> None:
    """Drop rows processed more than ``OUTBOX_RETENTION_HOURS`` ago, but none that an unfinished
    rebuild may still need to catch up with (processed after it started)."""
    from .models import RebuildCheckpoint

    cutoff: Any = Now() - timedelta(hours=OUTBOX_RETENTION_HOURS)
    oldest_rebuild = RebuildCheckpoint.objects.aggregate(oldest=Min("started_at"))["oldest"]
    done = PendingChange.objects.filter(processed_at__lt=cutoff)
    if oldest_rebuild is not None:
        done = done.filter(processed_at__lt=oldest_rebuild)
    done.delete()


def db_now(using: str = DEFAULT_DB_ALIAS) -> datetime:
    """The database's clock now (not the transaction's start), to the microsecond where the
    database has it: what orders reads by different processes on different machines."""
    connection = connections[using]
    vendor = connection.vendor
    query = {
        "postgresql": "SELECT clock_timestamp()",
        "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
        "mysql": "SELECT UTC_TIMESTAMP(6)",
    }.get(vendor, "SELECT CURRENT_TIMESTAMP")
    with connection.cursor() as cursor:
        cursor.execute(query)
        value = cursor.fetchone()[0]
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value


class _Buffer:
    def __init__(self) -> None:
        self.index: dict[str, set[str]] = {}
        self.remove: dict[str, set[str]] = {}
        self.callback: Any = None

    def add(self, label: str, index_ids: Iterable[str], remove_ids: Iterable[str]) -> None:
        index, remove = self.index.setdefault(label, set()), self.remove.setdefault(label, set())
        index_ids, remove_ids = set(index_ids), set(remove_ids)
        # the last action on a key wins: deleted then created again (same key) is indexed
        remove -= index_ids
        index -= remove_ids
        index |= index_ids - remove_ids
        remove |= remove_ids

    def flush(self, using: str) -> None:
        index, remove = self.index, self.remove
        self.index, self.remove, self.callback = {}, {}, None
        for label in sorted(set(index) | set(remove)):
            if index.get(label) or remove.get(label):
                dispatch_committed(label, index.get(label, ()), remove.get(label, ()))


def _buffer(using: str) -> _Buffer:
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    if using not in buffers:
        buffers[using] = _Buffer()
    return buffers[using]  # type: ignore[no-any-return]


def _armed(buffer: _Buffer, using: str) -> bool:
    # Django drops the callbacks of a rolled-back (savepoint of a) transaction from this list.
    if buffer.callback is None:
        return False
    callbacks: list[Any] = list(connections[using].run_on_commit)  # (savepoint ids, func, robust)
    return any(entry[1] is buffer.callback for entry in callbacks)


def capture_changes(
    model: Any, index_ids: Iterable[Any] = (), remove_ids: Iterable[Any] = (), *,
    using: str = DEFAULT_DB_ALIAS,
) -> int:
    """Record that objects changed: outbox rows now, one dispatch after commit.

    Signal handlers call this; so do the admin's "Reindex" button and bulk code that bypasses
    signals (``QuerySet.update``, ``bulk_create``, raw SQL). ``model`` is anything
    :func:`similarity.registry.get_spec` takes. Returns how many objects were recorded.
    """
    spec = registry.get_spec(model)
    label = spec.label
    index_keys = [spec.object_key(pk) for pk in index_ids]
    remove_keys = [spec.object_key(pk) for pk in remove_ids]
    buffer = _buffer(using)
    if not _armed(buffer, using):
        buffer.index, buffer.remove, buffer.callback = {}, {}, None
    buffer.add(label, index_keys, remove_keys)
    # Always written, even for an id seen before in this transaction: a rolled-back savepoint
    # may have taken that row with it (and SQLite reuses the primary key of a rolled-back row).
    write_outbox(label, index_keys, remove_keys)
    if buffer.callback is None and (buffer.index.get(label) or buffer.remove.get(label)):
        buffer.callback = functools.partial(buffer.flush, using)
        # In autocommit mode this runs the callback at once, which is what we want.
        transaction.on_commit(buffer.callback, using=using)
    return len(set(index_keys) | set(remove_keys))


def mark_changed(objects: QuerySet[Any] | Iterable[Any], *, model: Any = None,
                 using: str = DEFAULT_DB_ALIAS) -> int:
    """Tell the index that rows changed behind Django's back (raw SQL, an external job, a
    ``QuerySet.update`` on a model without :class:`~similarity.managers.IndexedManager`).

    ``objects``: a queryset of an indexed *or watched* model, or primary keys with ``model``.
    Objects that no longer exist are removed from the index. Returns how many indexed objects
    were queued (outbox rows now, one dispatch after commit).
    """
    if isinstance(objects, QuerySet):
        model = objects.model
        pks = list(objects.values_list("pk", flat=True))
    else:
        if model is None:
            raise TypeError("mark_changed(ids) needs model=")
        pks = list(objects)
    return objects_changed(model, pks, using=using)


def affected_ids(model: Any, pks: list[Any], *, watchers_only: bool = False) -> dict[str, list[Any]]:
    """Spec label → primary keys of the indexed objects that rows ``pks`` of ``model`` affect, as
    the database holds them now (``model``'s own, when it is indexed, unless ``watchers_only``;
    and those of every spec that watches it)."""
    model_class: Any = model if isinstance(model, type) else registry.get_spec(model).model_class
    label = model_class._meta.label_lower
    out: dict[str, list[Any]] = {}
    for spec in registry.specs().values():
        if spec.label == label and not watchers_only:
            out.setdefault(spec.label, []).extend(pks)
        for watch in spec.watches:
            if watch.model.lower() == label:
                out.setdefault(spec.label, []).extend(
                    watch.ids_for_queryset(model_class._default_manager.filter(pk__in=pks)))
    return out


def objects_changed(model: Any, pks: list[Any], *, using: str = DEFAULT_DB_ALIAS,
                    also: dict[str, list[Any]] | None = None) -> int:
    """Rows ``pks`` of ``model`` were written in bulk: queue the indexed objects they affect now,
    plus ``also`` (what they affected before the write, from :func:`affected_ids`)."""
    if not pks:
        return 0
    targets = affected_ids(model, pks)
    for label, ids in (also or {}).items():
        targets.setdefault(label, []).extend(ids)
    return sum(capture_changes(label, index_ids=ids, using=using) for label, ids in targets.items() if ids)
