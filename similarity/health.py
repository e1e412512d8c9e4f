"""Index health: what the index state rows and the outbox say about one spec."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Min

from . import registry
from .models import IndexState, Modality, PendingChange, ReconcileRun, Status


def index_health(model: Any = None) -> dict[str, Any]:
    """Counts per modality and status, model versions present, oldest pending change."""
    spec = registry.get_spec(model)
    states = IndexState.objects.filter(model_label=spec.label)
    counts: dict[str, dict[str, int]] = {m: {s: 0 for s in Status.values} for m in Modality.values}
    for row in states.values("modality", "status").annotate(n=Count("id")):
        counts[row["modality"]][row["status"]] = row["n"]
    pending = PendingChange.objects.filter(model_label=spec.label, processed_at__isnull=True)
    return {
        "counts": counts,
        "model_versions": sorted(
            set(states.exclude(model_version="").values_list("model_version", flat=True))
        ),
        "pending_changes": pending.count(),
        "oldest_pending": pending.aggregate(oldest=Min("created_at"))["oldest"],
        "unindexed_objects": spec.get_queryset().exclude(
            pk__in=spec.pks_of(states.filter(status=Status.INDEXED))
        ).count(),
        "last_reconcile": ReconcileRun.objects.filter(model_label=spec.label).first(),
        "recent_errors": list(
            states.filter(status=Status.FAILED).exclude(error="").order_by("-updated_at")
            .values("object_id", "modality", "error", "updated_at")[:20]
        ),
    }
