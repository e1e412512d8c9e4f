"""A QuerySet and manager that capture bulk writes, which send no model signals.

Use :class:`IndexedManager` as the default manager of an indexed model, and of the models its
spec watches: ``update()``, ``bulk_create()`` and ``bulk_update()`` then queue the affected
objects exactly as a ``save()`` would (outbox rows in the transaction, one dispatch after commit).
Deletes need nothing: Django sends ``pre_delete``/``post_delete`` for each row while anyone listens.
For raw SQL, call :func:`similarity.changes.mark_changed`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import models

from .changes import affected_ids, objects_changed

logger = logging.getLogger(__name__)


class IndexedQuerySet(models.QuerySet[Any]):
    def update(self, **kwargs: Any) -> int:
        pks = list(self.values_list("pk", flat=True))  # before: the update may move rows out of the filter
        # Also before: a watched row moved to another parent (an image to another product) changes
        # the old parent as well as the new one. Queued after the write (in autocommit mode a
        # queued change is dispatched at once).
        before = affected_ids(self.model, pks, watchers_only=True) if pks else {}
        count = super().update(**kwargs)
        objects_changed(self.model, pks, using=self.db, also=before)
        return count

    def bulk_create(self, objs: Iterable[Any], *args: Any, **kwargs: Any) -> list[Any]:
        created = super().bulk_create(objs, *args, **kwargs)
        pks = [obj.pk for obj in created if obj.pk is not None]
        if len(pks) < len(created):
            # A backend that does not return primary keys (MySQL without update_conflicts): the
            # rows are saved; `similarity_reconcile --fix` or mark_changed() indexes them.
            logger.warning(
                "bulk_create of %d %s returned no primary keys; they are not queued for indexing "
                "(call similarity.changes.mark_changed with them)", len(created) - len(pks), self.model._meta.label,
            )
        objects_changed(self.model, pks, using=self.db)
        return created

    # bulk_update() needs nothing of its own: Django runs it as QuerySet.update() calls.


class IndexedManager(models.Manager.from_queryset(IndexedQuerySet)):  # type: ignore[misc]
    """``objects = IndexedManager()``: bulk writes reach the index like saves."""
