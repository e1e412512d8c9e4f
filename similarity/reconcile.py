"""Reconciliation: compare the database with the live index, and repair the difference.

For every object of a spec it recomputes what the index should hold (the text and image-bytes
hashes, the payload, the model versions) and compares with the stored point; then it pages
through every point to find ghosts (points whose object is gone). ``fix=True`` queues the drifted
objects through the normal path (outbox rows, one dispatch after commit), so a repair is an
ordinary indexing task. Each run is recorded (:class:`~similarity.models.ReconcileRun`) for the
admin's health page.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import registry
from .backlog import iter_batches
from .changes import capture_changes
from .conf import get_settings
from .indexing import blob_hash, ensure_index, read_images
from .models import IndexState, Modality, ReconcileRun, Status
from .specs import IndexSpec, text_hash

logger = logging.getLogger(__name__)

KINDS = ("missing", "ghost", "stale_text", "stale_image", "stale_payload", "stale_model")


@dataclass
class Drift:
    """Keys per kind of drift. ``ghost`` keys are points whose object is gone (or not indexable)."""

    model: str
    checked: int = 0
    points: int = 0
    seconds: float = 0.0
    keys: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    fixed: bool = False

    @property
    def total(self) -> int:
        return sum(len(keys) for keys in self.keys.values())

    def counts(self) -> dict[str, int]:
        return {kind: len(keys) for kind, keys in self.keys.items()}

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts(), "total": self.total}


def _normal(value: Any) -> Any:
    """Payload values as the stores give them back (numbers as floats, tuples as lists)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return str(value)


def _compare(spec: IndexSpec, obj: Any, key: str, stored: Any, versions: dict[str, str],
             drift: Drift, *, max_images: int) -> None:
    text = spec.get_text(obj)
    blobs, _errors = read_images(spec, obj, max_images)
    if stored is None:
        has_content = bool(text) or bool(blobs)
        failed = not text and IndexState.objects.filter(
            model_label=spec.label, object_id=key, modality=Modality.IMAGE, status=Status.FAILED
        ).exists()
        if has_content and not failed:
            drift.keys["missing"].append(key)
        return
    payload = stored.payload
    if payload.get("text_hash") != text_hash(text) and text:
        drift.keys["stale_text"].append(key)
    if blobs and payload.get("image_hash") != blob_hash(blobs):
        drift.keys["stale_image"].append(key)
    expected = {**spec.get_payload(obj), "group": spec.get_group(obj)}
    if any(_normal(payload.get(name)) != _normal(value) for name, value in expected.items()):
        drift.keys["stale_payload"].append(key)
    stored_versions = payload.get("model_versions") or {}
    if any(stored_versions.get(m) != versions[m] for m in stored_versions):
        drift.keys["stale_model"].append(key)


def reconcile(model: Any = None, *, fix: bool = False, batch_size: int = 256) -> Drift:
    """Compare one spec's objects with its live index; with ``fix``, queue every drifted object."""
    spec = registry.get_spec(model)
    started, clock = timezone.now(), time.perf_counter()
    index = ensure_index(spec)
    versions = {"text": registry.text_encoder().version, "image": registry.image_encoder().version}
    max_images = get_settings().max_images
    drift = Drift(spec.label)
    present: set[str] = set()
    queryset = spec.get_queryset()
    for batch in iter_batches(queryset, batch_size):
        objects = [obj for obj in queryset.filter(pk__in=batch) if spec.should_index(obj)]
        keys = {spec.object_key(obj.pk): obj for obj in objects}
        stored = index.retrieve([spec.point_id(key) for key in keys])
        for key, obj in keys.items():
            _compare(spec, obj, key, stored.get(spec.point_id(key)), versions, drift, max_images=max_images)
        present.update(keys)
        drift.checked += len(keys)
    for point in index.iter_points(batch_size=batch_size):
        drift.points += 1
        key = str(point.payload.get("pk", ""))
        if key not in present:
            drift.keys["ghost"].append(key)
    drift.seconds = round(time.perf_counter() - clock, 3)
    if fix and drift.total:
        # Ghosts go through indexing too: it removes the points of objects that are gone, and
        # keeps an object created after the database scan (not a ghost after all).
        every = {key for keys in drift.keys.values() for key in keys}
        with transaction.atomic():
            capture_changes(spec, index_ids=sorted(every))
        drift.fixed = True
    ReconcileRun.objects.create(
        model_label=spec.label, started_at=started, checked=drift.checked, points=drift.points,
        counts=drift.counts(), fixed=drift.fixed, seconds=drift.seconds,
    )
    if drift.total:
        logger.warning("reconcile %s: %d drifted (%s)%s", spec.label, drift.total, drift.counts(),
                       "; queued for repair" if fix else "")
    return drift
