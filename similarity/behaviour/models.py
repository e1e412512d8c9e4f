"""What shoppers did (events) and the item–item models learned from it (versioned artifacts)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from ..models import OBJECT_KEY_LENGTH


class EventKind(models.TextChoices):
    VIEW = "view", "View"
    CART = "cart", "Cart"
    PURCHASE = "purchase", "Purchase"


class Event(models.Model):
    """One thing a shopper did with one object: viewed it, put it in a cart, bought it.

    The object is named like index state rows (``model_label`` + ``object_id`` as text), so any
    primary key type works and an event outlives the object it names.
    """

    model_label = models.CharField(max_length=100)
    object_id = models.CharField(max_length=OBJECT_KEY_LENGTH)
    kind = models.CharField(max_length=8, choices=EventKind.choices, default=EventKind.VIEW)
    visitor = models.CharField(max_length=100, blank=True, default="")
    session = models.CharField(max_length=100, blank=True, default="")
    order = models.CharField(max_length=100, blank=True, default="")
    quantity = models.IntegerField(default=1)
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    time = models.DateTimeField(default=timezone.now)
    #: a digest of what makes the event itself, so importing a file twice adds nothing
    key = models.CharField(max_length=40, unique=True)

    class Meta:
        indexes = [
            models.Index(fields=["model_label", "kind", "time"], name="sim_event_kind_time"),
            models.Index(fields=["model_label", "object_id"], name="sim_event_object"),
            models.Index(fields=["order"], name="sim_event_order"),
            models.Index(fields=["visitor", "time"], name="sim_event_visitor"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.model_label}:{self.object_id} at {self.time:%Y-%m-%d %H:%M}"


class BehaviourModel(models.Model):
    """One trained item–item model: its parameters, its held-out metrics and where its
    neighbour lists are stored (an ``.npz`` file); at most one per spec is live."""

    model_label = models.CharField(max_length=100, db_index=True)
    version = models.CharField(max_length=80, unique=True)
    algorithm = models.CharField(max_length=20)
    params = models.JSONField(default=dict)
    #: {algorithm: {"hit@10": v, "mrr": v}} on the held-out tail of the events
    metrics = models.JSONField(default=dict)
    items = models.PositiveIntegerField(default=0)
    events = models.PositiveIntegerField(default=0)
    path = models.CharField(max_length=500)
    live = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    seconds = models.FloatField(default=0)

    class Meta:
        ordering = ["-created_at", "-pk"]
        get_latest_by = "created_at"

    def __str__(self) -> str:
        return f"{self.version} ({self.algorithm}{', live' if self.live else ''})"


class WidgetStat(models.Model):
    """Impressions and clicks of one widget in one placement on one day (counters, not rows
    per request; the beacon counts in the cache and :mod:`.analytics` flushes into these)."""

    widget = models.CharField(max_length=40)
    placement = models.CharField(max_length=60, blank=True, default="")
    day = models.DateField()
    impressions = models.PositiveIntegerField(default=0)
    clicks = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["widget", "placement", "day"], name="uniq_widget_stat")]
        ordering = ["-day", "widget", "placement"]

    def __str__(self) -> str:
        return f"{self.widget}@{self.placement or '-'} {self.day}: {self.clicks}/{self.impressions}"

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0
