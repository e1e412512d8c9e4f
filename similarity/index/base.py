"""The ``VectorIndex`` protocol and the store-neutral types it speaks."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

VECTOR_NAMES = ("image", "text")
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

    def without_groups(self, group_field: str, groups: Iterable[Any]) -> SearchFilter:
        """This filter, also leaving out every point whose ``group_field`` is one of ``groups``."""
        exclude_any = dict(self.exclude_any)
        exclude_any[group_field] = [*exclude_any.get(group_field, []), *groups]
        return replace(self, exclude_any=exclude_any)


@dataclass(frozen=True)
class FusedQuery:
    """One request for fused similarity (``find_similar``'s whole vector side).

    ``vectors``/``weights``: the query vector and weight per named vector; ``fetch``: nearest
    points taken per named vector (the candidates); every candidate is then scored exactly in
    each named vector and fused by the engine as the weighted mean of the cosines it has (the
    rule of :func:`similarity.fusion.fuse_scores`). ``limit`` hits come back, best first; with
    ``group_by``, at most one per value of that payload field (the best), still ``limit`` of them
    when the candidates hold that many groups. ``payload_fields``: the payload keys to return
    (``None``: all).
    """

    vectors: dict[str, list[float]]
    weights: dict[str, float]
    fetch: int
    limit: int
    filter: SearchFilter | None = None
    group_by: str | None = None
    payload_fields: tuple[str, ...] | None = None
    #: a payload field listing the named vectors each point has (indexing writes
    #: ``model_versions``); tells "no such vector" from "that exact cosine" in :func:`hit_scores`
    presence_field: str | None = None


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


def vectors_to_fetch(request: FusedQuery) -> list[str]:
    """The named vectors a fused query returns with its hits, for their exact per-modality
    scores: every active one. (Returning only the smaller ones and solving the largest's cosine
    from the fused score measured faster, p50 11.7 → 9.6 ms at 20k points, but gave a wrong image
    score for a hit in one CI run of tests/test_fused_flipkart.py: a hit whose image cosine was
    missing from the engine's fused score. Exact scores come first.)"""
    return [name for name, _v, _w in active_vectors(request)]


def hit_scores(request: FusedQuery, fused: float, stored: dict[str, Any] | None,
               payload: dict[str, Any] | None = None) -> dict[str, float]:
    """Exact per-modality cosines of a hit: computed from the returned vectors
    (:func:`vectors_to_fetch`), and the remaining one solved from the fused score, which is the
    weighted mean of the cosines the point has. Whether the point has the remaining vector comes
    from ``request.presence_field`` in its payload; without one, a fused score equal to the mean
    of the computed cosines is read as "no such vector" (it may also be exactly that cosine)."""
    active = active_vectors(request)
    fetched = vectors_to_fetch(request)
    scores = exact_scores({n: v for n, v, _w in active if n in fetched}, stored)
    remaining = [(n, w) for n, _v, w in active if n not in fetched]
    if not remaining:
        return scores
    name, weight = remaining[0]
    known_weight = sum(w for n, _v, w in active if n in scores)
    known = sum(w * scores[n] for n, _v, w in active if n in scores)
    present = (payload or {}).get(request.presence_field or "") if request.presence_field else None
    if present is not None:
        if name not in present:
            return scores
    elif known_weight > 0 and abs(fused - known / known_weight) < 1e-6:
        return scores
    scores[name] = float(min(1.0, max(-1.0, (fused * (known_weight + weight) - known) / weight)))
    return scores


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
