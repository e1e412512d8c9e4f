"""Zero-downtime rebuilds: fill a new generation of one spec's collection, then switch to it.

The live generation keeps answering meanwhile. Progress is checkpointed per batch, so an
interrupted rebuild resumes where it stopped; changes committed while it runs are caught up
from the outbox before the switch. Each spec has its own collection, so rebuilding one never
touches another's points.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import connections, transaction
from django.db.models import F, Q
from django.db.models.functions import Now

from . import registry
from .backlog import iter_batches
from .index.base import VectorIndex
from .indexing import StartedIndexing, index_products, start_indexing
from .models import PendingChange, RebuildCheckpoint
from .results import IndexReport
from .specs import IndexSpec

logger = logging.getLogger(__name__)

#: objects re-read per batch when catching up with changes made during the rebuild
CATCH_UP_BATCH = 256


def rebuild_index(
    *, model: Any = None, batch_size: int = 64, progress: Callable[[int], None] | None = None,
    resume: bool = True, before_switch: Callable[[], None] | None = None,
) -> IndexReport:
    """Re-encode every object of one spec into a new generation and switch to it atomically.

    ``resume=False`` abandons an interrupted rebuild and starts afresh. ``before_switch`` runs in
    the switch's transaction (making a trained adapter live with the generation it filled).
    """
    spec = registry.get_spec(model)
    live = registry.vector_index(spec)
    checkpoint = RebuildCheckpoint.objects.filter(model_label=spec.label).first()
    if checkpoint and resume:
        target = live.resume_rebuild(checkpoint.generation)
        logger.info("resuming rebuild of %s after %s", spec.label, checkpoint.last_key or "the start")
    else:
        if checkpoint:
            live.abandon_rebuild(checkpoint.generation)
            checkpoint.delete()
        target = live.start_rebuild(registry.vector_dims(), spec.full_payload_schema())
        checkpoint = RebuildCheckpoint.objects.create(
            model_label=spec.label, generation=target.generation, started_at=Now()
        )
        checkpoint.refresh_from_db(fields=["started_at"])  # the database's clock, like the outbox's
    report = IndexReport()
    start_after = spec.to_pk(checkpoint.last_key) if checkpoint.last_key else None
    try:
        # Batch N+1 is read and its encoding queued before batch N is written: the models keep
        # encoding while the points and the state are written (encoders/pipeline.py).
        # A failure while reading the next batch still writes the one already encoded (and moves
        # the checkpoint past it); a failure while writing a batch drops the next one (a resumed
        # rebuild starts again at the batch that failed).
        pending: tuple[StartedIndexing, Any, int] | None = None
        batches = iter(iter_batches(spec.get_queryset(), batch_size, start_after=start_after))
        while True:
            try:
                batch = next(batches, None)
                writer = start_indexing(batch, model=spec, force=True, index=target, settle=False) if batch else None
            except BaseException:
                if pending:
                    _finish_quietly(pending, checkpoint, report, progress)
                raise
            if pending:
                try:
                    _finish_batch(pending, checkpoint, report, progress)
                except BaseException:
                    if writer is not None:
                        writer.cancel()  # the next batch's encoding, where it has not started
                    raise
            if not batch or writer is None:
                break
            pending = (writer, spec.object_key(batch[-1]), len(batch))
        applied = _catch_up(spec, target, since=checkpoint.started_at, report=report,
                            skip=frozenset(report.covered))
        # HNSW graphs are built before the switch (nobody reads this generation yet), so the new
        # generation goes live indexed; the few points of the last pass are scanned until the next.
        started = time.perf_counter()
        target.optimize()
        logger.info("optimised %s in %.1f s", target.generation, time.perf_counter() - started)
        # The last changes, and the switch, while no change can be recorded: a change committed
        # at any moment before the switch is in the new generation; any later one is indexed by
        # the live path into the new generation.
        if connections[RebuildCheckpoint.objects.db].vendor == "mysql":
            # the next transaction only: at READ COMMITTED, InnoDB's FOR UPDATE takes no gap locks
            with connections[RebuildCheckpoint.objects.db].cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with transaction.atomic():
            _hold_off_writers(checkpoint)
            _catch_up(spec, target, since=checkpoint.started_at, report=report, skip=applied)
            if before_switch:
                before_switch()
            live.finish_rebuild(target)
            checkpoint.delete()
    except BaseException:
        target.close()  # let go of the new generation, so a resumed run (or another process) can open it
        raise
    return report


def _finish_batch(pending: tuple[StartedIndexing, Any, int], checkpoint: RebuildCheckpoint,
                  report: IndexReport, progress: Callable[[int], None] | None) -> None:
    """Write a started batch, then move the checkpoint past it."""
    finish, last_key, size = pending
    report.merge(finish())
    RebuildCheckpoint.objects.filter(pk=checkpoint.pk).update(last_key=last_key)
    if progress:
        progress(size)


def _finish_quietly(pending: tuple[StartedIndexing, Any, int], checkpoint: RebuildCheckpoint,
                    report: IndexReport, progress: Callable[[int], None] | None) -> None:
    """:func:`_finish_batch` while another error is on its way: its own failure is only logged."""
    try:
        _finish_batch(pending, checkpoint, report, progress)
    except Exception:
        logger.exception("rebuild: the batch before the failure could not be written either")


def _hold_off_writers(checkpoint: RebuildCheckpoint) -> None:
    """Make every transaction that records a change wait until this one commits (it waits for
    those in flight first): a table lock on PostgreSQL, the database write lock on SQLite."""
    connection = connections[RebuildCheckpoint.objects.db]
    table = connection.ops.quote_name(PendingChange._meta.db_table)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
    elif connection.vendor == "mysql":  # next-key locks on the whole index: inserts and updates wait
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {table} FOR UPDATE")
            cursor.fetchall()
    else:  # SQLite takes its single write lock at the first write
        RebuildCheckpoint.objects.filter(pk=checkpoint.pk).update(last_key=F("last_key"))


def _catch_up(
    spec: IndexSpec, target: VectorIndex, *, since: datetime, report: IndexReport, skip: frozenset[str] = frozenset(),
) -> frozenset[str]:
    """Apply to ``target`` every change that may have committed since the rebuild started: still
    pending, or processed by the live path since then (the outbox keeps processed rows, and is
    not purged of them while a rebuild is unfinished). Returns the tokens applied; ``skip``
    leaves out those already applied by an earlier pass."""
    changes = PendingChange.objects.filter(model_label=spec.label).filter(
        Q(processed_at__isnull=True) | Q(processed_at__gte=since) | Q(created_at__gte=since)
    ).exclude(token__in=skip)
    rows = list(changes.values_list("object_id", "token"))
    changed = sorted({key for key, _token in rows})
    for start in range(0, len(changed), CATCH_UP_BATCH):
        # index_products removes from ``target`` what no longer exists.
        report.merge(
            index_products(
                changed[start : start + CATCH_UP_BATCH], model=spec, force=True, index=target, settle=False,
            )
        )
    return skip | {token for _key, token in rows}
