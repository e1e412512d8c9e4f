"""Change capture: model signals → outbox rows (in the transaction) → one dispatch per commit.

Every save or delete of an indexed model (or of a model a spec watches) writes an outbox row in
the committing transaction and adds the id to a per-connection buffer. The first change of a
transaction registers one ``on_commit`` callback, which dispatches the whole buffer, so a
transaction touching 500 products queues one batch. A rolled-back transaction discards the
callback (and the outbox rows); the buffer notices and starts afresh.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.db import DEFAULT_DB_ALIAS, connections, router, transaction
from django.db.models.signals import post_delete, post_save

from . import registry, services

_local = threading.local()


class _Buffer:
    def __init__(self) -> None:
        self.index: dict[str, set[int]] = {}
        self.remove: dict[str, set[int]] = {}
        self.callback: Any = None

    def add(self, label: str, index_ids: Iterable[int], remove_ids: Iterable[int]) -> None:
        index, remove = self.index.setdefault(label, set()), self.remove.setdefault(label, set())
        index.update(index_ids)
        remove.update(remove_ids)
        index -= remove

    def flush(self, using: str) -> None:
        index, remove = self.index, self.remove
        self.index, self.remove, self.callback = {}, {}, None
        for label in sorted(set(index) | set(remove)):
            if index.get(label) or remove.get(label):
                services.dispatch_changes(label, index.get(label, ()), remove.get(label, ()))


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


def note_changes(
    label: str, index_ids: Iterable[int] = (), remove_ids: Iterable[int] = (), *,
    using: str = DEFAULT_DB_ALIAS,
) -> None:
    """Record that objects changed; called from signal handlers, usable from bulk code too."""
    buffer = _buffer(using)
    if not _armed(buffer, using):
        buffer.index, buffer.remove, buffer.callback = {}, {}, None
    index_ids, remove_ids = list(index_ids), list(remove_ids)
    buffer.add(label, index_ids, remove_ids)
    # Always written, even for an id seen before in this transaction: a rolled-back savepoint
    # may have taken that row with it (and SQLite reuses the primary key of a rolled-back row).
    services.record_changes(label, index_ids, remove_ids)
    if buffer.callback is None and (buffer.index.get(label) or buffer.remove.get(label)):
        buffer.callback = functools.partial(buffer.flush, using)
        # In autocommit mode this runs the callback at once, which is what we want.
        transaction.on_commit(buffer.callback, using=using)


# ---------------------------------------------------------------------------------------------
# Signal handlers, connected in SimilarityConfig.ready()
# ---------------------------------------------------------------------------------------------
def _on_indexed_save(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return  # fixture loading: the data is not final yet
    using = kwargs.get("using") or router.db_for_write(sender)
    note_changes(sender._meta.label_lower, index_ids=[instance.pk], using=using)


def _on_indexed_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    using = kwargs.get("using") or router.db_for_write(sender)
    note_changes(sender._meta.label_lower, remove_ids=[instance.pk], using=using)


def _watch_handler(label: str, to_ids: Any) -> Any:
    def handler(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
        if raw:
            return
        ids = [int(pk) for pk in to_ids(instance)]
        if ids:
            note_changes(label, index_ids=ids, using=kwargs.get("using") or DEFAULT_DB_ALIAS)

    return handler


_connected: list[tuple[Any, Any, str]] = []


def connect() -> None:
    """Connect the signals of every registered spec (idempotent)."""
    disconnect()
    for spec in registry.specs().values():
        model = spec.model_class
        label = spec.label
        for signal, handler, kind in (
            (post_save, _on_indexed_save, "save"),
            (post_delete, _on_indexed_delete, "delete"),
        ):
            uid = f"similarity:{label}:{kind}"
            signal.connect(handler, sender=model, dispatch_uid=uid)
            _connected.append((signal, model, uid))
        for position, watch in enumerate(spec.watches):
            watched = apps.get_model(watch.model)
            handler = _watch_handler(label, watch.to_ids)
            for signal, kind in ((post_save, "save"), (post_delete, "delete")):
                uid = f"similarity:{label}:watch{position}:{kind}"
                signal.connect(handler, sender=watched, dispatch_uid=uid, weak=False)
                _connected.append((signal, watched, uid))


def disconnect() -> None:
    while _connected:
        signal, model, uid = _connected.pop()
        signal.disconnect(sender=model, dispatch_uid=uid)
