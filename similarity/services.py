"""The one service layer: tasks, commands, admin, views and template tags all call these.

Write side: :func:`index_products`, :func:`remove_products`, :func:`record_changes`,
:func:`dispatch_changes`, :func:`process_pending`, :func:`rebuild_index`.
Read side: :func:`find_similar`, :func:`index_health`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string

from . import registry
from .conf import get_settings  # noqa: F401 - re-exported for commands
from .exceptions import EncodingError, IndexUnavailable, SimilarityError
from .index.base import VECTOR_NAMES, PointData, SearchFilter, VectorIndex
from .models import IndexState, Modality, PendingChange, RebuildCheckpoint, Status
from .results import IndexReport, ResultStatus, SimilarHit, SimilarResult
from .specs import IndexSpec, text_hash

logger = logging.getLogger(__name__)

#: payload fields every point carries, whatever the spec adds
BASE_PAYLOAD_SCHEMA = {"pk": "integer", "group": "integer", "model": "keyword"}


def _spec(model: Any = None) -> IndexSpec:
    if model is None:
        return next(iter(registry.specs().values()))  # type: ignore[no-any-return]
    return registry.spec_for(model)  # type: ignore[no-any-return]


def payload_schema(spec: IndexSpec) -> dict[str, str]:
    return {**BASE_PAYLOAD_SCHEMA, **spec.payload_schema}


def vector_dims() -> dict[str, int]:
    return {"image": registry.image_encoder().dim, "text": registry.text_encoder().dim}


#: index objects already checked in this process (ensure costs round trips to a server)
_ENSURED: weakref.WeakSet[Any] = weakref.WeakSet()


def ensure_index(spec: IndexSpec | None = None, index: VectorIndex | None = None) -> VectorIndex:
    """Create the collection and payload indexes if missing; once per index object."""
    spec = spec or _spec()
    index = index or registry.vector_index()
    if index not in _ENSURED:
        index.ensure(vector_dims(), payload_schema(spec))
        _ENSURED.add(index)
    return index


# ---------------------------------------------------------------------------------------------
# Change capture: outbox rows in the committing transaction, tasks after commit
# ---------------------------------------------------------------------------------------------
def record_changes(label: str, index_ids: Iterable[int] = (), remove_ids: Iterable[int] = ()) -> None:
    """Write outbox rows in the current transaction, and mark the objects' index state
    ``pending`` so the admin shows what is waiting (two queries per call)."""
    now = timezone.now()
    rows = [
        PendingChange(model_label=label, object_id=pk, action=PendingChange.Action.INDEX, created_at=now)
        for pk in set(index_ids) - set(remove_ids)
    ] + [
        PendingChange(model_label=label, object_id=pk, action=PendingChange.Action.REMOVE, created_at=now)
        for pk in set(remove_ids)
    ]
    if rows:
        PendingChange.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["model_label", "object_id"],
            update_fields=["action", "created_at", "processed_at"],
        )
    waiting = set(index_ids) - set(remove_ids)
    if waiting:
        IndexState.objects.bulk_create(
            [IndexState(model_label=label, object_id=pk, modality=modality, status=Status.PENDING, updated_at=now)
             for pk in waiting for modality in Modality.values],
            update_conflicts=True, unique_fields=["model_label", "object_id", "modality"],
            update_fields=["status", "updated_at"],
        )


def dispatch_changes(label: str, index_ids: Iterable[int] = (), remove_ids: Iterable[int] = ()) -> None:
    """Hand committed changes to the task queue. Never raises: the outbox keeps what fails."""
    index_ids, remove_ids = sorted(set(index_ids) - set(remove_ids)), sorted(set(remove_ids))
    dispatcher = import_string(get_settings().dispatcher)
    try:
        dispatcher(label, index_ids, remove_ids)
    except Exception:  # broker down, or an eager task that found Qdrant down
        logger.warning(
            "could not process %d changes of %s now; they stay pending for "
            "`similarity_reindex --pending`", len(index_ids) + len(remove_ids), label, exc_info=True,
        )


# ---------------------------------------------------------------------------------------------
# Indexing
# ---------------------------------------------------------------------------------------------
@dataclass
class _Item:
    """One object being indexed in a batch."""

    obj: Any
    point_id: str
    text: str
    text_hash: str
    image_blobs: list[tuple[str, bytes]] = field(default_factory=list)
    image_hash: str = ""
    image_errors: list[str] = field(default_factory=list)
    encode_text: bool = False
    encode_image: bool = False
    vectors: dict[str, list[float]] = field(default_factory=dict)


def _read_images(spec: IndexSpec, obj: Any, limit: int) -> tuple[list[tuple[str, bytes]], list[str]]:
    blobs, errors = [], []
    for source in spec.get_images(obj)[:limit]:
        try:
            with source.open() as fh:
                blobs.append((source.name, fh.read()))
        except (OSError, ValueError) as exc:
            errors.append(f"{source.name}: cannot read file ({exc.__class__.__name__}: {exc})")
    return blobs, errors


def _blob_hash(blobs: list[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for _name, data in blobs:
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()[:32]


def _decode_all(items: list[_Item], max_pixels: int) -> list[tuple[int, Any]]:
    """Decode and preprocess every image of the items needing it, in a thread pool.

    Returns (item position, preprocessed tensor) pairs; errors are recorded on the items.
    """
    from .encoders.images import open_image

    encoder = registry.image_encoder()
    jobs = [(pos, name, data) for pos, item in enumerate(items) if item.encode_image
            for name, data in item.image_blobs]

    def work(job: tuple[int, str, bytes]) -> tuple[int, Any, str]:
        pos, name, data = job
        try:
            image = open_image(io.BytesIO(data), name=name, max_pixels=max_pixels)
            return pos, encoder.preprocess(image), ""
        except EncodingError as exc:
            return pos, None, str(exc)

    workers = max(1, min(4, len(jobs)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(work, jobs))
    decoded = []
    for pos, tensor, error in results:
        if error:
            items[pos].image_errors.append(error)
        else:
            decoded.append((pos, tensor))
    return decoded


def index_products(
    ids: Iterable[int], *, model: Any = None, force: bool = False, index: VectorIndex | None = None,
    settle_outbox: bool = True,
) -> IndexReport:
    """Bring the index in line with the database for ``ids``: the one indexing routine.

    Re-encodes a modality only when its content hash or model version changed (or ``force``),
    keeps the stored vector otherwise, refreshes the payload always, removes objects that no
    longer exist. Raises :class:`IndexUnavailable` (retryable) when the store is down; then
    nothing is marked done and the outbox rows stay. ``settle_outbox=False`` (a rebuild
    filling a new generation) leaves the outbox to the live path.
    """
    spec = _spec(model)
    label = spec.label
    ids = sorted({int(i) for i in ids})
    report = IndexReport()
    if not ids:
        return report
    started = timezone.now()
    conf = get_settings()
    index = index or registry.vector_index()
    text_encoder, image_encoder = registry.text_encoder(), registry.image_encoder()
    versions = {"text": text_encoder.version, "image": image_encoder.version}

    objects = {obj.pk: obj for obj in spec.get_queryset().filter(pk__in=ids)}
    gone = [pk for pk in ids if pk not in objects or not spec.should_index(objects[pk])]
    for pk in gone:
        objects.pop(pk, None)

    states = {
        (s.object_id, s.modality): s
        for s in IndexState.objects.filter(model_label=label, object_id__in=list(objects))
    }
    items: list[_Item] = []
    for obj in objects.values():
        text = spec.get_text(obj)
        blobs, read_errors = _read_images(spec, obj, conf.max_images)
        items.append(
            _Item(obj=obj, point_id=spec.point_id(obj.pk), text=text, text_hash=text_hash(text),
                  image_blobs=blobs, image_hash=_blob_hash(blobs) if blobs else "",
                  image_errors=read_errors)
        )

    ensure_index(spec, index)
    stored = {} if force else index.retrieve([i.point_id for i in items], with_vectors=True)

    def needs(item: _Item, modality: str, content: str) -> bool:
        state = states.get((item.obj.pk, modality))
        have = stored.get(item.point_id)
        # "pending" only says a change was recorded: unchanged content keeps its vector.
        return (
            force or state is None or state.status == Status.FAILED or state.content_hash != content
            or state.model_version != versions[modality] or have is None or modality not in have.vectors
        )

    for item in items:
        item.encode_text = bool(item.text) and needs(item, "text", item.text_hash)
        item.encode_image = bool(item.image_blobs) and needs(item, "image", item.image_hash)
        have = stored.get(item.point_id)
        if have is not None:
            if item.text and not item.encode_text:
                item.vectors["text"] = have.vectors["text"]
            if item.image_blobs and not item.encode_image and not item.image_errors:
                item.vectors["image"] = have.vectors["image"]

    # -- encode, in batches ------------------------------------------------------------------
    text_items = [item for item in items if item.encode_text]
    if text_items:
        vectors = text_encoder.encode([item.text for item in text_items])
        for item, vector in zip(text_items, vectors, strict=True):
            item.vectors["text"] = vector.tolist()
        report.encoded["text"] += len(text_items)

    if any(item.encode_image for item in items):
        decoded = _decode_all(items, conf.max_image_pixels)
        if decoded:
            matrix = image_encoder.encode_tensors([tensor for _pos, tensor in decoded])
            per_item: dict[int, list[np.ndarray]] = {}
            for (pos, _tensor), vector in zip(decoded, matrix, strict=True):
                per_item.setdefault(pos, []).append(vector)
            for pos, vectors in per_item.items():
                # Several images: the mean of their normalised vectors, normalised again.
                mean = np.mean(vectors, axis=0)
                items[pos].vectors["image"] = (mean / max(np.linalg.norm(mean), 1e-12)).tolist()
                report.encoded["image"] += 1

    # -- write the points, then the state ----------------------------------------------------
    points = []
    for item in items:
        if not item.vectors:
            continue  # nothing to search with (no text, no usable image)
        payload = {
            **spec.get_payload(item.obj), "pk": item.obj.pk, "model": label,
            "group": spec.get_group(item.obj), "text_hash": item.text_hash,
            "image_hash": item.image_hash,
            "model_versions": {m: versions[m] for m in item.vectors},
        }
        points.append(PointData(item.point_id, item.vectors, payload))
    stale = [i.point_id for i in items if not i.vectors] + [spec.point_id(pk) for pk in gone]
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
                report.errors.append(f"{label}:{item.obj.pk} {modality}: {error}")
            new_states.append(
                IndexState(
                    model_label=label, object_id=item.obj.pk, modality=modality, status=status,
                    content_hash=content, model_version=versions[modality] if ok else "",
                    error=error, updated_at=now, indexed_at=now if ok else None,
                )
            )
    with transaction.atomic():
        IndexState.objects.bulk_create(
            new_states, update_conflicts=True, unique_fields=["model_label", "object_id", "modality"],
            update_fields=["status", "content_hash", "model_version", "error", "updated_at", "indexed_at"],
        )
        if gone:
            IndexState.objects.filter(model_label=label, object_id__in=gone).delete()
        if settle_outbox:
            _settle(label, ids, started)
    report.indexed += len(points)
    report.removed += len(gone)
    for error in report.errors:
        logger.warning("indexing problem: %s", error)
    return report


def remove_products(ids: Iterable[int], *, model: Any = None, index: VectorIndex | None = None) -> int:
    """Delete the points of ``ids`` (objects deleted from the database)."""
    spec = _spec(model)
    ids = sorted({int(i) for i in ids})
    if not ids:
        return 0
    started = timezone.now()
    index = index or registry.vector_index()
    index.delete([spec.point_id(pk) for pk in ids])
    with transaction.atomic():
        IndexState.objects.filter(model_label=spec.label, object_id__in=ids).delete()
        _settle(spec.label, ids, started)
    return len(ids)


#: processed outbox rows are kept this long, so a rebuild can catch up with what changed
OUTBOX_RETENTION_HOURS = 24


def _settle(label: str, ids: list[int], started: datetime) -> None:
    """Mark outbox rows done. Rows recorded after ``started`` are newer than what was read,
    so they stay pending."""
    from datetime import timedelta

    now = timezone.now()
    PendingChange.objects.filter(
        model_label=label, object_id__in=ids, created_at__lte=started, processed_at__isnull=True
    ).update(processed_at=now)
    PendingChange.objects.filter(
        processed_at__lt=now - timedelta(hours=OUTBOX_RETENTION_HOURS)
    ).delete()


# ---------------------------------------------------------------------------------------------
# Bulk work for the reindex command
# ---------------------------------------------------------------------------------------------
def iter_batches(queryset: Any, batch_size: int, start_after: int = 0) -> Iterator[list[int]]:
    """Keyset pagination over primary keys (never OFFSET)."""
    last = start_after
    while True:
        batch = list(queryset.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not batch:
            return
        yield batch
        last = batch[-1]


def process_pending(
    *, model: Any = None, batch_size: int = 64, enqueue: bool = False,
    progress: Callable[[int], None] | None = None,
) -> IndexReport:
    """Do (or enqueue) every change in the outbox."""
    spec = _spec(model)
    report = IndexReport()
    pending = PendingChange.objects.filter(model_label=spec.label, processed_at__isnull=True)
    last = 0
    while True:
        rows = list(pending.filter(pk__gt=last).order_by("pk")[:batch_size])
        if not rows:
            return report
        last = rows[-1].pk
        to_index = [r.object_id for r in rows if r.action == PendingChange.Action.INDEX]
        to_remove = [r.object_id for r in rows if r.action == PendingChange.Action.REMOVE]
        PendingChange.objects.filter(pk__in=[r.pk for r in rows]).update(attempts=F("attempts") + 1)
        if enqueue:
            import_string(get_settings().dispatcher)(spec.label, to_index, to_remove)
        else:
            report.merge(index_products(to_index, model=spec.label))
            report.removed += remove_products(to_remove, model=spec.label)
        if progress:
            progress(len(rows))


def failed_ids(model: Any = None) -> Any:
    spec = _spec(model)
    return (
        IndexState.objects.filter(model_label=spec.label, status=Status.FAILED)
        .values_list("object_id", flat=True).distinct()
    )


def rebuild_index(
    *, model: Any = None, batch_size: int = 64, progress: Callable[[int], None] | None = None,
    resume: bool = True,
) -> IndexReport:
    """Re-encode everything into a new generation and switch to it atomically.

    The live index keeps answering meanwhile. Progress is checkpointed per batch, so an
    interrupted rebuild resumes where it stopped (``resume=False`` starts afresh).
    Changes committed while it runs are caught up before the switch.
    """
    spec = _spec(model)
    live = registry.vector_index()
    checkpoint = RebuildCheckpoint.objects.filter(model_label=spec.label).first()
    if checkpoint and resume:
        target = live.resume_rebuild(checkpoint.generation)
        logger.info("resuming rebuild of %s after pk %s", spec.label, checkpoint.last_pk)
    else:
        if checkpoint:
            live.abandon_rebuild(checkpoint.generation)
            checkpoint.delete()
        target = live.start_rebuild(vector_dims(), payload_schema(spec))
        checkpoint = RebuildCheckpoint.objects.create(
            model_label=spec.label, generation=target.generation, last_pk=0
        )
    report = IndexReport()
    queryset = spec.get_queryset()
    for batch in iter_batches(queryset, batch_size, start_after=checkpoint.last_pk):
        report.merge(
            index_products(batch, model=spec.label, force=True, index=target, settle_outbox=False)
        )
        RebuildCheckpoint.objects.filter(pk=checkpoint.pk).update(last_pk=batch[-1])
        if progress:
            progress(len(batch))
    _catch_up(spec, target, since=checkpoint.started_at, report=report)
    live.finish_rebuild(target)
    checkpoint.delete()
    return report


def _catch_up(spec: IndexSpec, target: VectorIndex, *, since: datetime, report: IndexReport) -> None:
    """Apply to ``target`` every change committed since the rebuild started (the outbox keeps
    processed rows for a while, so changes the live path already handled are seen too)."""
    changes = PendingChange.objects.filter(model_label=spec.label, created_at__gte=since)
    changed = sorted(set(changes.values_list("object_id", flat=True)))
    for start in range(0, len(changed), 256):
        # index_products removes from ``target`` what no longer exists.
        report.merge(
            index_products(
                changed[start : start + 256], model=spec.label, force=True, index=target,
                settle_outbox=False,
            )
        )


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def _category_filter_value(payload: dict[str, Any], level: int) -> int | None:
    path = payload.get("category_path") or []
    if not path:
        return None
    return int(path[min(level, len(path)) - 1])


def find_similar(
    obj: Any,
    *,
    limit: int = 10,
    same_category: int | bool | None = None,
    in_stock: bool = False,
    brand: str | None = None,
    exclude_variants: bool = True,
    one_per_group: bool = True,
    weights: dict[str, float] | None = None,
    modalities: Iterable[str] = VECTOR_NAMES,
) -> SimilarResult:
    """Products most like ``obj``: fused image+text cosine, with per-modality scores.

    ``same_category``: ``True`` = the product's own (deepest) category, an int N = the same
    ancestor at depth N (1 = top level). Never raises for an unindexed object or a store that
    is down: the result's ``status`` says so.
    """
    spec = _spec(type(obj))
    conf = get_settings()
    weights = dict(weights or conf.weights)
    index = registry.vector_index()
    point_id = spec.point_id(obj.pk)
    try:
        stored = index.retrieve([point_id], with_vectors=True).get(point_id)
        if stored is None:
            return SimilarResult(ResultStatus.NOT_INDEXED, message=f"{obj} is not indexed yet")
        query_vectors = {m: v for m, v in stored.vectors.items() if m in modalities and weights.get(m, 0) > 0}
        if not query_vectors:
            return SimilarResult(ResultStatus.NOT_INDEXED, message=f"{obj} has no vectors to compare")
        search_filter = _build_filter(
            stored.payload, point_id, same_category=same_category, in_stock=in_stock, brand=brand,
            exclude_variants=exclude_variants,
        )
        scored = rank_candidates(
            index, query_vectors, search_filter, fetch=max(conf.candidates, limit * 4), weights=weights
        )
    except IndexUnavailable as exc:
        logger.warning("find_similar(%s): index unavailable: %s", obj.pk, exc)
        return SimilarResult(ResultStatus.UNAVAILABLE, message=str(exc))

    hits: list[tuple[float, dict[str, float], dict[str, Any]]] = []
    seen_groups: set[Any] = set()
    for score, scores, payload in scored:
        group = payload.get("group")
        if one_per_group and group is not None:
            if group in seen_groups:
                continue
            seen_groups.add(group)
        hits.append((score, scores, payload))
        if len(hits) >= limit:
            break
    objects = spec.get_queryset().in_bulk([payload["pk"] for _s, _m, payload in hits])
    return SimilarResult(
        ResultStatus.OK,
        [
            SimilarHit(objects[payload["pk"]], payload["pk"], score, scores)
            for score, scores, payload in hits
            if payload["pk"] in objects
        ],
    )


def _build_filter(
    payload: dict[str, Any], point_id: str, *, same_category: int | bool | None, in_stock: bool,
    brand: str | None, exclude_variants: bool,
) -> SearchFilter:
    match: dict[str, Any] = {}
    exclude: dict[str, Any] = {}
    if same_category:
        level = 99 if same_category is True else int(same_category)
        category = _category_filter_value(payload, level)
        if category is not None:
            match["category_ids"] = category
    if in_stock:
        match["in_stock"] = True
    if brand:
        match["brand"] = brand
    if exclude_variants and payload.get("group") is not None:
        exclude["group"] = payload["group"]
    return SearchFilter(match=match, exclude=exclude, exclude_ids=frozenset({point_id}))


def rank_candidates(
    index: VectorIndex, query_vectors: dict[str, list[float]], search_filter: SearchFilter, *,
    fetch: int, weights: dict[str, float],
) -> list[tuple[float, dict[str, float], dict[str, Any]]]:
    """The index side of :func:`find_similar`: ``fetch`` nearest points per modality, every
    candidate's cosine in each modality, fused; best first as (score, scores, payload)."""
    scores: dict[str, dict[str, float]] = {}
    payloads: dict[str, dict[str, Any]] = {}
    for modality, vector in query_vectors.items():
        for hit in index.query(modality, vector, limit=fetch, filter=search_filter):
            scores.setdefault(hit.id, {})[modality] = hit.score
            payloads[hit.id] = hit.payload
    # A candidate found through one modality gets its exact score in the other one too: one
    # more query restricted to those ids (cheaper than fetching their vectors).
    for modality, vector in query_vectors.items():
        missing = frozenset(i for i, s in scores.items() if modality not in s)
        if missing:
            for hit in index.query(modality, vector, limit=len(missing), filter=SearchFilter(ids=missing)):
                scores[hit.id][modality] = hit.score
    return _fuse(scores, payloads, weights)


def _fuse(
    scores: dict[str, dict[str, float]], payloads: dict[str, dict[str, Any]], weights: dict[str, float],
) -> list[tuple[float, dict[str, float], dict[str, Any]]]:
    """Fuse every candidate's per-modality cosines with :func:`fuse_scores`, best first."""
    ids = list(scores)
    modalities = sorted({m for per_id in scores.values() for m in per_id})
    cosines = {
        m: np.array([scores[i].get(m, np.nan) for i in ids], dtype=np.float64) for m in modalities
    }
    fused = fuse_scores(cosines, weights)
    rows = [
        (float(fused[n]), scores[i], payloads[i]) for n, i in enumerate(ids) if np.isfinite(fused[n])
    ]
    rows.sort(key=lambda row: row[0], reverse=True)
    return rows


#: how per-modality cosines are made comparable before weighting. "none" measured best on
#: flipkart-1050 (p@10 0.783 vs 0.780 for "zscore", also with 30% of images missing); see
#: docs/evaluation.md. "zscore" is kept for encoders whose cosine ranges differ a lot.
FUSION_NORMALISATION = "none"


def fuse_scores(
    cosines: dict[str, np.ndarray], weights: dict[str, float], *, normalisation: str | None = None,
) -> np.ndarray:
    """The one fusion rule, vectorised: ``cosines[m]`` has shape (..., candidates), NaN where a
    candidate lacks modality m. Returns the fused scores (-inf where no modality scored).

    ``zscore``: each modality's cosines are standardised over the candidate set of that query
    (last axis) before the weighted mean, so a weight means the same share of influence whatever
    the spread of a model's cosines (EfficientNet's sit in a narrow high band, MiniLM's spread
    wide). ``none``: the weighted mean of raw cosines. Either way a candidate lacking a modality
    is scored on the modalities it has.
    """
    how = normalisation or FUSION_NORMALISATION
    total = weighted = None
    for m, raw in cosines.items():
        w = float(weights.get(m, 0.0))
        if w <= 0:
            continue
        values = np.asarray(raw, dtype=np.float64)
        if how == "zscore":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no such modality
                mean = np.nanmean(values, axis=-1, keepdims=True)
                std = np.nanstd(values, axis=-1, keepdims=True)
            values = (values - mean) / np.where(std > 1e-9, std, 1.0)
        elif how != "none":
            raise ValueError(f"unknown fusion normalisation {how!r}")
        present = ~np.isnan(values)
        part = np.where(present, w * values, 0.0)
        weight = np.where(present, w, 0.0)
        weighted = part if weighted is None else weighted + part
        total = weight if total is None else total + weight
    if weighted is None or total is None:
        shape = next(iter(cosines.values())).shape if cosines else (0,)
        return np.full(shape, -np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weighted / np.where(total > 0, total, 1.0), -np.inf)


def index_health(model: Any = None) -> dict[str, Any]:
    """Counts per modality and status, model versions present, oldest pending change."""
    from django.db.models import Count, Min

    spec = _spec(model)
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
            pk__in=states.filter(status=Status.INDEXED).values("object_id")
        ).count(),
        "recent_errors": list(
            states.filter(status=Status.FAILED).exclude(error="").order_by("-updated_at")
            .values("object_id", "modality", "error", "updated_at")[:20]
        ),
    }




# ---------------------------------------------------------------------------------------------
# Search by a typed query or a photo (text → text vectors, photo → image vectors)
# ---------------------------------------------------------------------------------------------
def _search(using: str, vector: list[float], *, model: Any, limit: int, in_stock: bool,
            category_id: int | None) -> SimilarResult:
    spec = _spec(model)
    match: dict[str, Any] = {}
    if in_stock:
        match["in_stock"] = True
    if category_id is not None:
        match["category_ids"] = int(category_id)
    try:
        hits = registry.vector_index().query(
            using, vector, limit=limit, filter=SearchFilter(match=match) if match else None
        )
    except IndexUnavailable as exc:
        logger.warning("search by %s: index unavailable: %s", using, exc)
        return SimilarResult(ResultStatus.UNAVAILABLE, message=str(exc))
    objects = spec.get_queryset().in_bulk([h.payload["pk"] for h in hits])
    return SimilarResult(
        ResultStatus.OK,
        [SimilarHit(objects[h.payload["pk"]], h.payload["pk"], h.score, {using: h.score})
         for h in hits if h.payload.get("pk") in objects],
    )


def search_text(
    query: str, *, model: Any = None, limit: int = 20, in_stock: bool = False,
    category_id: int | None = None,
) -> SimilarResult:
    """Semantic search: the typed query against the products' text vectors."""
    query = " ".join(query.split())
    if not query:
        return SimilarResult(ResultStatus.OK, message="empty query")
    vector = registry.text_encoder().encode([query])[0].tolist()
    return _search("text", vector, model=model, limit=limit, in_stock=in_stock, category_id=category_id)


def search_image(
    fp: Any, *, model: Any = None, limit: int = 20, in_stock: bool = False,
    category_id: int | None = None, name: str = "upload",
) -> SimilarResult:
    """Visual search: a photo (path or file object) against the products' image vectors.

    Raises :class:`EncodingError` when the upload is not a usable image.
    """
    from .encoders.images import open_image

    image = open_image(fp, name=name, max_pixels=get_settings().max_image_pixels)
    vector = registry.image_encoder().encode([image])[0].tolist()
    return _search("image", vector, model=model, limit=limit, in_stock=in_stock, category_id=category_id)


# ---------------------------------------------------------------------------------------------
# Storefront and admin reads: cached similar products with a category fallback, reindex requests
# ---------------------------------------------------------------------------------------------
#: cached neighbour lists live this long at most, so products indexed since then get their
#: chance to appear; re-indexing the product or any cached neighbour invalidates at once
SIMILAR_CACHE_SECONDS = 3600


def _index_stamp(label: str, ids: Iterable[int]) -> str:
    """Changes whenever any of ``ids`` is (re-)indexed, removed or moved to another model
    version: one query over the index state rows."""
    from django.db.models import Count, Max

    row = IndexState.objects.filter(model_label=label, object_id__in=list(ids)).aggregate(
        latest=Max("updated_at"), rows=Count("id")
    )
    latest = row["latest"].isoformat() if row["latest"] else "-"
    return f"{latest}/{row['rows']}"


def _similar_cache_key(label: str, pk: int, options: dict[str, Any]) -> str:
    conf = get_settings()
    fingerprint = repr((
        sorted(options.items()), conf.text_model, conf.image_model, conf.image_checkpoint,
        sorted(conf.weights.items()), conf.candidates, conf.index.backend, conf.index.path,
        conf.index.url, conf.index.collection,
    ))
    digest = hashlib.sha1(fingerprint.encode(), usedforsecurity=False).hexdigest()[:16]
    return f"similarity:similar:{label}:{pk}:{digest}"


def category_fallback(obj: Any, *, limit: int = 8, in_stock: bool = False) -> list[SimilarHit]:
    """Other products of ``obj``'s category (newest first): what a widget shows while the
    index cannot answer. Scores are 0 and there are no per-modality scores."""
    spec = _spec(type(obj))
    queryset = spec.get_queryset().exclude(pk=obj.pk)
    category_id = getattr(obj, "category_id", None)
    if category_id is None:
        return []
    queryset = queryset.filter(category_id=category_id)
    if in_stock:
        queryset = queryset.filter(in_stock=True)
    return [SimilarHit(other, other.pk, 0.0, {}) for other in queryset.order_by("-pk")[:limit]]


def similar_products(
    obj: Any, *, limit: int = 8, same_category: int | bool | None = None, in_stock: bool = False,
    fallback: bool = True, cache_timeout: int = SIMILAR_CACHE_SECONDS,
) -> SimilarResult:
    """:func:`find_similar` for pages: cached, and never raising.

    The cache entry keeps the neighbours' ids and an index stamp of the product and those
    neighbours; a hit is served only while the stamp is unchanged (one query), so re-indexing
    the product or any neighbour, or a new model version, shows at once. Results are reloaded
    from the database (two queries with the spec's queryset), so prices and titles are fresh.
    When the product is not indexed or the index is unavailable, the result keeps that status,
    carries other products of the same category as ``hits`` (when ``fallback``) and a warning
    is logged; such results are not cached.
    """
    from django.core.cache import cache

    spec = _spec(type(obj))
    options = {"limit": limit, "same_category": same_category, "in_stock": in_stock}
    key = _similar_cache_key(spec.label, obj.pk, options)
    cached = cache.get(key)
    if cached is not None:
        entries, stamp = cached
        if _index_stamp(spec.label, [obj.pk, *(pk for pk, _s, _m in entries)]) == stamp:
            objects = spec.get_queryset().in_bulk([pk for pk, _s, _m in entries])
            return SimilarResult(
                ResultStatus.OK,
                [SimilarHit(objects[pk], pk, score, scores) for pk, score, scores in entries
                 if pk in objects],
            )
    try:
        result = find_similar(obj, limit=limit, same_category=same_category, in_stock=in_stock)
    except SimilarityError as exc:  # misconfiguration or a store error find_similar did not map
        logger.warning("similar products of %s: %s", obj.pk, exc, exc_info=True)
        result = SimilarResult(ResultStatus.UNAVAILABLE, message=str(exc))
    if result.ok:
        entries = [(hit.pk, hit.score, hit.scores) for hit in result.hits]
        stamp = _index_stamp(spec.label, [obj.pk, *(hit.pk for hit in result.hits)])
        cache.set(key, (entries, stamp), cache_timeout)
        return result
    logger.warning(
        "no similar products for %s %s (%s: %s); showing %s", spec.label, obj.pk, result.status,
        result.message, "other products of its category" if fallback else "nothing",
    )
    hits = category_fallback(obj, limit=limit, in_stock=in_stock) if fallback else []
    return SimilarResult(result.status, hits, result.message)


def request_reindex(ids: Iterable[int], *, model: Any = None) -> int:
    """Queue ``ids`` for indexing the way a save does (outbox row now, dispatch after commit),
    for admin buttons and actions. Returns how many were queued."""
    spec = _spec(model)
    ids = sorted({int(pk) for pk in ids})
    if ids:
        record_changes(spec.label, ids)
        transaction.on_commit(lambda: dispatch_changes(spec.label, ids))
    return len(ids)


__all__ = [
    "IndexReport", "SimilarityError", "dispatch_changes", "ensure_index", "failed_ids", "find_similar",
    "index_health", "index_products", "process_pending", "rebuild_index", "record_changes",
    "remove_products", "search_image", "search_text",
    "category_fallback", "request_reindex", "similar_products",
]
