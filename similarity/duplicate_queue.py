"""The duplicate review queue: the periodic scan fills it, staff decide, decisions stick.

:func:`refresh_queue` adds new pairs and refreshes the score of pairs still open; it never
reopens a decided pair (a dismissed pair never comes back). :func:`decide` records confirm /
dismiss / "link as variants" (the last through ``spec.link_variants``).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import registry
from .duplicates import DEFAULT_THRESHOLD, find_duplicates
from .staff_models import DuplicateCandidate

Decision = DuplicateCandidate.Decision


def refresh_queue(model: Any = None, *, threshold: float = DEFAULT_THRESHOLD) -> dict[str, int]:
    """Scan one spec's catalog and update the queue; counts of new, refreshed and skipped pairs."""
    spec = registry.get_spec(model)
    pairs = find_duplicates(spec, threshold=threshold)
    existing = {
        (row.object_a, row.object_b): row
        for row in DuplicateCandidate.objects.filter(model_label=spec.label)
    }
    counts = {"new": 0, "refreshed": 0, "decided": 0}
    with transaction.atomic():
        for pair in pairs:
            row = existing.get((pair.key_a, pair.key_b))
            if row is None:
                DuplicateCandidate.objects.create(
                    model_label=spec.label, object_a=pair.key_a, object_b=pair.key_b, name_a=pair.name_a,
                    name_b=pair.name_b, score=pair.score, reasons=pair.reasons,
                )
                counts["new"] += 1
            elif row.decision == Decision.OPEN:
                row.score, row.reasons = pair.score, pair.reasons
                row.save(update_fields=["score", "reasons"])
                counts["refreshed"] += 1
            else:
                counts["decided"] += 1
    return counts


def decide(candidate: DuplicateCandidate, decision: str) -> None:
    """Record staff's decision; "variants" makes the second listing a variant of the first."""
    if decision not in Decision.values or decision == Decision.OPEN:
        raise ValueError(f"unknown decision {decision!r}")
    if decision == Decision.VARIANTS:
        spec = registry.get_spec(candidate.model_label)
        objects = spec.get_queryset().in_bulk([spec.to_pk(candidate.object_a), spec.to_pk(candidate.object_b)])
        a, b = objects.get(spec.to_pk(candidate.object_a)), objects.get(spec.to_pk(candidate.object_b))
        if a is None or b is None:
            raise ValueError("one of the two listings no longer exists")
        spec.link_variants(a, b)
    candidate.decision = decision
    candidate.decided_at = timezone.now()
    candidate.save(update_fields=["decision", "decided_at"])


def possible_duplicates(obj: Any) -> list[DuplicateCandidate]:
    """Open or confirmed pairs ``obj`` is part of, for the warning on its admin page."""
    spec = registry.get_spec(type(obj))
    key = spec.object_key(obj.pk)
    return list(
        DuplicateCandidate.objects.filter(model_label=spec.label)
        .filter(Q(object_a=key) | Q(object_b=key))
        .filter(decision__in=[Decision.OPEN, Decision.CONFIRMED])
    )
