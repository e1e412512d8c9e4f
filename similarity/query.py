"""Reading similar objects: :func:`find_similar`, its filters and the candidate ranking.

The rules that decide what is shown (leave out the object and its variants; one per group) are
the functions :func:`exclusion_filter` / :func:`exclusion_mask` and :func:`pick_one_per_group`, used
by :func:`find_similar` and by the offline evaluation alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

import numpy as np

from . import breaker, registry
from .conf import get_settings
from .exceptions import IndexUnavailable
from .fusion import fuse_scores
from .index.base import VECTOR_NAMES, SearchFilter, VectorIndex
from .results import ResultStatus, SimilarHit, SimilarResult
from .specs import IndexSpec, UnknownFilter

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: (fused score, per-modality scores, payload), best first
Ranked = list[tuple[float, dict[str, float], dict[str, Any]]]


# ---------------------------------------------------------------------------------------------
# Filters: the spec's vocabulary turned into a store-neutral SearchFilter
# ---------------------------------------------------------------------------------------------
def spec_filter(spec: IndexSpec, options: dict[str, Any], payload: dict[str, Any] | None = None) -> SearchFilter:
    """``options`` (filter name → value, as callers pass them) as a :class:`SearchFilter`;
    ``payload`` is the query object's, for filters relative to it ("the same category")."""
    unknown = set(options) - set(spec.filters)
    if unknown:
        known = ", ".join(sorted(spec.filters)) or "none"
        raise UnknownFilter(f"{spec.label} has no filter {', '.join(sorted(unknown))} (its filters: {known})")
    match: dict[str, Any] = {}
    match_any: dict[str, list[Any]] = {}
    for name, value in options.items():
        declared = spec.filters[name]
        condition = declared.condition(name, value, payload)
        if condition is None:
            continue
        kind, wanted = condition
        (match if kind == "match" else match_any)[declared.field] = wanted
    return SearchFilter(match=match, match_any=match_any)


def exclusion_filter(
    base: SearchFilter, payload: dict[str, Any], point_id: str, *, exclude_variants: bool,
) -> SearchFilter:
    """``base`` plus what is never shown next to an object: itself, and (with
    ``exclude_variants``) the other members of its group."""
    exclude = dict(base.exclude)
    if exclude_variants and payload.get("group") is not None:
        exclude["group"] = payload["group"]
    return SearchFilter(
        match=base.match, match_any=base.match_any, exclude=exclude, ranges=base.ranges,
        exclude_ids=base.exclude_ids | {point_id}, ids=base.ids,
    )


def exclusion_mask(groups: np.ndarray, queries: np.ndarray, *, exclude_variants: bool = True) -> np.ndarray:
    """The rule of :func:`exclusion_filter` over a whole catalog: ``(len(queries), n)`` booleans,
    True where a candidate is never shown for that query (itself; its group's members)."""
    if exclude_variants:
        mask = groups[queries][:, None] == groups[None, :]
    else:
        mask = np.zeros((len(queries), len(groups)), dtype=bool)
    mask[np.arange(len(queries)), queries] = True
    return mask


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


# ---------------------------------------------------------------------------------------------
# find_similar
# ---------------------------------------------------------------------------------------------
def find_similar(
    obj: Any,
    *,
    limit: int = 10,
    exclude_variants: bool = True,
    one_per_group: bool = True,
    weights: dict[str, float] | None = None,
    modalities: Iterable[str] = VECTOR_NAMES,
    **filters: Any,
) -> SimilarResult:
    """Objects most like ``obj``: fused image+text cosine, with per-modality scores.

    ``filters`` are the spec's named filters (the example shop: ``same_category=True|N``,
    ``in_stock=True``, ``brand="..."``); an undeclared name raises :class:`UnknownFilter`.
    Never raises for an unindexed object or a store that is down: the result's ``status``
    says so.
    """
    spec = registry.get_spec(type(obj))
    conf = get_settings()
    weights = dict(weights or conf.weights)
    down = breaker.is_open(spec.label)
    if down is not None:
        return SimilarResult(ResultStatus.UNAVAILABLE, message=down)
    index = registry.vector_index(spec)
    point_id = spec.point_id(obj.pk)
    try:
        stored = index.retrieve([point_id], with_vectors=True).get(point_id)
        if stored is None:
            return SimilarResult(ResultStatus.NOT_INDEXED, message=f"{obj} is not indexed yet")
        query_vectors = {m: v for m, v in stored.vectors.items() if m in modalities and weights.get(m, 0) > 0}
        if not query_vectors:
            return SimilarResult(ResultStatus.NOT_INDEXED, message=f"{obj} has no vectors to compare")
        search_filter = exclusion_filter(
            spec_filter(spec, filters, stored.payload), stored.payload, point_id,
            exclude_variants=exclude_variants,
        )
        scored = rank_candidates(
            index, query_vectors, search_filter, fetch=max(conf.candidates, limit * 4), weights=weights
        )
    except IndexUnavailable as exc:
        logger.warning("find_similar(%s): index unavailable: %s", obj.pk, exc)
        breaker.trip(spec.label, str(exc))
        return SimilarResult(ResultStatus.UNAVAILABLE, message=str(exc))

    hits = pick_one_per_group(scored, lambda row: row[2].get("group"), limit) if one_per_group else scored[:limit]
    ranked = [(s, m, p["pk"]) for s, m, p in hits]
    return SimilarResult(ResultStatus.OK, load_hits(spec, ranked, filters))


def load_hits(
    spec: IndexSpec, ranked: list[tuple[float, dict[str, float], Any]], filters: dict[str, Any] | None = None,
) -> list[SimilarHit]:
    """(score, scores, stored key) rows as hits with their objects, in order, in one query;
    keys whose object is gone, or no longer passes the filters in the database, are dropped."""
    pks = [spec.to_pk(key) for _s, _m, key in ranked]
    objects = spec.filter_queryset(spec.get_queryset(), filters or {}).in_bulk(pks)
    return [
        SimilarHit(objects[pk], pk, score, scores)
        for (score, scores, _key), pk in zip(ranked, pks, strict=True)
        if pk in objects
    ]


def rank_candidates(
    index: VectorIndex, query_vectors: dict[str, list[float]], search_filter: SearchFilter, *,
    fetch: int, weights: dict[str, float],
) -> Ranked:
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
) -> Ranked:
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
