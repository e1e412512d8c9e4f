"""The ``VectorIndex`` protocol and the store-neutral types it speaks."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

VECTOR_NAMES = ("image", "text")
#: A third named vector: a point's image and text vectors side by side, each normalised, a
#: missing one as zeros, searched by dot product. A query of the two query vectors scaled by
#: their fusion weights (which sum to one) then scores every point with ``w_image·cos_image +
#: w_text·cos_text``: the fused score in one nearest-neighbour search, with the weights chosen
#: per query. A point lacking a part is scored low by that dot product (its missing cosine
#: counts as zero), so such points are searched apart, one search per missing part, and the
#: engine's formula divides by the weights of the parts each point has: the rule of
#: :func:`similarity.fusion.fuse_scores` (``edge_fused``/``qdrant_fused``). It is written by the
#: index backends themselves (:func:`stored_point`) and never returned by ``retrieve``.
FUSED = "fused"
FUSED_PARTS = VECTOR_NAMES
#: payload flag of a point lacking a part of its fused vector: the position of the missing part
#: in :data:`FUSED_PARTS` plus one (1: no image, 2: no text). Indexed, so each search among such
#: points is planned from the payload index's exact count (none, in most catalogs), where a
#: vector-presence condition would send an HNSW search through the whole graph looking for them;
#: one search per missing part, because the dot product ranks points missing different parts on
#: different scales (a text-only point would lose to image-only ones under unequal weights).
PARTIAL = "fused_partial"
T = TypeVar("T")


@dataclass(frozen=True)
class PointData:
    """A point to write, or one read back (``vectors`` empty unless asked for)."""

    id: str
    vectors: dict[str, list[float]]
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchFilter:
    """Store-neutral filter: each backend translates it into its own filter object.

    ``match``: field must equal the value (for list fields: contain it).
    ``match_any``: field must equal one of the values.
    ``exclude``: field must not equal the value.
    ``exclude_any``: field must not equal any of the values.
    ``ranges``: field within ``(gte, lte)`` (either may be ``None``).
    ``exclude_ids``: point ids to leave out.
    ``ids``: when given, only these point ids.
    """

    match: dict[str, Any] = field(default_factory=dict)
    match_any: dict[str, list[Any]] = field(default_factory=dict)
    exclude: dict[str, Any] = field(default_factory=dict)
    exclude_any: dict[str, list[Any]] = field(default_factory=dict)
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    exclude_ids: frozenset[str] = frozenset()
    ids: frozenset[str] | None = None

    def __bool__(self) -> bool:
        return bool(
            self.match or self.match_any or self.exclude or self.exclude_any or self.ranges or self.exclude_ids
            or self.ids is not None
        )

    @property
    def selects(self) -> bool:
        """Whether a condition keeps only some points (``match``, ``match_any``, ``ranges``,
        ``ids``); exclusions leave most points in, so they do not count."""
        return bool(self.match or self.match_any or self.ranges or self.ids is not None)

    def without_groups(self, group_field: str, groups: Iterable[Any]) -> SearchFilter:
        """This filter, also leaving out every point whose ``group_field`` is one of ``groups``."""
        exclude_any = dict(self.exclude_any)
        exclude_any[group_field] = [*exclude_any.get(group_field, []), *groups]
        return replace(self, exclude_any=exclude_any)


@dataclass(frozen=True)
class FusedQuery:
    """One request for fused similarity (``find_similar``'s whole vector side).

    ``vectors``/``weights``: the query vector and weight per named vector; ``fetch``: nearest
    points taken per search (the candidates: of the :data:`FUSED` vector, or of each named vector
    on a collection without it), scored by the engine as the weighted mean of the cosines each
    point has (the rule of :func:`similarity.fusion.fuse_scores`); the hits' per-modality
    cosines are exact. ``limit`` hits come back, best first; with
    ``group_by``, at most one per value of that payload field (the best), still ``limit`` of them
    when the candidates hold that many groups. ``payload_fields``: the payload keys to return
    (``None``: all). ``near``: see below.
    """

    vectors: dict[str, list[float]]
    weights: dict[str, float]
    fetch: int
    limit: int
    filter: SearchFilter | None = None
    group_by: str | None = None
    payload_fields: tuple[str, ...] | None = None
    #: the filter holds a condition relative to the query object at its own level
    #: (``find_similar(obj, same_category=True)``: :func:`similarity.query.relative_filter`): its
    #: passing points are the query's own region, so the graph walked from the query finds them
    #: with the list :meth:`similarity.conf.IndexSettings.near_ef` gives for the index's size (``HNSW_EF`` up to
    #: ``NEAR_EF_POINTS``); the search is not given ``exact=True`` nor ``HNSW_EF_FILTERED``
    #: (measured with the own category and in stock: docs/benchmarks.md)
    near: bool = False


@dataclass(frozen=True)
class FusedHit:
    """A fused hit: the engine's fused score and the exact cosine in each named vector."""

    id: str
    score: float
    scores: dict[str, float]
    payload: dict[str, Any]


def pick_one_per_group(rows: Iterable[T], group_of: Callable[[T], Hashable | None], limit: int) -> list[T]:
    """The first ``limit`` rows, keeping the best of each group (rows come best first)."""
    picked: list[T] = []
    seen: set[Hashable] = set()
    for row in rows:
        group = group_of(row)
        if group is not None:
            if group in seen:
                continue
            seen.add(group)
        picked.append(row)
        if len(picked) >= limit:
            break
    return picked


def exact_scores(query: dict[str, list[float]], stored: dict[str, Any] | None) -> dict[str, float]:
    """Cosine of each query vector with the hit's stored vector of the same name (cosine
    collections store vectors normalised, so a dot product with the normalised query)."""
    scores: dict[str, float] = {}
    for name, vector in query.items():
        other = (stored or {}).get(name)
        if other is None:
            continue
        q = np.asarray(vector, dtype=np.float32)
        v = np.asarray(other, dtype=np.float32)
        denominator = float(np.linalg.norm(q) * np.linalg.norm(v))
        if denominator > 0:
            scores[name] = float(q @ v) / denominator
    return scores


def hit_scores(request: FusedQuery, stored: dict[str, Any] | None) -> dict[str, float]:
    """Exact per-modality cosines of a hit, from its stored vectors (only the hits returned are
    read back with their vectors: ``limit`` of them, not every candidate)."""
    return exact_scores({name: vector for name, vector, _w in active_vectors(request)}, stored)


def with_fused(dims: dict[str, int]) -> dict[str, int]:
    """The named vectors of a new collection: ``dims`` and, when it has every part, :data:`FUSED`."""
    if all(name in dims for name in FUSED_PARTS):
        return {**dims, FUSED: sum(dims[name] for name in FUSED_PARTS)}
    return dict(dims)


def engine_kb(float32_kb: int, datatype: str | None) -> int:
    """A full-scan threshold given in KB of float32 (``INDEX`` settings) as the engine must be
    given it for a vector stored as ``datatype``: the engine turns KB into points by the stored
    bytes, so a float16 vector needs half the KB for the same points (and the planner scans the
    same filters and segments as in float32)."""
    return max(1, float32_kb // 2) if datatype_name(datatype) == "float16" else float32_kb


def float32_kb(engine_kb_: int, datatype: Any) -> int:
    """The inverse of :func:`engine_kb` (up to its rounding: under a point): a threshold the
    engine holds for a vector stored as ``datatype`` (a name or the client's enum; none:
    float32), in KB of float32."""
    return engine_kb_ * 2 if datatype_name(datatype) == "float16" else engine_kb_


def datatype_name(datatype: Any) -> str:
    """A stored vector's type as a lower-case name ("float16"), from a name or the client's enum;
    none: "float32", the engines' default."""
    return str(getattr(datatype, "value", datatype) or "float32").lower()


def built_full_scan_kb(thresholds: dict[str, int], vectors: list[str]) -> int | None:
    """The full-scan threshold (KB) that covers a search of every one of ``vectors``, from the
    thresholds a generation's named vectors were built with; ``None`` when one is unknown."""
    known = [thresholds.get(name) for name in vectors]
    return min(k for k in known if k is not None) if vectors and None not in known else None


def _unit(vector: Any, scale: float = 1.0) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    return v * np.float32(scale / norm) if norm > 0 else np.zeros_like(v)


def fused_vector(vectors: dict[str, Any], sizes: dict[str, int]) -> list[float]:
    """A point's :data:`FUSED` vector: its parts normalised, side by side, a missing one zeros."""
    return np.concatenate([
        _unit(vectors[name]) if vectors.get(name) is not None else np.zeros(sizes[name], dtype=np.float32)
        for name in FUSED_PARTS
    ]).tolist()


def stored_point(vectors: dict[str, Any], payload: dict[str, Any], sizes: dict[str, int]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A point's vectors and payload as written to a collection whose named vectors are
    ``sizes``: with its :data:`FUSED` vector and :data:`PARTIAL` flag when the collection has one."""
    vectors = {name: vector for name, vector in vectors.items() if name != FUSED}
    payload = public_payload(payload)
    if FUSED in sizes:
        vectors[FUSED] = fused_vector(vectors, sizes)
        missing = [n for n, name in enumerate(FUSED_PARTS, start=1) if vectors.get(name) is None]
        if missing:
            payload[PARTIAL] = missing[0]
    return vectors, payload


def public_payload(payload: dict[str, Any] | None) -> dict[str, Any]:
    """A stored payload without the index's own fields."""
    return {key: value for key, value in (payload or {}).items() if key != PARTIAL}


def fused_query_vector(request: FusedQuery) -> list[float] | None:
    """The :data:`FUSED` query of ``request``: each part's query vector normalised and scaled by
    its share of the weights; ``None`` unless the request fuses exactly the parts (a one-modality
    request searches that modality's own vector)."""
    active = {name: (vector, weight) for name, vector, weight in active_vectors(request)}
    if set(active) != set(FUSED_PARTS):
        return None
    total = sum(weight for _v, weight in active.values())
    return np.concatenate([_unit(active[name][0], active[name][1] / total) for name in FUSED_PARTS]).tolist()


def part_shares(request: FusedQuery) -> dict[str, float]:
    """Each part's share of the weights (the scale :func:`fused_query_vector` gives it)."""
    weights = {name: weight for name, _v, weight in active_vectors(request)}
    total = sum(weights.values())
    return {name: weights[name] / total for name in FUSED_PARTS}


def with_margin(limit: int) -> int:
    """The rows a fused search asks the engine for, to keep ``limit`` of them after
    :func:`rescored`, on the fused vector: the engine ranks by that vector as stored, whose
    rounding (float16 with ``FUSED_DATATYPE = "float16"``: about 1e-4 of a score) can rank the
    next point above the last one of the exact ranking; rescored with the exact float32 cosines, the rows past
    ``limit`` fall off and the list is the exact ranking's (docs/benchmarks.md, "The fused
    vector in float16"). With one per group, the group's best is still chosen by the engine's
    score: of two variants a rounding apart, either may stand for the group."""
    return limit + max(2, limit // 5)


def rescored(request: FusedQuery, hits: list[FusedHit]) -> list[FusedHit]:
    """``hits`` with their fused score recomputed from their exact per-modality cosines (the
    weighted mean of those the point has: the engine's formula, without its float32 rounding or
    a cosine the engine's stage left out), best first."""
    weights = {name: w for name, _v, w in active_vectors(request)}
    out = []
    for hit in hits:
        total = sum(weights[m] for m in hit.scores if m in weights)
        if total > 0:
            hit = replace(hit, score=sum(weights[m] * s for m, s in hit.scores.items() if m in weights) / total)
        out.append(hit)
    return sorted(out, key=lambda h: h.score, reverse=True)


def active_vectors(request: FusedQuery) -> list[tuple[str, list[float], float]]:
    """(name, vector, weight) of the named vectors that take part (weight above zero)."""
    return [(name, list(vector), float(request.weights.get(name, 0.0)))
            for name, vector in request.vectors.items() if float(request.weights.get(name, 0.0)) > 0]


@runtime_checkable
class VectorIndex(Protocol):
    """A collection of points with named vectors ``image`` and ``text`` (cosine) and a payload."""

    def ensure(self, dims: dict[str, int], payload_schema: dict[str, str]) -> None:
        """Create the collection and payload indexes if missing (idempotent)."""

    def upsert(self, points: list[PointData]) -> None: ...

    def delete(self, ids: list[str]) -> None: ...

    def set_payload(self, id: str, payload: dict[str, Any]) -> None: ...

    def retrieve(self, ids: list[str], *, with_vectors: bool = False) -> dict[str, PointData]: ...

    def query(
        self, using: str, vector: list[float], *, limit: int, filter: SearchFilter | None = None
    ) -> list[Hit]: ...

    def query_fused(self, request: FusedQuery) -> list[FusedHit]:
        """``find_similar``'s vector side in one request to the store (see :class:`FusedQuery`)."""

    def count(self) -> int: ...

    def optimize(self) -> bool:
        """Build the HNSW graphs of what is not indexed yet; True when anything changed. A rebuild
        optimises its new generation before the switch, so it goes live indexed."""

    def iter_points(self, *, batch_size: int = 256) -> Iterator[PointData]:
        """Every point, payload only, in pages (for reconciliation)."""

    def start_rebuild(self, dims: dict[str, int], payload_schema: dict[str, str]) -> VectorIndex:
        """A new, empty generation to fill; the live one keeps answering meanwhile."""

    @property
    def generation(self) -> str:
        """Name of the generation this object reads and writes."""

    def resume_rebuild(self, generation: str) -> VectorIndex: ...

    def abandon_rebuild(self, generation: str) -> None: ...

    def finish_rebuild(self, new: VectorIndex) -> bool | None:
        """Make ``new`` the live generation in one atomic step and drop the old one."""

    def close(self) -> None: ...
