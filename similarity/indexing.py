"""Indexing: encode a batch of objects and write their points and index state.

:func:`index_products` is the one routine every write path ends in (tasks, commands, rebuilds):
it re-encodes a modality only when its content or model changed, always refreshes the payload
and removes what no longer exists. The batch is encoded by ``encoders.pipeline.submit_batch``
(decoding, the text and the image forward passes overlapped in threads); :func:`start_indexing`
lets a rebuild queue the next batch's encoding before it writes the previous one.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone

from . import registry
from .changes import db_now, pending_tokens, settle_outbox, upsert
from .conf import get_settings
from .index.base import PointData, VectorIndex
from .models import IndexState, PendingChange, Status
from .results import IndexReport
from .specs import IndexSpec, text_hash

logger = logging.getLogger(__name__)

#: index objects already checked in this process (ensure costs round trips to a server)
_ENSURED: weakref.WeakSet[Any] = weakref.WeakSet()


def ensure_index(spec: IndexSpec | None = None, index: VectorIndex | None = None) -> VectorIndex:
    """Create the spec's collection and payload indexes if missing; once per index object."""
    spec = registry.get_spec(spec)
    index = index or registry.vector_index(spec)
    if index not in _ENSURED:
        index.ensure(registry.vector_dims(), spec.full_payload_schema())
        _ENSURED.add(index)
    return index


@dataclass
class _Item:
    """One object being indexed in a batch."""

    obj: Any
    key: str
    point_id: str
    text: str
    text_hash: str
    image_blobs: list[tuple[str, bytes]] = field(default_factory=list)
    image_hash: str = ""
    image_errors: list[str] = field(default_factory=list)
    encode_text: bool = False
    encode_image: bool = False
    vectors: dict[str, list[float]] = field(default_factory=dict)


def read_images(spec: IndexSpec, obj: Any, limit: int) -> tuple[list[tuple[str, bytes]], list[str]]:
    blobs, errors = [], []
    for source in spec.get_images(obj)[:limit]:
        try:
            with source.open() as fh:
                blobs.append((source.name, fh.read()))
        except (OSError, ValueError) as exc:
            errors.append(f"{source.name}: cannot read file ({exc.__class__.__name__}: {exc})")
    return blobs, errors


def blob_hash(blobs: list[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for _name, data in blobs:
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()[:32]


def index_products(
    ids: Iterable[Any], *, model: Any = None, force: bool = False, index: VectorIndex | None = None,
    settle: bool = True,
) -> IndexReport:
    """Bring the index in line with the database for ``ids``: the one indexing routine.

    Re-encodes a modality only when its content hash or model version changed (or ``force``),
    keeps the stored vector otherwise, refreshes the payload always, removes objects that no
    longer exist. Raises :class:`IndexUnavailable` (retryable) when the store is down; then
    nothing is marked done and the outbox rows stay. ``settle=False`` (a rebuild
    filling a new generation) leaves the outbox to the live path.
    """
    return start_indexing(ids, model=model, force=force, index=index, settle=settle)()


@dataclass
class StartedIndexing:
    """What :func:`start_indexing` returns: call it to write the batch (waiting for its vectors);
    :meth:`cancel` drops its encoding where it has not started (the batch is then not written)."""

    finish: Callable[[], IndexReport]
    cancel: Callable[[], None] = lambda: None

    def __call__(self) -> IndexReport:
        return self.finish()


def start_indexing(
    ids: Iterable[Any], *, model: Any = None, force: bool = False, index: VectorIndex | None = None,
    settle: bool = True,
) -> StartedIndexing:
    """:func:`index_products` in two steps: this reads the objects and queues their encoding
    (``encoders.pipeline.submit_batch``), and returns the step that waits for the vectors and
    writes the points and the state. A rebuild starts batch N+1 before it finishes batch N, so
    the models encode while the previous batch is written. The batches must be disjoint."""
    spec = registry.get_spec(model)
    label = spec.label
    keys = sorted({spec.object_key(i) for i in ids})
    report = IndexReport()
    if not keys:
        return StartedIndexing(lambda: report)
    conf = get_settings()
    index = index or registry.vector_index(spec)
    text_encoder, image_encoder = registry.text_encoder(), registry.image_encoder()
    versions = {"text": text_encoder.version, "image": image_encoder.version}

    # Before the objects are read: the database clock (orders this read against other tasks')
    # and the changes this read will cover (only those are marked done afterwards).
    read_at = db_now().astimezone(UTC).isoformat(timespec="microseconds")
    tokens = pending_tokens(label, keys)
    found = spec.get_queryset().filter(pk__in=[spec.to_pk(key) for key in keys])
    objects = {spec.object_key(obj.pk): obj for obj in found}
    gone = [key for key in keys if key not in objects or not spec.should_index(objects[key])]
    for key in gone:
        objects.pop(key, None)

    items: list[_Item] = []
    for key, obj in objects.items():
        text = spec.get_text(obj)
        blobs, read_errors = read_images(spec, obj, conf.max_images)
        items.append(
            _Item(obj=obj, key=key, point_id=spec.point_id(key), text=text, text_hash=text_hash(text),
                  image_blobs=blobs, image_hash=blob_hash(blobs) if blobs else "",
                  image_errors=read_errors)
        )

    ensure_index(spec, index)
    stored = {} if force else index.retrieve([i.point_id for i in items], with_vectors=True)

    def needs(item: _Item, modality: str, content: str) -> bool:
        """Decided by the point in the index being written (a rebuild's new generation, or the
        live one), not by shared state: a vector is kept only if that index has it, made from
        the same content by the same model."""
        have = stored.get(item.point_id)
        if force or have is None or modality not in have.vectors:
            return True
        stored_hash = have.payload.get("text_hash" if modality == "text" else "image_hash")
        stored_version = (have.payload.get("model_versions") or {}).get(modality)
        return bool(stored_hash != content or stored_version != versions[modality])

    for item in items:
        item.encode_text = bool(item.text) and needs(item, "text", item.text_hash)
        item.encode_image = bool(item.image_blobs) and needs(item, "image", item.image_hash)
        have = stored.get(item.point_id)
        if have is not None:
            if item.text and not item.encode_text:
                item.vectors["text"] = have.vectors["text"]
            if item.image_blobs and not item.encode_image:  # made from the readable ones, as now
                item.vectors["image"] = have.vectors["image"]

    # -- encode, in batches: decode, text and image passes overlapped (encoders/pipeline.py) ---
    text_items = [item for item in items if item.encode_text]
    image_jobs = [(pos, name, data) for pos, item in enumerate(items) if item.encode_image
                  for name, data in item.image_blobs]
    encoding = None
    if text_items or image_jobs:
        from .encoders.pipeline import submit_batch  # Pillow + threads; kept off pages' imports

        encoding = submit_batch(text_encoder, [item.text for item in text_items], image_encoder, image_jobs,
                                max_pixels=conf.max_image_pixels)

    target: VectorIndex = index

    def finish() -> IndexReport:
        if encoding is not None:
            _take_vectors(encoding(), items, text_items, report)
        return _write(spec, target, items, gone, tokens, versions, read_at, report, settle=settle)

    return StartedIndexing(finish, encoding.cancel if encoding is not None else StartedIndexing.cancel)


def _take_vectors(encoded: Any, items: list[_Item], text_items: list[_Item], report: IndexReport) -> None:
    """The batch's vectors onto its items (several images: their mean, normalised)."""
    if encoded.text is not None:
        for item, vector in zip(text_items, encoded.text, strict=True):
            item.vectors["text"] = vector.tolist()
        report.encoded["text"] += len(text_items)
    for pos, error in encoded.errors:
        items[pos].image_errors.append(error)
    per_item: dict[int, list[np.ndarray]] = {}
    for pos, vector in encoded.images:
        per_item.setdefault(pos, []).append(vector)
    for pos, vectors in per_item.items():
        # Several images: the mean of their normalised vectors, normalised again.
        mean = np.mean(vectors, axis=0)
        items[pos].vectors["image"] = (mean / max(np.linalg.norm(mean), 1e-12)).tolist()
        report.encoded["image"] += 1


def _write(spec: IndexSpec, index: VectorIndex, items: list[_Item], gone: list[str], tokens: Any,
           versions: dict[str, str], read_at: str, report: IndexReport, *, settle: bool) -> IndexReport:
    """Write the points, then the state."""
    label = spec.label
    points = []
    for item in items:
        if not item.vectors:
            continue  # nothing to search with (no text, no usable image)
        payload = {
            **spec.get_payload(item.obj), "pk": item.key, "model": label,
            "group": spec.get_group(item.obj), "text_hash": item.text_hash,
            "image_hash": item.image_hash,
            "model_versions": {m: versions[m] for m in item.vectors}, "read_at": read_at,
        }
        points.append(PointData(item.point_id, item.vectors, payload))
    stale = [i.point_id for i in items if not i.vectors] + [spec.point_id(key) for key in gone]
    # Objects deleted while this batch was encoding are not written back (a delete leaves no
    # point to compare read times with, so ask the database once more).
    keys_of = {item.point_id: item.key for item in items}
    still = {spec.object_key(pk) for pk in spec.get_queryset().filter(
        pk__in=[spec.to_pk(keys_of[p.id]) for p in points]).values_list("pk", flat=True)}
    vanished = [p.id for p in points if keys_of[p.id] not in still]
    if vanished:
        points = [p for p in points if p.id not in set(vanished)]
        stale += vanished
        # ... and get no state row (the delete's own task may have removed theirs already)
        vanished_keys = {keys_of[point_id] for point_id in vanished}
        items = [item for item in items if item.key not in vanished_keys]
        gone = [*gone, *sorted(vanished_keys)]
    newer = _written_by_newer_reads(index, [p.id for p in points], read_at)
    if newer:  # another task read these objects after us and already wrote them: its state wins
        logger.info("%s: %d objects were indexed from a newer read meanwhile; not overwritten", label, len(newer))
        points = [p for p in points if p.id not in newer]
    index.upsert(points)
    index.delete(stale)

    now = timezone.now()
    new_states = []
    for item in items:
        for modality, content, has_content in (
            ("text", item.text_hash, bool(item.text)),
            ("image", item.image_hash, bool(item.image_blobs) or bool(item.image_errors)),
        ):
            ok = modality in item.vectors
            errors = item.image_errors if modality == "image" else []
            if not has_content:
                status, error = Status.NO_CONTENT, ""
            elif ok:
                status, error = Status.INDEXED, "\n".join(errors)
            else:
                status, error = Status.FAILED, "\n".join(errors) or "could not encode"
                report.failed[modality] += 1
                report.errors.append(f"{label}:{item.key} {modality}: {error}")
            new_states.append(
                IndexState(
                    model_label=label, object_id=item.key, modality=modality, status=status,
                    content_hash=content, model_version=versions[modality] if ok else "",
                    error=error, updated_at=now, indexed_at=now if ok else None,
                )
            )
    with transaction.atomic():
        # The outbox first, then the index state: the order a rebuild's final pass takes its
        # locks in (PostgreSQL would otherwise find a deadlock between the two).
        if settle:
            settle_outbox(tokens)
        upsert(
            IndexState, new_states, unique_fields=["model_label", "object_id", "modality"],
            update_fields=["status", "content_hash", "model_version", "error", "updated_at", "indexed_at"],
        )
        if gone:
            IndexState.objects.filter(model_label=label, object_id__in=gone).delete()
    report.covered.extend(tokens)
    report.indexed += len(points)
    report.removed += len(gone)
    for error in report.errors:
        logger.warning("indexing problem: %s", error)
    return report


def _written_by_newer_reads(index: VectorIndex, point_ids: list[str], read_at: str) -> set[str]:
    """Points whose stored ``read_at`` is later than ours (ISO strings of one clock compare as
    times): checked right before writing, so two tasks for one object never let the older
    read win."""
    if not point_ids:
        return set()
    current = index.retrieve(point_ids)
    return {pid for pid, point in current.items() if str(point.payload.get("read_at") or "") > read_at}


def remove_products(ids: Iterable[Any], *, model: Any = None, index: VectorIndex | None = None) -> int:
    """Delete the points of ``ids`` (objects deleted from the database)."""
    spec = registry.get_spec(model)
    keys = sorted({spec.object_key(i) for i in ids})
    if not keys:
        return 0
    tokens = pending_tokens(spec.label, keys, action=PendingChange.Action.REMOVE)  # a re-created object stays queued
    index = index or registry.vector_index(spec)
    index.delete([spec.point_id(key) for key in keys])
    with transaction.atomic():
        settle_outbox(tokens)
        IndexState.objects.filter(model_label=spec.label, object_id__in=keys).delete()
    return len(keys)
