"""Embedding state in the database; the vectors themselves live in Qdrant."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Modality(models.TextChoices):
    IMAGE = "image", "Image"
    TEXT = "text", "Text"


class Status(models.TextChoices):
    PENDING = "pending", "Pending"
    INDEXED = "indexed", "Indexed"
    FAILED = "failed", "Failed"
    NO_CONTENT = "no_content", "No content"


#: an object's primary key as text (``IndexSpec.object_key``): integer, UUID or string keys
OBJECT_KEY_LENGTH = 255


class IndexState(models.Model):
    """Per indexed object and modality: what was encoded, with which model, and how it went."""

    model_label = models.CharField(max_length=100)
    object_id = models.CharField(max_length=OBJECT_KEY_LENGTH)
    modality = models.CharField(max_length=10, choices=Modality.choices)
    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    content_hash = models.CharField(max_length=64, blank=True)
    model_version = models.CharField(max_length=120, blank=True)
    error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_label", "object_id", "modality"], name="uniq_index_state"
            )
        ]
        indexes = [models.Index(fields=["model_label", "status"])]
        verbose_name = "index state"
        # The admin's custom pages check these (see similarity.admin).
        permissions = [
            ("view_similarity", "Can see similar products and use the similarity explorer"),
            ("view_index_health", "Can see the similarity index health page"),
            ("reindex_objects", "Can queue objects for re-indexing"),
        ]

    def __str__(self) -> str:
        return f"{self.model_label}:{self.object_id} {self.modality} {self.status}"


class PendingChange(models.Model):
    """Transactional outbox: written in the same transaction as the change it records.

    A task deletes the row once the change is in the index, so a change whose task was never
    queued (broker down) or failed (Qdrant down) is still here for ``similarity_reindex
    --pending``.
    """

    class Action(models.TextChoices):
        INDEX = "index", "Index"
        REMOVE = "remove", "Remove"

    model_label = models.CharField(max_length=100)
    object_id = models.CharField(max_length=OBJECT_KEY_LENGTH)
    action = models.CharField(max_length=6, choices=Action.choices, default=Action.INDEX)
    #: new on every recorded change: indexing marks done only the tokens it read before reading
    #: the objects, so a change committed after that read stays pending (no clocks compared)
    token = models.CharField(max_length=32, default="", db_index=True)
    #: database clock (``Now()``), like ``processed_at``
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_label", "object_id"], name="uniq_pending_change")
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.model_label}:{self.object_id}"


class RebuildCheckpoint(models.Model):
    """Where a full rebuild stands, so an interrupted one resumes instead of restarting."""

    model_label = models.CharField(max_length=100, unique=True)
    generation = models.CharField(max_length=200)
    #: the object key of the last object done ("" = none yet)
    last_key = models.CharField(max_length=OBJECT_KEY_LENGTH, blank=True, default="")
    started_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"rebuild of {self.model_label} into {self.generation} after {self.last_key or 'the start'}"


class ReconcileRun(models.Model):
    """One run of ``similarity_reconcile``: what differed between the database and the index."""

    model_label = models.CharField(max_length=100, db_index=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(auto_now_add=True)
    checked = models.PositiveIntegerField(default=0)
    points = models.PositiveIntegerField(default=0)
    #: kind of drift → how many objects ("missing", "ghost", "stale_text", ...)
    counts = models.JSONField(default=dict)
    fixed = models.BooleanField(default=False)
    seconds = models.FloatField(default=0)

    class Meta:
        ordering = ["-finished_at", "-pk"]
        get_latest_by = "finished_at"

    def __str__(self) -> str:
        return f"reconcile {self.model_label} at {self.finished_at}: {self.drift} drifted"

    @property
    def drift(self) -> int:
        return sum(int(n) for n in self.counts.values())

from .behaviour.models import BehaviourModel, Event, WidgetStat  # noqa: E402,F401  shoppers' events
from .staff_models import (  # noqa: E402,F401  staff decisions
    Block,
    DuplicateCandidate,
    MerchandisingRule,
    MerchandisingVersion,
    Pin,
)
from .training.models import AdapterArtifact  # noqa: E402,F401
